"""A forked child leaves everything of its parent's event loop alone, for good.

After ``fork()`` the child holds copies of the parent's loop and of what is
bound to it: transports, an ``aiohttp`` session, a Redis pool. Their sockets
and the loop's epoll instance are *shared* with the parent. Closing a
transport in the child unregisters its socket from that shared epoll instance,
so the parent's loop never hears from the socket again (its next call hangs);
a TLS transport would even write its close_notify into the parent's stream.
Those objects must never be finalised in the child, whichever way it exits
(``sys.exit()``, the end of the program, an uncaught exception).

- :func:`keep` parks such objects for the life of the process, interpreter
  shutdown included, so none of their ``__del__`` runs (no "Unclosed client
  session", no transport closed behind the parent's back).
- :func:`detach_loop` swaps the inherited loop's selector for a stand-in that
  keeps the bookkeeping but never touches the shared epoll instance, for
  objects the application itself holds and that do get finalised.
- :func:`process_lock` is a lock of this process only: a lock inherited
  through ``fork()`` may be held by a thread that does not exist in the child.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import selectors
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ("detach_loop", "keep", "process_lock")

# Objects inherited from the parent's loop, never released (see keep()).
_KEPT: list[object] = []
_kept_immortal = False

_LOCKS: dict[tuple[str, int], threading.Lock] = {}


def keep(obj: object) -> None:
    """Keep ``obj``, inherited from the parent process, alive and untouched until exit.

    At interpreter shutdown module globals are cleared and whatever they held
    is finalised. The list of kept objects holds one extra reference that is
    never given back, so it (and everything it holds) outlives the shutdown.
    """
    global _kept_immortal
    if not _kept_immortal:
        # Once per process tree: the extra reference is inherited by later forks.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(_KEPT))
        _kept_immortal = True
    _KEPT.append(obj)  # list.append is atomic: no lock to inherit in a locked state


def process_lock(name: str) -> threading.Lock:
    """The lock called ``name`` of the current process, made on first use.

    Threads racing for it in a fresh child all get the same new lock
    (``dict.setdefault`` is atomic), never one a parent thread held at fork.
    """
    key = (name, os.getpid())
    lock = _LOCKS.get(key)
    if lock is None:
        lock = _LOCKS.setdefault(key, threading.Lock())
    return lock


def detach_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cut an inherited loop off the epoll instance it shares with the parent.

    For asyncio's selector loops, whose selector is swapped for
    :class:`_DetachedSelector`; other loops (uvloop) are only kept alive.
    """
    selector = getattr(loop, "_selector", None)
    if isinstance(selector, selectors.BaseSelector) and not isinstance(
        selector, _DetachedSelector
    ):
        keep(selector)
        loop._selector = _DetachedSelector(selector.get_map())  # type: ignore[attr-defined]
    # Complaints of the parent's objects are the parent's business, not the child's.
    loop.set_exception_handler(_ignore)
    # Debug mode would check, in every call_soon() a closing transport makes, that
    # it runs on the loop's (the parent's) thread, and raise in that finaliser.
    # The attribute, not set_debug(): that one would wake the parent's loop.
    if isinstance(getattr(loop, "_debug", None), bool):
        loop._debug = False  # type: ignore[attr-defined]


def _ignore(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An exception handler that drops what it is given."""


class _DetachedSelector(selectors.BaseSelector):
    """A selector that only keeps its registrations in a dict: no system call at all."""

    def __init__(self, keys: Mapping[Any, selectors.SelectorKey]) -> None:
        self._keys: dict[int, selectors.SelectorKey] = {key.fd: key for key in keys.values()}

    def _fd(self, fileobj: Any) -> int:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if fd < 0:  # closed: find it by identity, as the stdlib selectors do
            for key in self._keys.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise KeyError(f"{fileobj!r} is not registered")
        return int(fd)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, self._fd(fileobj), events, data)
        self._keys[key.fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(self._fd(fileobj))

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        self.unregister(fileobj)
        return self.register(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[self._fd(fileobj)]

    def select(
        self, timeout: float | None = None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        return []

    def close(self) -> None:
        self._keys.clear()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return dict(self._keys)
