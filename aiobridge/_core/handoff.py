"""The caller side of the bridge: how any thread hands work to the loop thread.

A caller appends its call to the inbox (a deque: ``append`` and ``popleft``
are atomic) and rings the loop's doorbell (an eventfd, see :mod:`.wakeup`;
else ``call_soon_threadsafe``) only if no wake-up is already pending, so a
burst of calls from many threads costs the loop one wake-up. The loop side
(:class:`~.dispatch.Dispatcher`) drains the inbox.

Everything else a thread asks of the loop (a callback, a cancel, the news
that a caller was interrupted) goes through :meth:`Inbox.send`, which first
takes in the calls handed off before it, so it never overtakes them.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BridgeClosedError
from .awaitables import close_awaitables
from .calls import Call
from .state import State

if TYPE_CHECKING:
    from .loop_thread import LoopThread
    from .wakeup import Doorbell

__all__ = ("Inbox",)


class Inbox:
    """The calls handed to one loop thread, and the messages sent to it; any thread.

    Args:
        owner: the loop thread (its ``state``, ``loop`` and ``dispatcher`` are read).
    """

    def __init__(self, owner: LoopThread) -> None:
        # A proxy: the loop thread holds its inbox, and no cycle may keep either alive
        # (the doorbell's descriptor is closed when they are garbage).
        self._owner = weakref.proxy(owner)
        self.calls: deque[Call[Any]] = deque()
        #: A wake-up is on its way to the loop; the next caller need not ring.
        self.wake_pending = False
        #: Kept for the thread's whole life (see .wakeup: a late ring must find it open).
        self.doorbell: Doorbell | None = None

    def hand_off(self, call: Call[Any]) -> None:
        """Queue ``call`` for the loop; raise BridgeClosedError if refused."""
        self.calls.append(call)
        owner = self._owner
        # Accepted only if the loop still runs after the append: stop() flips the
        # state before it drains the inbox, so nothing can slip in between.
        if owner.state is not State.RUNNING:
            self._refuse(call)
        if not self.wake_pending:
            self.wake_pending = True
            doorbell = self.doorbell
            try:
                if doorbell is not None:
                    doorbell.ring()
                else:
                    loop, dispatcher = owner.loop, owner.dispatcher
                    assert loop is not None
                    assert dispatcher is not None
                    loop.call_soon_threadsafe(dispatcher.drain)
            except (RuntimeError, OSError):  # the loop closed, or its descriptor, under us
                self._refuse(call)

    def _refuse(self, call: Call[Any]) -> None:
        try:
            self.calls.remove(call)
        except ValueError:
            return  # the loop already took it and will settle it
        owner = self._owner
        raise BridgeClosedError(
            f"bridge {owner.name!r} is {owner.state.value} and accepts no new work"
        )

    def send(
        self, callback: Callable[..., object], *args: Any,
        context: contextvars.Context | None = None,
    ) -> None:
        """Run ``callback(*args)`` on the loop, after every call handed off before it.

        Hand-offs wake the loop through the doorbell, other callbacks through the
        loop's own queue, so a callback could overtake a call its thread handed
        off just before (a ``call_soon`` or a cancel right after a ``submit``);
        the callback first takes in the inbox, as ``call_soon_threadsafe`` alone
        would. Raises ``RuntimeError`` if the loop is closed or gone.
        """
        loop, dispatcher = self._owner.loop, self._owner.dispatcher
        if loop is None or dispatcher is None:
            raise RuntimeError("the loop thread has no loop")

        def in_order() -> None:
            dispatcher.drain()
            callback(*args)

        loop.call_soon_threadsafe(in_order, context=context)

    def request_cancel(self, call: Call[Any], *, timed_out: bool = False) -> None:
        """Ask the loop to cancel ``call``; never blocks."""
        dispatcher = self._owner.dispatcher
        if dispatcher is None or call.settled:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed: nothing to cancel
            self.send(dispatcher.cancel, call, timed_out)

    def abandon(self, call: Call[Any]) -> None:
        """The caller of ``call`` was interrupted during its hand-off or its wait.

        Never blocks. The call may be anywhere: never handed off, in the inbox
        (with its wake-up possibly lost), waiting for a slot or running, so the
        decision is taken on the loop thread (:meth:`.Dispatcher.abandon`).
        """
        loop, dispatcher = self._owner.loop, self._owner.dispatcher
        try:
            if loop is None or dispatcher is None:
                raise RuntimeError("no loop")
            loop.call_soon_threadsafe(dispatcher.abandon, call)
        except RuntimeError:  # the loop is closed: nothing will run the call any more
            close_awaitables((call.awaitable,), cancel_futures=False)
