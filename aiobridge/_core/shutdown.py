"""How a loop thread stops: drain, cancel, close, and leave no caller waiting.

:func:`shut_down` is the graceful path, run on the loop after ``stop()``:

1. **drain**: calls accepted before ``stop()`` and spawned tasks may finish
   within the drain period;
2. **cancel**: the calls left are cancelled (their callers get
   ``CancelledError``), then every other task on the loop, as ``asyncio.run``
   does, bounded (:func:`~.cancellation.cancel_remaining`);
3. **close** what the bridge owns (queues, resources), newest first, each
   bounded;
4. shut down what asyncio itself holds (async generators, the executor), then
   stop the loop.

:func:`settle_leftovers` runs on the loop thread as it ends, however it ends
(a crash included): every call still pending is settled, so no caller hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..errors import BridgeClosedError
from .awaitables import close_awaitables
from .calls import Call, wake_now
from .cancellation import cancel_remaining

if TYPE_CHECKING:
    from .loop_thread import LoopThread

__all__ = ("CANCEL_GRACE", "CLOSER_TIMEOUT", "settle_leftovers", "shut_down")

logger = logging.getLogger("aiobridge")

#: After the drain period, cancelled tasks get this long to run their cleanup.
CANCEL_GRACE = 2.0
#: Seconds each closer (a queue, a resource) gets.
CLOSER_TIMEOUT = 5.0


async def shut_down(owner: LoopThread, drain_seconds: float, *, owns_loop: bool = True) -> None:
    """The graceful stop of ``owner``'s loop (runs as a task on it).

    ``owns_loop`` false (an adopted loop, see :mod:`.adopt`): only the bridge's
    own tasks are cancelled, and the loop, its async generators and its
    executor are left to their owner.
    """
    loop = asyncio.get_running_loop()
    dispatcher = owner.dispatcher
    assert dispatcher is not None
    deadline = loop.time() + drain_seconds
    # 1. Drain.
    while True:
        dispatcher.drain()
        tasks = {c.task for c in dispatcher.active if c.task is not None}
        remaining = deadline - loop.time()
        if not tasks or remaining <= 0:
            break
        await asyncio.wait(tasks, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
    # 2. Cancel the calls left, then every other task.
    while dispatcher.waiting:
        dispatcher.settle_unstarted(dispatcher.next_waiting())
    tasks = {c.task for c in dispatcher.active if c.task is not None}
    for call in list(dispatcher.active):
        dispatcher.cancel_task(call)
    await cancel_remaining(tasks, CANCEL_GRACE, owner.name,
                           cancel=dispatcher.redeliverer.cancel,
                           only=None if owns_loop else dispatcher.active_tasks)
    # 3. Close what the bridge owns, newest first.
    while owner.closers:
        closer = owner.closers.pop()
        try:
            await asyncio.wait_for(closer(), CLOSER_TIMEOUT)
        except Exception:
            logger.exception("aiobridge: error while closing %r", closer)
    if not owns_loop:
        return
    # 4. What asyncio itself holds.
    await loop.shutdown_asyncgens()
    with contextlib.suppress(Exception):
        await owner.threads.shutdown_executor(loop)
    owner.loop_stopped = True
    loop.stop()


def settle_leftovers(owner: LoopThread, loop: asyncio.AbstractEventLoop) -> None:
    """Settle every call still pending when the loop stops, so no caller hangs."""
    dispatcher = owner.dispatcher
    inbox = owner.inbox.calls
    # One at a time: a caller racing the stop takes its call back if it is still there.
    while inbox:
        _refuse_unstarted(owner.name, inbox.popleft())
    if dispatcher is None:
        return
    while dispatcher.waiting:
        _refuse_unstarted(owner.name, dispatcher.next_waiting())
    leftovers = [c for c in dispatcher.active if c.task is not None and not c.task.done()]
    for call in leftovers:
        call.fail(_closed(owner.name, "while the call ran"), wake_now)
    if leftovers and not loop.is_running() and not loop.is_closed():
        # Only after a crash: give the stranded tasks a chance to run their cleanup.
        tasks = [c.task for c in leftovers if c.task is not None]
        for call in leftovers:
            dispatcher.cancel_task(call)
        # A plain future, not a task: if the loop cannot run any more, nothing
        # is left behind that warns about never having run.
        settled = asyncio.gather(*tasks, return_exceptions=True)
        give_up = loop.call_later(CANCEL_GRACE, settled.cancel)
        with contextlib.suppress(BaseException):
            loop.run_until_complete(settled)
        give_up.cancel()


def _refuse_unstarted(name: str, call: Call[Any]) -> None:
    close_awaitables((call.awaitable,), cancel_futures=False)
    call.fail(_closed(name, "before running the call"), wake_now)


def _closed(name: str, when: str) -> BridgeClosedError:
    return BridgeClosedError(f"bridge {name!r} stopped {when}")
