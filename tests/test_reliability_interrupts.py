"""A KeyboardInterrupt that lands *during* the hand-off of a call.

``tests/test_bridge.py::test_keyboard_interrupt_while_waiting_cancels_the_task``
sends a real SIGINT once the coroutine runs. About one run in four the signal
reached the main thread while it was still inside ``hand_off`` (the coroutine
already running on the loop): ``run()`` then *closed* the running coroutine
from the calling thread (a ``GeneratorExit`` thrown into it from the wrong
thread) and never cancelled its task, which hung on. Worse, an interrupt
between "a wake-up is pending" and scheduling that wake-up left the inbox
unwatched, so every later call of the process timed out.

Here the interrupt is injected at each point of the hand-off, deterministically.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from aiobridge import AioThread
from aiobridge._core.calls import Call
from tests.helpers import WAIT, wait_until


class Body:
    """A coroutine that records whether it started and how it ended."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()

    async def run(self) -> int:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return 1


@pytest.fixture
def own_bridge() -> Iterator[AioThread]:
    with AioThread(name="interrupts") as bridge:
        yield bridge


def _interrupt_hand_off(bridge: AioThread, when: str, body: Body) -> Callable[[], None]:
    """Make the next hand-off raise KeyboardInterrupt at ``when``; returns the undo."""
    inbox = bridge._portal._loop_thread.inbox
    original = inbox.hand_off

    def interrupted(call: Call[Any]) -> None:
        inbox.hand_off = original  # type: ignore[method-assign]  # once
        if when == "before":  # nothing handed over yet
            raise KeyboardInterrupt
        if when == "lost-wake-up":  # queued, wake-up marked pending but never scheduled
            inbox.calls.append(call)
            inbox.wake_pending = True
            raise KeyboardInterrupt
        original(call)  # "running": handed over, and the loop already runs it
        assert body.started.wait(WAIT)
        raise KeyboardInterrupt

    inbox.hand_off = interrupted  # type: ignore[method-assign]
    return lambda: setattr(inbox, "hand_off", original)


async def _one() -> int:
    return 1


@pytest.mark.parametrize("method", ["run", "submit"])
@pytest.mark.parametrize("when", ["before", "lost-wake-up", "running"])
def test_interrupt_during_hand_off_cancels_or_closes_on_the_loop(
    own_bridge: AioThread, method: str, when: str
) -> None:
    body = Body()
    coro: Coroutine[Any, Any, int] = body.run()
    call: Callable[[Any], object] = own_bridge.run if method == "run" else own_bridge.submit
    undo = _interrupt_hand_off(own_bridge, when, body)
    try:
        with pytest.raises(KeyboardInterrupt):
            call(coro)
    finally:
        undo()
    if when == "running":
        # Cancelled on the loop like any interrupted wait, not closed from this thread.
        assert body.cancelled.wait(WAIT), "the running task was not cancelled"
    # Whatever the point, the coroutine ends closed (no "never awaited", no hung task)...
    wait_until(lambda: inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED,
               "the coroutine closed")
    # ...and the bridge still serves (a lost wake-up used to wedge every later call).
    assert own_bridge.run(_one(), timeout=WAIT) == 1
    assert own_bridge.submit(_one()).result(WAIT) == 1
    stats = own_bridge.stats()
    assert stats.in_flight == 0


def test_interrupt_while_waiting_for_a_slot_cancels_the_waiting_call() -> None:
    """With ``max_in_flight`` the interrupted call may still wait for its turn."""
    with AioThread(name="interrupts-slot", max_in_flight=1) as bridge:
        blocker = Body()
        held = bridge.submit(blocker.run())
        assert blocker.started.wait(WAIT)
        waiting = Body()
        coro = waiting.run()
        inbox = bridge._portal._loop_thread.inbox
        original = inbox.hand_off

        def interrupted(call: Call[Any]) -> None:
            inbox.hand_off = original  # type: ignore[method-assign]
            original(call)
            wait_until(lambda: bridge.stats().queued == 1, "the call queued for a slot")
            raise KeyboardInterrupt

        inbox.hand_off = interrupted  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            bridge.run(coro)
        wait_until(lambda: bridge.stats().queued == 0, "the interrupted call left the queue")
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        assert not waiting.started.is_set()
        held.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            held.result(WAIT)
        assert bridge.run(_one(), timeout=WAIT) == 1
