"""Ctrl-C and SIGTERM for the demo's launchers, at any moment, without leaking a child.

Two tools, standard library only (the launcher installs its handler before it
imports anything heavy):

- :func:`stop_on_signals` makes SIGINT, SIGTERM and SIGHUP raise
  :class:`Interrupted` once; later signals are ignored, so the clean-up that
  follows cannot itself be interrupted.
- :func:`signals_deferred` holds those signals back for a few statements (a
  ``Popen`` and the assignment that records the child), then delivers them:
  an interruption lands before the child exists or after its owner knows it,
  never in between.

Example::

    stop_on_signals()
    try:
        with signals_deferred():
            child = subprocess.Popen(command)
            started.append(child)
        child.wait()
    except Interrupted:
        print("stopping...")
    finally:
        stop(started)
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ("SIGNALS", "Interrupted", "signals_deferred", "stop_on_signals")

#: The signals that stop the demo: Ctrl-C, ``kill``, the terminal closing.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """Raised by :func:`stop_on_signals`'s handler.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except
    Exception`` on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_once(signum: int, frame: FrameType | None) -> None:
    for sig in SIGNALS:  # the first signal stops; the clean-up must not be interrupted
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (once) in the main thread."""
    for sig in SIGNALS:
        signal.signal(sig, _raise_once)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back inside the block; deliver them after it.

    Outside the main thread (where signal handlers cannot be set) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous: dict[int, signal.Handlers | object] = {}

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    try:
        for sig in SIGNALS:
            handler = signal.signal(sig, record)
            previous[sig] = handler
        yield
    finally:
        for sig, handler in previous.items():
            # None: a handler installed from C, which Python cannot put back.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # type: ignore[arg-type]
        for sig in dict.fromkeys(received):
            signal.raise_signal(sig)
