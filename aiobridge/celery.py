"""Celery prefork workers: a bridge per child process, stopped cleanly as the child exits.

Celery's prefork pool forks its child processes from the worker and ends each
of them with ``os._exit()``, so ``atexit`` hooks never run in a child: its
bridges would never close their pools. :func:`setup` connects two Celery
signals: ``worker_process_init`` (in each new child; optionally starts a
bridge there, before the first task) and ``worker_process_shutdown`` (in each
child as it exits; stops every bridge of the child, gracefully).

Tasks then use the bridge as any sync code does. Importing this module needs
Celery installed.

Example:
    >>> from celery import Celery
    >>> import aiobridge, aiobridge.celery
    >>> celery_app = Celery("tasks", broker="redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> aiobridge.celery.setup()
    >>> @celery_app.task  # doctest: +SKIP
    ... def fetch(url: str) -> int:
    ...     return aiobridge.run(get_status(url), timeout=10)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.signals import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
    worker_process_init,
    worker_process_shutdown,
)

from .exit import STOP_TIMEOUT, stop_all

__all__ = ("setup",)

_UID = "aiobridge.celery"


def setup(
    *, start: Callable[[], object] | None = None, stop_timeout: float = STOP_TIMEOUT
) -> None:
    """Stop the bridges of each prefork child as it exits (and start one as it begins).

    Idempotent: a second call replaces the first one's settings.

    Args:
        start: called in each new child process, e.g. ``aiobridge.default_bridge``
            to have the loop running before the first task. By default the
            bridge starts on the child's first call.
        stop_timeout: seconds in-flight calls get to finish at the child's exit.

    Example:
        >>> import aiobridge, aiobridge.celery
        >>> aiobridge.celery.setup(start=aiobridge.default_bridge)
    """

    def on_init(**_: Any) -> None:
        if start is not None:
            start()

    def on_shutdown(**_: Any) -> None:
        stop_all(stop_timeout)

    _replace(worker_process_init, on_init)
    _replace(worker_process_shutdown, on_shutdown)


def _replace(signal: Any, receiver: Callable[..., None]) -> None:
    # Connecting again under the same dispatch_uid would keep the first receiver.
    signal.disconnect(dispatch_uid=_UID)
    signal.connect(receiver, weak=False, dispatch_uid=_UID)
