"""Stop the bridges of a process that will not run its ``atexit`` hooks.

aiobridge stops every bridge of the process in an ``atexit`` hook: in-flight
calls finish, then the HTTP and Redis pools close on the loop. A process that
dies by a signal never gets there, and several servers end that way:

- waitress installs no SIGTERM handler: SIGTERM kills the process at once;
- uvicorn, after its graceful shutdown, re-raises SIGTERM with the default
  handler, so the process dies by the signal (use :mod:`aiobridge.asgi`, which
  stops the bridges at the ASGI lifespan shutdown, before that);
- Celery's prefork children end with ``os._exit()`` (use :mod:`aiobridge.celery`).

For a server with no hook of its own, :func:`stop_on_signals` stops the
bridges when the signal arrives and then lets it do what it did before.

Example:
    >>> import signal
    >>> from aiobridge.exit import stop_on_signals
    >>> stop_on_signals(signal.SIGTERM)  # doctest: +SKIP
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from ._core.process import stop_all as _stop_all

__all__ = ("stop_all", "stop_on_signals")

#: Seconds in-flight calls get to finish when the bridges are stopped here.
STOP_TIMEOUT = 5.0


def stop_all(timeout: float = STOP_TIMEOUT) -> int:
    """Stop every bridge running in this process, gracefully; return how many ran.

    Each bridge refuses new work, gives in-flight calls up to ``timeout``
    seconds, cancels the rest and closes its resources (pools) on its loop.
    Bridges inherited from a parent process are left to the parent.

    Example:
        >>> from aiobridge.exit import stop_all
        >>> stop_all()  # doctest: +SKIP
        1
    """
    return _stop_all(timeout)


def stop_on_signals(
    *signals: signal.Signals,
    stop: Callable[[], object] = stop_all,
) -> None:
    """On each of ``signals``, run ``stop()`` then carry on as before.

    What carrying on means depends on the handler that was installed: a
    Python handler is called next; the default action is restored and the
    signal raised again (the process still dies by SIGTERM, with the exit
    status that says so); an ignored signal stays ignored. Call it from the
    main thread, after the server has installed its own handlers (if any).

    Args:
        *signals: the signals to handle (default: ``SIGTERM``).
        stop: what to run first (default: :func:`stop_all`).

    Raises:
        ValueError: not called from the main thread.

    Example:
        >>> import functools, signal
        >>> from aiobridge.exit import stop_on_signals
        >>> from aiobridge.flask import shutdown
        >>> stop_on_signals(signal.SIGTERM, stop=functools.partial(shutdown, app))  # doctest: +SKIP
    """
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("stop_on_signals() installs signal handlers: call it in the main thread")
    for signum in signals or (signal.SIGTERM,):
        previous = signal.getsignal(signum)
        signal.signal(signum, _handler(signum, previous, stop))


def _handler(
    signum: int,
    previous: Callable[[int, FrameType | None], object] | int | None,
    stop: Callable[[], object],
) -> Callable[[int, FrameType | None], None]:
    def stop_then_carry_on(received: int, frame: FrameType | None) -> None:
        try:
            stop()
        finally:
            if callable(previous):
                previous(received, frame)
            elif previous != signal.SIG_IGN:  # the default action (or unknown: the same)
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

    return stop_then_carry_on
