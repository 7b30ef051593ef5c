"""AioThread call semantics (SPEC §3, §3.1): results, errors, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
import traceback
from collections.abc import Generator
from typing import Any

import pytest

from aiobridge import AioThread, BridgeClosedError, BridgeDeadlockError, BridgeTimeoutError

from .helpers import WAIT, run_python, wait_until, without_slow_callback_reports

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


async def fail_with(exc: BaseException) -> None:
    await asyncio.sleep(0)
    raise exc


class Awaitable3:
    def __await__(self) -> Generator[Any, None, int]:
        yield from asyncio.sleep(0).__await__()
        return 3


# -- results and accepted awaitables ----------------------------------------------


def test_run_returns_result(bridge: AioThread) -> None:
    assert bridge.run(add(1, 2)) == 3


def test_run_accepts_any_awaitable(bridge: AioThread) -> None:
    assert bridge.run(Awaitable3()) == 3
    future = bridge.run(_make_future(bridge))
    bridge.loop.call_soon_threadsafe(future.set_result, "from future")
    assert bridge.run(future, timeout=WAIT) == "from future"


async def _make_future(bridge: AioThread) -> asyncio.Future[str]:
    return asyncio.get_running_loop().create_future()


def test_starts_lazily_on_first_call() -> None:
    bridge = AioThread(name="lazy")
    assert not bridge.running
    try:
        assert bridge.run(add(2, 2)) == 4
        assert bridge.running
        assert bridge.thread is not None and bridge.thread.name == "lazy"
        assert bridge.thread.daemon
    finally:
        bridge.stop()
    assert not bridge.running


def test_runs_on_the_loop_thread(bridge: AioThread) -> None:
    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        return threading.get_ident(), asyncio.get_running_loop()

    ident, loop = bridge.run(where())
    assert bridge.thread is not None
    assert ident == bridge.thread.ident
    assert loop is bridge.loop


# -- mistakes are TypeErrors that name the fix ----------------------------------------


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (add, "coroutine function add"),
        (None, "got None"),
        (42, "not awaitable"),
        (concurrent.futures.Future(), r"concurrent\.futures\.Future"),
    ],
)
def test_run_rejects_non_awaitables(bridge: AioThread, bad: object, fragment: str) -> None:
    with pytest.raises(TypeError, match=fragment):
        bridge.run(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=fragment):
        bridge.submit(bad)  # type: ignore[arg-type]


def test_rejects_async_generator_and_foreign_future(bridge: AioThread) -> None:
    async def agen() -> Any:
        yield 1

    gen = agen()
    with pytest.raises(TypeError, match=r"bridge\.iterate"):
        bridge.run(gen)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(TypeError, match="another event loop"):
            bridge.run(loop.create_future())
    finally:
        loop.close()


def test_refused_coroutine_is_closed_without_warning() -> None:
    # Warnings are errors in this suite: a "never awaited" warning would fail it.
    bridge = AioThread()
    bridge.stop()
    coro = add(1, 1)
    with pytest.raises(BridgeClosedError):
        bridge.run(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    with pytest.raises(ValueError, match="timeout"):
        AioThread().run(add(1, 1), timeout=-1)


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        AioThread(max_in_flight=0)
    with pytest.raises(ValueError, match="default_timeout"):
        AioThread(default_timeout=-2)
    with pytest.raises(ValueError, match="slow_callback_duration"):
        AioThread(slow_callback_duration=0)
    with pytest.raises(TypeError, match="loop_factory"):
        AioThread(loop_factory=42)  # type: ignore[arg-type]


# -- context and exceptions ----------------------------------------------------------


def test_contextvars_are_copied_in(bridge: AioThread) -> None:
    async def read() -> str:
        return request_id.get()

    token = request_id.set("req-42")
    try:
        assert bridge.run(read()) == "req-42"
        assert bridge.submit(read()).result(WAIT) == "req-42"
    finally:
        request_id.reset(token)
    assert bridge.run(read()) == "-"


def test_exception_keeps_type_and_remote_traceback(bridge: AioThread) -> None:
    class Custom(Exception):
        pass

    with pytest.raises(Custom) as info:
        bridge.run(fail_with(Custom("boom")))
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "fail_with" in frames
    assert "test_exception_keeps_type_and_remote_traceback" in frames


def test_base_exceptions_reach_caller_and_loop_survives(bridge: AioThread) -> None:
    with pytest.raises(SystemExit):
        bridge.run(fail_with(SystemExit(3)))
    with pytest.raises(KeyboardInterrupt):
        bridge.run(fail_with(KeyboardInterrupt()))
    assert bridge.run(add(1, 1)) == 2


# -- timeouts and cancellation --------------------------------------------------------


def _cancellable(started: threading.Event, cancelled: threading.Event) -> Any:
    async def body() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return body()


def test_timeout_cancels_the_task_on_the_loop(bridge: AioThread) -> None:
    started, cancelled = threading.Event(), threading.Event()
    with pytest.raises(TimeoutError) as info:
        bridge.run(_cancellable(started, cancelled), timeout=0.05)
    assert isinstance(info.value, BridgeTimeoutError)
    assert started.is_set()
    assert cancelled.wait(WAIT), "the task kept running on the loop after the timeout"
    bridge.run(asyncio.sleep(0))  # the task settles before this call is answered
    stats = bridge.stats()
    assert stats.timed_out == 1
    assert stats.cancelled == 1
    assert stats.in_flight == 0


def test_default_timeout_applies() -> None:
    started, cancelled = threading.Event(), threading.Event()
    with AioThread(default_timeout=0.05) as bridge:
        with pytest.raises(BridgeTimeoutError):
            bridge.run(_cancellable(started, cancelled))
        assert cancelled.wait(WAIT)


def test_submit_timeout_cancels_on_loop(bridge: AioThread) -> None:
    started, cancelled = threading.Event(), threading.Event()
    future = bridge.submit(_cancellable(started, cancelled), timeout=0.05)
    with pytest.raises(BridgeTimeoutError):
        future.result(WAIT)
    assert cancelled.wait(WAIT)


def test_future_cancel_cancels_the_task(bridge: AioThread) -> None:
    started, cancelled = threading.Event(), threading.Event()
    future = bridge.submit(_cancellable(started, cancelled))
    assert started.wait(WAIT)
    assert future.cancel()
    assert cancelled.wait(WAIT)
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(0)


def test_task_cancelled_on_the_loop_raises_cancelled_error(bridge: AioThread) -> None:
    async def cancel_self() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    with pytest.raises(concurrent.futures.CancelledError):
        bridge.run(cancel_self())


def test_keyboard_interrupt_while_waiting_cancels_the_task() -> None:
    result = run_python(
        """
        import asyncio, signal, threading
        from aiobridge import AioThread

        started, cancelled = threading.Event(), threading.Event()

        async def body():
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        def interrupt():
            assert started.wait(10)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

        with AioThread() as bridge:
            threading.Thread(target=interrupt).start()
            try:
                bridge.run(body())
            except KeyboardInterrupt:
                print("interrupted")
            assert cancelled.wait(10), "task not cancelled"
            print("cancelled on loop")
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["interrupted", "cancelled", "on", "loop"]
    assert without_slow_callback_reports(result.stderr) == "", result.stderr


