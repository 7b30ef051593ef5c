"""uWSGI: threads required, each worker lets go of the master's loop, bridges stopped at exit.

:func:`setup` works inside a uWSGI process only (it needs the ``uwsgi``
module that uWSGI provides). Call it where the app is made:

- refuses to go on if uWSGI runs Python without threads (uWSGI before 2.0.27
  unless ``--enable-threads``): the loop thread would be frozen between
  requests. The bridge itself refuses to start there too; this says so at
  import, before the first request;
- after each fork (``postfork``), lets go of what the worker inherited from
  the master at once, rather than on the worker's first call (uWSGI forks
  without Python's own fork hooks unless ``--py-call-uwsgi-fork-hooks``);
- at worker exit (``uwsgi.atexit``, which also runs with
  ``--skip-atexit-teardown``), stops every bridge of the worker gracefully.

Example:
    >>> import aiobridge.uwsgi  # doctest: +SKIP
    >>> aiobridge.uwsgi.setup()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from ._core.process import forget_parent_loop_threads
from ._core.server_checks import check_threads
from .exit import STOP_TIMEOUT, stop_all

__all__ = ("setup",)

_installed = False


def setup(*, stop_timeout: float = STOP_TIMEOUT) -> None:
    """Install the hooks (idempotent).

    Args:
        stop_timeout: seconds in-flight calls get to finish when a worker exits.

    Raises:
        aiobridge.BridgeError: uWSGI runs Python without threads; start it
            with ``--enable-threads``.
        RuntimeError: not running inside uWSGI.

    Example:
        >>> aiobridge.uwsgi.setup(stop_timeout=10)  # doctest: +SKIP
    """
    global _installed
    uwsgi = _uwsgi_module()
    check_threads("aiobridge")
    if _installed:
        return
    _installed = True
    from uwsgidecorators import postfork  # type: ignore[import-untyped,import-not-found,unused-ignore]

    postfork(forget_parent_loop_threads)
    previous: Callable[[], object] | None = getattr(uwsgi, "atexit", None)

    def at_exit() -> None:
        try:
            stop_all(stop_timeout)
        finally:
            if previous is not None:
                previous()

    setattr(uwsgi, "atexit", at_exit)  # noqa: B010 - a hook uWSGI reads from its module


def _uwsgi_module() -> ModuleType:
    try:
        import uwsgi  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise RuntimeError(
            "aiobridge.uwsgi.setup() works inside a uWSGI process only (the uwsgi module "
            "is provided by the server)"
        ) from exc
    module: ModuleType = uwsgi
    return module
