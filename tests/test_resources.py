"""Resources: built once on the loop, shared, closed newest first, rebuilt after fork."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import threading
from typing import Any

import pytest

from aiobridge import AioThread, BridgeClosedError, BridgeDeadlockError, BridgeError, Resource
from tests.helpers import WAIT, run_in_fork, wait_until


class Thing:
    """A stand-in for a client: remembers where it was made and whether it was closed."""

    def __init__(self, name: str, closed_log: list[str] | None = None) -> None:
        self.name = name
        self.pid = os.getpid()
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.closed_log = closed_log

    async def aclose(self) -> None:
        await asyncio.sleep(0)
        assert asyncio.get_running_loop() is self.loop
        self.closed = True
        if self.closed_log is not None:
            self.closed_log.append(self.name)


def test_built_once_under_16_concurrent_first_uses(bridge: AioThread) -> None:
    calls: list[str] = []
    gate = asyncio.Event()

    async def factory() -> Thing:
        calls.append(threading.current_thread().name)
        await gate.wait()  # keep the build in progress while the others arrive
        return Thing("shared")

    res = bridge.resource(factory)
    barrier = threading.Barrier(17)
    results: list[Any] = [None] * 16

    def user(index: int) -> None:
        barrier.wait(WAIT)
        if index % 2:
            results[index] = res.get_sync(timeout=WAIT)
        else:
            results[index] = bridge.run(res.get(), timeout=WAIT)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    barrier.wait(WAIT)
    # All 16 calls are on the loop, waiting for the one build.
    wait_until(lambda: bridge.stats().in_flight == 16, "16 calls in flight")
    bridge.call_soon(gate.set)
    for thread in threads:
        thread.join(WAIT)
    assert calls == [bridge.name]  # built once, on the loop
    assert all(r is results[0] for r in results)
    assert isinstance(results[0], Thing)


def test_sync_factory_and_explicit_close(bridge: AioThread) -> None:
    closed: list[object] = []
    made_on: list[str] = []

    def factory() -> dict[str, int]:
        made_on.append(threading.current_thread().name)
        return {"answer": 42}

    res: Resource[dict[str, int]] = bridge.resource(factory, close=closed.append)
    assert res.get_sync(timeout=WAIT) == {"answer": 42}
    assert res.get_sync(timeout=WAIT) is res.get_sync(timeout=WAIT)
    assert made_on == [bridge.name]
    assert res.built
    bridge.stop()
    assert closed == [{"answer": 42}]
    assert not res.built


def test_closed_newest_first_after_in_flight_calls() -> None:
    order: list[str] = []
    with AioThread(name="lifo", debug=True) as own:
        first = own.resource(lambda: Thing("first", order))
        second = own.resource(lambda: Thing("second", order))

        async def dependent_factory() -> Thing:
            await first.get()  # built during this build, so closed after it
            return Thing("dependent", order)

        dependent = own.resource(dependent_factory)
        third = own.resource(lambda: Thing("third", order))
        second.get_sync(timeout=WAIT)
        dependent.get_sync(timeout=WAIT)
        third.get_sync(timeout=WAIT)
        release = asyncio.Event()
        in_call = threading.Event()

        async def still_using_third() -> bool:
            thing = await third.get()
            in_call.set()
            await release.wait()
            return not thing.closed  # the resource outlives the calls that use it

        pending = own.submit(still_using_third())
        assert in_call.wait(WAIT)
        loop = own.loop
        stopper = threading.Thread(target=own.stop, args=(WAIT,))
        stopper.start()
        pause = threading.Event()
        for _ in range(int(WAIT / 0.001)):  # until stop() has begun (it refuses new work)
            if not own.running:
                break
            pause.wait(0.001)
        assert not own.running
        loop.call_soon_threadsafe(release.set)
        assert pending.result(WAIT) is True
        stopper.join(WAIT)
    assert order == ["third", "dependent", "first", "second"]


def test_failed_build_is_retried_by_the_next_caller(bridge: AioThread) -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise ConnectionRefusedError("not yet")
        return "connected"

    res = bridge.resource(flaky)
    with pytest.raises(ConnectionRefusedError):
        res.get_sync(timeout=WAIT)
    assert res.get_sync(timeout=WAIT) == "connected"
    assert attempts == [0, 1]


def test_a_timed_out_first_caller_does_not_cancel_the_build(bridge: AioThread) -> None:
    gate = asyncio.Event()
    builds: list[str] = []

    async def slow() -> str:
        builds.append("start")
        await gate.wait()
        return "ready"

    res = bridge.resource(slow)
    with pytest.raises(TimeoutError):
        res.get_sync(timeout=0.05)
    bridge.call_soon(gate.set)
    assert res.get_sync(timeout=WAIT) == "ready"
    assert builds == ["start"]


def test_stop_during_a_build_cancels_it_cleanly() -> None:
    building = threading.Event()
    log: list[str] = []

    async def never_ready() -> str:
        building.set()
        try:
            await asyncio.Event().wait()
        finally:
            log.append("build cancelled")
        return "unreachable"

    own = AioThread(name="stop-mid-build", debug=True).start()
    res = own.resource(never_ready)
    future = own.submit(res.get())
    assert building.wait(WAIT)
    own.stop(timeout=0.05)
    assert future.cancelled()
    assert log == ["build cancelled"]
    with pytest.raises(BridgeClosedError):
        res.get_sync(timeout=WAIT)


def test_foreign_loop_gets_a_clear_error(bridge: AioThread) -> None:
    res = bridge.resource(lambda: Thing("bound"))
    res.get_sync(timeout=WAIT)

    async def elsewhere() -> None:
        with pytest.raises(BridgeError, match=re.escape(bridge.name)) as caught:
            await res.get()
        assert "different loop" not in str(caught.value)
        with pytest.raises(BridgeError, match=re.escape(bridge.name)):
            res.get_sync()

    asyncio.run(elsewhere())


def test_get_sync_on_the_loop_thread(bridge: AioThread) -> None:
    built = bridge.resource(lambda: "ready")
    unbuilt = bridge.resource(lambda: "later")
    built.get_sync(timeout=WAIT)

    async def on_the_loop() -> str:
        with pytest.raises(BridgeDeadlockError, match=r"await resource\.get"):
            unbuilt.get_sync()
        return built.get_sync()  # already built: no waiting involved

    assert bridge.run(on_the_loop(), timeout=WAIT) == "ready"


def test_rejects_an_awaitable_instead_of_a_factory(bridge: AioThread) -> None:
    async def make() -> int:
        return 1

    coro = make()
    with pytest.raises(TypeError, match="not an awaitable"):
        bridge.resource(coro)  # type: ignore[call-overload]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited"


def test_rebuilt_in_a_forked_child(bridge: AioThread) -> None:
    res = bridge.resource(lambda: Thing("per-process"))
    parent_thing = res.get_sync(timeout=WAIT)
    assert parent_thing.pid == os.getpid()

    def in_child() -> str:
        child_thing = res.get_sync(timeout=WAIT)
        checks = [
            child_thing is not parent_thing,
            child_thing.pid == os.getpid(),
            child_thing.loop is not parent_thing.loop,
            bridge.run(res.get(), timeout=WAIT) is child_thing,
            not parent_thing.closed,
        ]
        bridge.stop()
        checks += [child_thing.closed, not parent_thing.closed]
        return repr(checks)

    report = run_in_fork(in_child, timeout=WAIT * 3)
    assert report == repr([True] * 7)
    # The parent's object is untouched and still the one the parent gets.
    assert res.get_sync(timeout=WAIT) is parent_thing
    assert not parent_thing.closed
