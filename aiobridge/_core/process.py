"""Every loop thread of the process: the registry, the one exit path, the fork hook.

- :func:`stop_all` stops every loop thread running in this process.
- At interpreter exit one ``atexit`` hook runs the callbacks registered with
  :func:`before_exit` (the Flask extension stops each app's bridge with its
  own ``AIOBRIDGE_STOP_TIMEOUT``), then stops whatever still runs. ``atexit``
  runs after non-daemon threads are joined but before daemon threads are
  frozen: the last moment at which a loop can still close cleanly.
- After ``os.fork()`` every loop thread inherited by the child forgets the
  parent's thread (see :meth:`.LoopThread.after_fork_in_child`).
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from .state import State

if TYPE_CHECKING:
    from .loop_thread import LoopThread

__all__ = ("EXIT_TIMEOUT", "before_exit", "forget_parent_loop_threads", "register", "stop_all")

logger = logging.getLogger("aiobridge")

#: Seconds in-flight calls get at interpreter exit, for bridges nobody stopped.
EXIT_TIMEOUT = 2.0

_ALL: weakref.WeakSet[LoopThread] = weakref.WeakSet()
# An ordered set (dict.setdefault is atomic: no lock to inherit through fork()).
_BEFORE_EXIT: dict[Callable[[], object], None] = {}


def register(loop_thread: LoopThread) -> None:
    """Track ``loop_thread`` for :func:`stop_all`, the exit hook and the fork hook."""
    _ALL.add(loop_thread)


def before_exit(callback: Callable[[], object]) -> None:
    """Run ``callback`` at interpreter exit, before the remaining loop threads are stopped.

    Callbacks run in the order registered; one that raises is logged and the
    others still run.
    """
    _BEFORE_EXIT.setdefault(callback)


def stop_all(timeout: float) -> int:
    """Stop every loop thread running in this process; return how many were running.

    Inherited ones (a fork without Python's fork hooks, as uWSGI makes them)
    are only let go of: they belong to the parent.
    """
    stopped = 0
    for loop_thread in list(_ALL):
        if loop_thread.pid != os.getpid():
            loop_thread.after_fork_in_child()
        elif loop_thread.state is State.RUNNING:
            loop_thread.stop(timeout)
            stopped += 1
    return stopped


def _at_exit() -> None:
    for callback in list(_BEFORE_EXIT):
        try:
            callback()
        except Exception:
            logger.exception("aiobridge: %r failed at exit", callback)
    stop_all(EXIT_TIMEOUT)


def forget_parent_loop_threads() -> None:
    """In a forked child: every loop thread forgets the parent's (the fork hook)."""
    for loop_thread in list(_ALL):
        loop_thread.after_fork_in_child()


os.register_at_fork(after_in_child=forget_parent_loop_threads)
atexit.register(_at_exit)
