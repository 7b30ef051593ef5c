"""How the loop and its callers wake each other.

Two halves, one for each direction:

* **caller → loop, the doorbell.** Callers ring it when they put a call in
  the loop thread's inbox.
* **loop → caller, the waking selector.** Wake-ups of blocked callers run just
  before the loop blocks (:class:`WakingSelector`).

The doorbell.

``loop.call_soon_threadsafe`` wakes a loop through its self-pipe: a new
handle per wake-up, a byte sent on a socket, and on the loop side two
``recv`` calls (the second ends in ``BlockingIOError``) before the callback
runs. On Linux an ``eventfd`` watched with ``add_reader`` does the same job
with one ``write`` from the caller and one ``read`` on the loop, and no
object made per wake-up; on a single caller that is a fifth of the cost of
a call (``benchmarks/bm_call_overhead.py``, caller and loop on one CPU).

Where there is no ``os.eventfd`` (not Linux) or the loop cannot watch a
descriptor (a loop factory without ``add_reader``), :func:`install` returns
None and the loop thread keeps ``call_soon_threadsafe``.

The descriptor is closed only when the doorbell itself is garbage: a caller
that read the doorbell just before the loop stopped may still ring it, and
must never write into a descriptor number the process has since reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import weakref
from collections.abc import Callable

__all__ = ("Doorbell", "WakingSelector", "install", "waking_selector")


class Doorbell:
    """An ``eventfd`` the loop watches; :meth:`ring` from any thread runs ``on_ring`` there."""

    __slots__ = ("__weakref__", "_fd", "_loop")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._loop: asyncio.AbstractEventLoop | None = None
        # Not at interpreter exit: the loop thread may still run then.
        weakref.finalize(self, _close, fd).atexit = False

    def ring(self) -> None:
        """Wake the loop (any thread); never blocks.

        Raises ``OSError`` if the descriptor was closed behind the doorbell's
        back (uWSGI closes every descriptor before it reloads).
        """
        os.eventfd_write(self._fd, 1)  # a counter: rings before the next read add up

    def attach(self, loop: asyncio.AbstractEventLoop, on_ring: Callable[[], None]) -> None:
        """Run ``on_ring`` on ``loop`` after each ring (several rings may make one call)."""
        fd = self._fd
        read = os.eventfd_read

        def readable() -> None:
            with contextlib.suppress(BlockingIOError):  # already read by an earlier wake-up
                read(fd)
            on_ring()

        loop.add_reader(fd, readable)
        self._loop = loop

    def detach(self) -> None:
        """Stop watching (on the loop thread, before the loop closes); rings are then ignored."""
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(OSError, ValueError):  # descriptor closed under the loop
                loop.remove_reader(self._fd)


def install(loop: asyncio.AbstractEventLoop, on_ring: Callable[[], None]) -> Doorbell | None:
    """A doorbell watched by ``loop`` (on its thread), or None where there can be none."""
    make = getattr(os, "eventfd", None)
    if make is None:
        return None
    fd = make(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    doorbell = Doorbell(fd)
    try:
        doorbell.attach(loop, on_ring)
    except NotImplementedError:  # e.g. a proactor loop from a custom loop_factory
        return None
    return doorbell


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


# -- loop → caller -----------------------------------------------------------------


class WakingSelector(selectors.BaseSelector):
    """A selector, plus wake-ups that run just before the loop blocks.

    A caller woken while the loop thread still holds the GIL would wake only to
    wait for the GIL again. Waking callers right before ``select()`` (where the
    loop releases the GIL) costs each caller one thread switch instead of two,
    and wakes a burst of callers together. Mixed into the selector class the
    threads provider chooses (see :func:`waking_selector`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Callable[[], None]] = []
        #: Runs before callers are woken and before the loop waits for I/O.
        self.before_wait: Callable[[], None] | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        before_wait = self.before_wait
        if before_wait is not None and (self.pending or timeout is None or timeout > 0):
            before_wait()
        if self.pending:
            self.flush()
        return super().select(timeout)

    def flush(self) -> None:
        # Cleared in place: the loop thread holds the bound ``pending.append``.
        batch = self.pending.copy()
        self.pending.clear()
        for notify in batch:
            notify()


_CLASSES: dict[type[selectors.BaseSelector], type[WakingSelector]] = {}


def waking_selector(base: type[selectors.BaseSelector]) -> WakingSelector:
    """A new selector of class ``base`` with the wake-ups of :class:`WakingSelector`."""
    cls = _CLASSES.get(base)
    if cls is None:
        cls = _CLASSES[base] = type(f"Waking{base.__name__}", (WakingSelector, base), {})
    return cls()