# -- deadlock guard -------------------------------------------------------------------


def test_blocking_call_from_loop_thread_raises(bridge: AioThread) -> None:
    async def nested() -> None:
        bridge.run(asyncio.sleep(0))

    future = bridge.submit(nested())
    with pytest.raises(BridgeDeadlockError, match="own loop thread"):
        future.result(WAIT)

    async def nested_gather() -> None:
        bridge.gather(asyncio.sleep(0))

    with pytest.raises(BridgeDeadlockError):
        bridge.submit(nested_gather()).result(WAIT)


def test_blocking_call_from_another_running_loop_raises(bridge: AioThread) -> None:
    async def inside_asyncio_run() -> None:
        coro = asyncio.sleep(0)
        with pytest.raises(BridgeDeadlockError, match="running an event loop"):
            bridge.run(coro)

    outcome: list[BaseException | None] = []

    def in_thread() -> None:
        try:
            asyncio.run(inside_asyncio_run())
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join(WAIT)
    assert not worker.is_alive(), "blocking call inside asyncio.run hung"
    assert outcome == [None]


def test_non_blocking_calls_work_from_the_loop_thread(bridge: AioThread) -> None:
    async def inner() -> int:
        future = bridge.submit(add(20, 22))
        return await asyncio.wrap_future(future)

    assert bridge.run(inner()) == 42


