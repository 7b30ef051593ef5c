"""The loop thread's selector: wake-ups of blocked callers run just before the loop blocks.

Only for the default loop; a ``loop_factory`` loop (uvloop) wakes callers at once.
"""

from __future__ import annotations

import selectors
from collections.abc import Callable

__all__ = ("WakingSelector", "waking_selector")


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
