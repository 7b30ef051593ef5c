"""A loop thread that adopts the running loop of its thread instead of starting one.

An ASGI server runs its own event loop; with ``aiobridge.onloop`` the bridge
uses that loop, so the process still has one loop. Adopting sets up on the
server's loop what a loop thread of its own has (the inbox's doorbell, the
dispatcher, the lag probe and the watchdog), so calls from other threads reach
it through the same thread-safe hand-off.

Stopping an adopted loop thread drains and cancels only the tasks the bridge
owns (its calls and spawned tasks), closes its queues and resources, and
leaves the loop itself, its other tasks, its async generators and its
executor to the server that owns them.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import types
from typing import TYPE_CHECKING

from .._backends import threads_for_this_process
from .calls import wake_now
from .dispatch import Dispatcher
from .observers import observer_for
from .shutdown import settle_leftovers, shut_down
from .state import State
from .wakeup import install

if TYPE_CHECKING:
    from .loop_thread import LoopThread

__all__ = ("adopt", "idle_codes_below", "stop_adopted")

_get_ident = threading.get_ident


def idle_codes_below(frame: types.FrameType | None) -> frozenset[types.CodeType]:
    """The code of the frames that called the loop, seen from a coroutine running on it.

    When a loop written in C (uvloop) waits for I/O, the innermost Python frame
    of its thread is the one that called ``run_forever()``/``run_until_complete()``:
    the watchdog reads these frames as idle. A coroutine's outermost frame is
    stepped by the loop; every plain frame beyond it called the loop.
    """
    codes: set[types.CodeType] = set()
    outside = False
    while frame is not None:
        code = frame.f_code
        if code.co_flags & (inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE):
            outside = True
        elif outside and code.co_name != "_run":  # asyncio's Handle._run runs callbacks
            codes.add(code)
        frame = frame.f_back
    return frozenset(codes)


def adopt(owner: LoopThread, loop: asyncio.AbstractEventLoop) -> None:
    """Make ``owner`` run its calls on ``loop``, the running loop of this thread.

    Called with ``owner``'s transition lock held, in state NEW.
    """
    owner.observer = owner.monitor.observer = observer_for(owner.observed_as())
    threads = owner.threads = threads_for_this_process()
    dispatcher = Dispatcher(loop, owner.inbox, owner.counters, owner.observer,
                            owner._max_in_flight, wake=wake_now)
    # Gauges are told after every change: the server's loop has no selector of ours.
    dispatcher.report_each_call = owner.observer is not None
    owner.inbox.doorbell = install(loop, dispatcher.drain)
    owner.loop, owner.dispatcher = loop, dispatcher
    owner.thread = threading.current_thread()
    owner.thread_ident = _get_ident()
    owner.adopted = True
    owner.stopped.clear()
    owner.monitor.start(loop, owner.name, threads, idle_codes_below(sys._getframe(1)))
    owner.state = State.RUNNING
    if owner.observer is not None:
        owner.observer.loop_started(owner.restarted_after_fork)


async def stop_adopted(owner: LoopThread, drain_seconds: float) -> None:
    """Drain, cancel what the bridge owns, close its resources; on the adopted loop."""
    loop = asyncio.get_running_loop()
    dispatcher = owner.dispatcher
    assert dispatcher is not None
    try:
        await shut_down(owner, drain_seconds, owns_loop=False)
    finally:
        owner.state = State.STOPPED
        dispatcher.closed = True
        owner.monitor.stop()
        if owner.inbox.doorbell is not None:
            owner.inbox.doorbell.detach()
        settle_leftovers(owner, loop)
        owner.stopped.set()
        waiters, owner.stopped_waiters = owner.stopped_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