# -- the other call helpers -------------------------------------------------------------


def test_call_soon_runs_callback_with_context(bridge: AioThread) -> None:
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def callback(tag: int) -> None:
        seen.append((request_id.get(), tag))
        done.set()

    token = request_id.set("cb")
    try:
        bridge.call_soon(callback, 7)
    finally:
        request_id.reset(token)
    assert done.wait(WAIT)
    assert seen == [("cb", 7)]
    with pytest.raises(TypeError, match="spawn"):
        bridge.call_soon(add, 1, 2)


def test_wrap_keeps_metadata_and_runs(bridge: AioThread) -> None:
    @bridge.wrap
    async def multiply(a: int, b: int = 2) -> int:
        """Multiply two numbers."""
        await asyncio.sleep(0)
        return a * b

    assert multiply(21) == 42
    assert multiply.__name__ == "multiply"
    assert multiply.__doc__ == "Multiply two numbers."
    assert str(inspect.signature(multiply)) == "(a: 'int', b: 'int' = 2) -> 'int'"

    @bridge.wrap(timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(TimeoutError):
        slow()

    def plain() -> None:
        pass

    with pytest.raises(TypeError, match="regular function"):
        bridge.wrap(plain)  # type: ignore[arg-type]


def test_spawn_is_tracked_and_counted(bridge: AioThread) -> None:
    future = bridge.spawn(add(1, 2))
    assert future.result(WAIT) == 3
    assert bridge.stats().spawned == 1


def test_gather_in_order_and_concurrently(bridge: AioThread) -> None:
    both_running = asyncio.Event

    async def meet(barrier: list[asyncio.Event], index: int) -> int:
        barrier[index].set()
        await barrier[1 - index].wait()  # each waits for the other: only concurrency ends it
        return index

    events = bridge.run(_events(2))
    assert bridge.gather(meet(events, 0), meet(events, 1), timeout=WAIT) == [0, 1]
    assert both_running is asyncio.Event


async def _events(n: int) -> list[asyncio.Event]:
    return [asyncio.Event() for _ in range(n)]


def test_gather_failure_cancels_the_rest(bridge: AioThread) -> None:
    started, cancelled = threading.Event(), threading.Event()
    with pytest.raises(ValueError, match="first"):
        bridge.gather(_cancellable(started, cancelled), fail_with(ValueError("first")))
    assert cancelled.wait(WAIT)
    results = bridge.gather(add(1, 1), fail_with(KeyError("k")), return_exceptions=True)
    assert results[0] == 2
    assert isinstance(results[1], KeyError)


def test_gather_rejects_bad_items_and_closes_the_others(bridge: AioThread) -> None:
    good = add(1, 1)
    with pytest.raises(TypeError, match="argument 1"):
        bridge.gather(good, 5)  # type: ignore[arg-type]
    assert inspect.getcoroutinestate(good) == inspect.CORO_CLOSED


def test_first_returns_fastest_and_cancels_the_rest(bridge: AioThread) -> None:
    started, cancelled = threading.Event(), threading.Event()
    assert bridge.first(_cancellable(started, cancelled), add(2, 3), timeout=WAIT) == 5
    assert cancelled.wait(WAIT)
    with pytest.raises(KeyError) as info:
        bridge.first(fail_with(KeyError("a")), fail_with(ValueError("b")))
    assert any("all 2 awaitables failed" in note for note in info.value.__notes__)
    with pytest.raises(ValueError, match="at least one"):
        bridge.first()


def test_as_completed_limit_and_order(bridge: AioThread) -> None:
    gauge = {"now": 0, "high": 0}

    async def job(value: int, release: asyncio.Event, full: asyncio.Event) -> int:
        gauge["now"] += 1
        gauge["high"] = max(gauge["high"], gauge["now"])
        try:
            if gauge["now"] == 4:
                full.set()
            await full.wait()  # the first four wait for each other: the limit is reached
            if value == 0:
                await release.wait()  # finishes last although it started first
            return value
        finally:
            gauge["now"] -= 1

    release, full = bridge.run(_events(2))
    results = []
    jobs = [job(i, release, full) for i in range(12)]
    for value in bridge.as_completed(jobs, limit=4, timeout=WAIT):
        results.append(value)
        if len(results) == 11:
            bridge.call_soon(release.set)
    assert sorted(results) == list(range(12))
    assert results[-1] == 0
    assert gauge["high"] == 4


def test_as_completed_break_cancels_the_rest(bridge: AioThread) -> None:
    started, cancelled = threading.Event(), threading.Event()
    iterator = bridge.as_completed([add(1, 1), _cancellable(started, cancelled)], limit=2)
    for value in iterator:
        assert value == 2
        break
    iterator.close()  # type: ignore[attr-defined]
    assert cancelled.is_set(), "close() returned before the pending awaitable was cancelled"


def test_as_completed_raises_failure(bridge: AioThread) -> None:
    with pytest.raises(ValueError, match="bad"):
        list(bridge.as_completed([fail_with(ValueError("bad"))]))
    with pytest.raises(ValueError, match="limit"):
        bridge.as_completed([add(1, 1)], limit=0)
    with pytest.raises(TypeError, match="iterable"):
        bridge.as_completed(add(1, 1))  # type: ignore[arg-type]


# -- backpressure ------------------------------------------------------------------------


def test_max_in_flight_bounds_concurrency() -> None:
    limit, callers = 3, 12
    gauge = {"now": 0, "high": 0}
    with AioThread(max_in_flight=limit) as bridge:
        (gate,) = bridge.run(_events(1))
        reached = threading.Event()

        async def job() -> None:
            gauge["now"] += 1
            gauge["high"] = max(gauge["high"], gauge["now"])
            if gauge["now"] == limit:
                reached.set()
            await gate.wait()
            gauge["now"] -= 1

        with concurrent.futures.ThreadPoolExecutor(callers) as pool:
            futures = [pool.submit(bridge.run, job(), timeout=WAIT) for _ in range(callers)]
            assert reached.wait(WAIT)
            assert bridge.stats().in_flight == limit
            bridge.call_soon(gate.set)
            for future in futures:
                future.result(WAIT)
        assert gauge["high"] == limit
        assert bridge.stats().completed == callers + 1


def test_a_slot_freed_by_a_call_cancelled_before_its_first_step_goes_to_the_next() -> None:
    """A waiting call is launched when the call holding the slot ends, however it ends.

    Found by a random-order run of the backpressure storm (every caller timed out):
    a call launched from the waiting queue, then cancelled before its task's first
    step, gave its slot back without launching the next waiting call, which then
    waited for another call to end, or for ever.
    """
    with AioThread(max_in_flight=1) as bridge:
        (gate,) = bridge.run(_events(1))
        held: dict[str, concurrent.futures.Future[int]] = {}

        async def holder() -> int:
            await gate.wait()
            # Scheduled before the task of the next waiting call (launched when this
            # call ends, in this very step): that call is cancelled before it starts.
            held["second"].cancel()
            return 1

        first = bridge.submit(holder())
        held["second"] = bridge.submit(add(1, 1))
        third = bridge.submit(add(2, 2))
        wait_until(lambda: bridge.stats().queued == 2, "two calls waiting for the slot")
        bridge.call_soon(gate.set)
        assert first.result(WAIT) == 1
        assert third.result(WAIT) == 4
        assert held["second"].cancelled()
        assert bridge.stats().in_flight == 0 and bridge.stats().queued == 0


def test_timeout_applies_while_waiting_for_a_slot() -> None:
    with AioThread(max_in_flight=1) as bridge:
        started, cancelled = threading.Event(), threading.Event()
        blocker = bridge.submit(_cancellable(started, cancelled))
        assert started.wait(WAIT)
        queued = add(1, 1)
        with pytest.raises(TimeoutError):
            bridge.run(queued, timeout=0.05)
        blocker.cancel()
        assert cancelled.wait(WAIT)
        assert bridge.run(add(2, 2), timeout=WAIT) == 4
        stats = bridge.stats()
        assert stats.timed_out == 1
        assert stats.queued == 0
