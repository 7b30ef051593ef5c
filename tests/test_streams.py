"""``iterate``, ``enter`` and ``queue``: order, backpressure, deterministic close."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType
from typing import Any

import janus
import pytest

from aiobridge import AioThread, BridgeDeadlockError, BridgeTimeoutError
from tests.helpers import WAIT


# -- iterate ------------------------------------------------------------------------
async def count_up(n: int, log: list[str] | None = None) -> AsyncGenerator[int, None]:
    try:
        for i in range(n):
            yield i
    finally:
        if log is not None:
            log.append("finally")


@pytest.mark.parametrize("buffer", [1, 64])
def test_iterate_delivers_every_item_in_order(bridge: AioThread, buffer: int) -> None:
    log: list[str] = []
    assert list(bridge.iterate(count_up(5000, log), buffer=buffer, timeout=WAIT)) == list(
        range(5000)
    )
    assert log == ["finally"]


class Watermark:
    """Counts items produced on the loop; a consumer can wait for a production level."""

    def __init__(self) -> None:
        self.produced = 0
        self.changed = threading.Condition()

    async def source(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            with self.changed:
                self.produced += 1
                self.changed.notify_all()
            yield i

    def wait_for(self, level: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.produced >= level, WAIT)


@pytest.mark.parametrize("buffer", [1, 3, 16])
def test_iterate_producer_runs_at_most_buffer_items_ahead(bridge: AioThread, buffer: int) -> None:
    total = 60
    mark = Watermark()
    high_water = 0
    consumed = 0
    for item in bridge.iterate(mark.source(total), buffer=buffer, timeout=WAIT):
        assert item == consumed
        consumed += 1
        # Let the producer fill the buffer completely, then measure how far ahead it is.
        mark.wait_for(min(consumed + buffer, total))
        ahead = mark.produced - consumed
        assert ahead <= buffer
        high_water = max(high_water, ahead)
    assert consumed == total
    assert high_water == buffer  # reached, never exceeded


def test_iterate_prefetches_while_the_consumer_works(bridge: AioThread) -> None:
    mark = Watermark()
    items = bridge.iterate(mark.source(10), buffer=4, timeout=WAIT)
    assert next(items) == 0
    # While this thread holds item 0, the loop fetches the next four on its own.
    mark.wait_for(5)
    assert [next(items) for _ in range(4)] == [1, 2, 3, 4]
    items.close()


def test_break_closes_the_generator_before_the_loop_ends(bridge: AioThread) -> None:
    log: list[str] = []
    for item in bridge.iterate(count_up(1000, log), buffer=8, timeout=WAIT):
        if item == 3:
            break
    assert log == ["finally"]


def test_close_runs_finally_of_a_generator_busy_in_an_await(bridge: AioThread) -> None:
    log: list[str] = []
    never = asyncio.Event()
    waiting = threading.Event()

    async def stuck() -> AsyncIterator[int]:
        try:
            yield 1
            waiting.set()
            await never.wait()  # the producer is here when the consumer closes
            yield 2
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        finally:
            log.append("finally")

    items = bridge.iterate(stuck(), timeout=WAIT)
    assert next(items) == 1
    assert waiting.wait(WAIT)
    items.close()
    assert log == ["cancelled", "finally"]


def test_exception_in_the_consumer_closes_the_generator(bridge: AioThread) -> None:
    log: list[str] = []

    def consume() -> None:
        for item in bridge.iterate(count_up(100, log), buffer=2, timeout=WAIT):
            if item == 5:
                raise ZeroDivisionError(item)

    with pytest.raises(ZeroDivisionError):
        consume()
    assert log == ["finally"]


def test_producer_exception_reaches_the_consumer_with_its_type(bridge: AioThread) -> None:
    class Broken(Exception):
        pass

    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise Broken("upstream went away")

    seen: list[int] = []
    with pytest.raises(Broken, match="upstream went away"):
        seen.extend(bridge.iterate(failing(), buffer=4, timeout=WAIT))
    assert seen == [1, 2]


def test_iterate_accepts_any_async_iterable(bridge: AioThread) -> None:
    class Countdown:
        def __init__(self, start: int) -> None:
            self.left = start

        def __aiter__(self) -> Countdown:
            return self

        async def __anext__(self) -> int:
            if self.left == 0:
                raise StopAsyncIteration
            self.left -= 1
            return self.left

    assert list(bridge.iterate(Countdown(3), timeout=WAIT)) == [2, 1, 0]


def test_iterate_timeout_per_item_closes_the_stream(bridge: AioThread) -> None:
    log: list[str] = []
    never = asyncio.Event()

    async def silent() -> AsyncIterator[int]:
        try:
            await never.wait()
            yield 1
        finally:
            log.append("finally")

    with pytest.raises(BridgeTimeoutError) as caught:
        next(bridge.iterate(silent(), timeout=0.2))
    assert isinstance(caught.value, TimeoutError)
    assert log == ["finally"]


def test_iterate_rejects_mistakes(bridge: AioThread) -> None:
    with pytest.raises(TypeError, match="sync iterable"):
        bridge.iterate([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffer"):
        bridge.iterate(count_up(1), buffer=0)

    async def on_the_loop() -> None:
        source = count_up(1)
        with pytest.raises(BridgeDeadlockError):
            bridge.iterate(source)
        await source.aclose()

    bridge.run(on_the_loop(), timeout=WAIT)


def test_stopping_the_bridge_ends_a_blocked_consumer() -> None:
    started = threading.Event()
    never = asyncio.Event()
    log: list[str] = []

    async def endless() -> AsyncIterator[int]:
        try:
            yield 0
            started.set()
            await never.wait()
            yield 1
        finally:
            log.append("finally")

    outcome: list[BaseException] = []
    with AioThread(name="stream-stop", debug=True) as own:

        def consume() -> None:
            try:
                for _ in own.iterate(endless(), timeout=WAIT):
                    pass
            except BaseException as exc:
                outcome.append(exc)

        consumer = threading.Thread(target=consume)
        consumer.start()
        assert started.wait(WAIT)
        own.stop(timeout=0.1)
        consumer.join(WAIT)
    assert not consumer.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], concurrent.futures.CancelledError)
    assert log == ["finally"]


# -- enter ------------------------------------------------------------------------
class Recorder:
    """An async context manager recording where and with what it ran."""

    def __init__(self, suppress: bool = False) -> None:
        self.suppress = suppress
        self.events: list[tuple[str, Any]] = []

    async def __aenter__(self) -> Recorder:
        self.events.append(("enter", (threading.current_thread().name, asyncio.current_task())))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        where = (threading.current_thread().name, asyncio.current_task())
        self.events.append(("exit", where))
        self.events.append(("exc", exc))
        return self.suppress


def test_enter_runs_aenter_and_aexit_in_one_task_on_the_loop(bridge: AioThread) -> None:
    recorder = Recorder()
    with bridge.enter(recorder, timeout=WAIT) as value:
        assert value is recorder
        assert threading.current_thread() is not bridge.thread
    (_, entered), (_, exited), (_, exc) = recorder.events
    assert entered == exited  # same thread name, same task
    assert entered[0] == bridge.name  # on the loop thread
    assert exc is None


@pytest.mark.parametrize("suppress", [False, True])
def test_exception_in_the_block_reaches_aexit(bridge: AioThread, suppress: bool) -> None:
    recorder = Recorder(suppress=suppress)
    error = KeyError("missing")
    with contextlib.ExitStack() as stack:
        if not suppress:
            stack.enter_context(pytest.raises(KeyError))
        with bridge.enter(recorder, timeout=WAIT):
            raise error
    assert recorder.events[-1] == ("exc", error)


def test_task_group_and_timeout_inside_an_entered_manager(bridge: AioThread) -> None:
    results: list[int] = []

    @contextlib.asynccontextmanager
    async def workers() -> AsyncIterator[asyncio.TaskGroup]:
        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as group:
            yield group

    async def work(n: int) -> None:
        await asyncio.sleep(0)
        results.append(n)

    with bridge.enter(workers(), timeout=WAIT) as group:
        for n in range(3):
            bridge.call_soon(group.create_task, work(n))
    # Leaving the block waited for the task group.
    assert sorted(results) == [0, 1, 2]


def test_errors_of_aenter_and_aexit_reach_the_caller(bridge: AioThread) -> None:
    @contextlib.asynccontextmanager
    async def refuses() -> AsyncIterator[None]:
        raise PermissionError("no")
        yield

    with pytest.raises(PermissionError), bridge.enter(refuses(), timeout=WAIT):
        pytest.fail("the block must not run")

    @contextlib.asynccontextmanager
    async def fails_on_exit() -> AsyncIterator[int]:
        yield 1
        raise OSError("flush failed")

    with pytest.raises(OSError, match="flush failed"), bridge.enter(fails_on_exit(), timeout=WAIT):
        pass


def test_enter_is_refused_on_the_loop_thread(bridge: AioThread) -> None:
    async def on_the_loop() -> None:
        with pytest.raises(BridgeDeadlockError):
            bridge.enter(Recorder()).__enter__()

    bridge.run(on_the_loop(), timeout=WAIT)
    with pytest.raises(TypeError, match="sync context manager"):
        bridge.enter(threading.Lock())  # type: ignore[arg-type]


# -- queues -----------------------------------------------------------------------
N_ITEMS = 10_000


def test_queue_sync_producer_async_consumer(bridge: AioThread) -> None:
    q: janus.Queue[int | None] = bridge.queue(maxsize=100)

    async def consume() -> list[int]:
        got: list[int] = []
        while (item := await q.async_q.get()) is not None:
            got.append(item)
        return got

    received = bridge.submit(consume())
    for i in range(N_ITEMS):
        q.sync_q.put(i, timeout=WAIT)
    q.sync_q.put(None, timeout=WAIT)
    assert received.result(WAIT) == list(range(N_ITEMS))


def test_queue_async_producer_sync_consumer(bridge: AioThread) -> None:
    q: janus.Queue[int] = bridge.queue(maxsize=100)

    async def produce() -> None:
        for i in range(N_ITEMS):
            await q.async_q.put(i)
        await q.async_q.join()  # drained: every item was taken and marked done

    produced = bridge.submit(produce())
    got = []
    for _ in range(N_ITEMS):
        got.append(q.sync_q.get(timeout=WAIT))
        q.sync_q.task_done()
    produced.result(WAIT)
    assert got == list(range(N_ITEMS))


def test_queue_is_bound_to_the_bridge_loop(bridge: AioThread) -> None:
    q: janus.Queue[int] = bridge.queue()
    q.sync_q.put(1)

    async def elsewhere() -> int:
        return await q.async_q.get()

    with pytest.raises(RuntimeError, match="different event loop"):
        asyncio.run(elsewhere())
    assert bridge.run(q.async_q.get(), timeout=WAIT) == 1


def test_stop_closes_the_queues_it_made(caplog: pytest.LogCaptureFixture) -> None:
    with AioThread(name="queue-stop", debug=True) as own:
        outside: janus.Queue[int] = own.queue()

        async def make_inside() -> janus.Queue[int]:
            return own.queue(maxsize=1)

        inside = own.run(make_inside(), timeout=WAIT)
        inside.sync_q.put(1)
        blocked = threading.Event()
        errors: list[BaseException] = []

        def waiting_reader() -> None:
            blocked.set()
            try:
                outside.sync_q.get(timeout=WAIT)
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=waiting_reader)
        reader.start()
        assert blocked.wait(WAIT)
    reader.join(WAIT)
    assert outside.closed
    assert inside.closed
    assert len(errors) == 1
    assert isinstance(errors[0], janus.SyncQueueShutDown)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_drain_before_stop_pattern() -> None:
    """Producers finish, ``shutdown()`` lets the consumer drain what is left, then stop."""
    handled: list[int] = []
    with AioThread(name="queue-drain", debug=True) as own:
        q: janus.Queue[int] = own.queue(maxsize=10)

        async def consumer() -> None:
            while True:
                try:
                    item = await q.async_q.get()
                except janus.AsyncQueueShutDown:
                    return  # shut down and empty: everything was handled
                handled.append(item)

        done = own.spawn(consumer())

        def produce(k: int) -> None:
            for i in range(100):
                q.sync_q.put(k * 100 + i, timeout=WAIT)

        producers = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join(WAIT)
        q.shutdown()  # no more puts; gets go on until the queue is empty
        done.result(WAIT)
    assert sorted(handled) == list(range(400))
