"""janus queues from ``bridge.queue()`` under concurrent producers and consumers.

Two queues cross the bridge at once: sync producers (threads) to async
consumers (tasks on the loop), and async producers to sync consumers. Every
item is ``(producer, sequence)``; whatever the sizes, ``maxsize`` and
interleavings (hypothesis picks them), nothing is lost or duplicated, and each
consumer sees each producer's items in the order they were put. Then what
``stop()`` does to a queue that still holds items, as documented: the queue
is closed, pending items are dropped, blocked threads get ``SyncQueueShutDown``.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import janus
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiobridge import AioThread
from tests.helpers import wait_until

WAIT = 60.0
Item = tuple[int, int]


@dataclass(frozen=True)
class Plan:
    """One exchange: how many of each party, how many items, the queue bound, pauses."""

    producers: int
    consumers: int
    items: int  # per direction, split over the producers
    maxsize: int
    pause_every: int  # consumers and producers yield their thread/task every N items


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _check(received: list[list[Item]], counts: list[int]) -> None:
    """Nothing lost, nothing duplicated, each producer's order kept in every consumer."""
    everything = collections.Counter(item for got in received for item in got)
    expected = collections.Counter((p, s) for p, n in enumerate(counts) for s in range(n))
    assert everything == expected, (
        f"lost {sum((expected - everything).values())}, "
        f"duplicated {sum((everything - expected).values())}"
    )
    for got in received:
        last: dict[int, int] = {}
        for producer, sequence in got:
            assert sequence > last.get(producer, -1), f"reordered: {producer}/{sequence}"
            last[producer] = sequence


def exchange(bridge: AioThread, plan: Plan) -> tuple[list[list[Item]], list[list[Item]]]:
    """Run both directions at once; return what each consumer received, per direction."""
    up: janus.Queue[Item | None] = bridge.queue(plan.maxsize)  # threads -> loop
    down: janus.Queue[Item | None] = bridge.queue(plan.maxsize)  # loop -> threads
    counts = _split(plan.items, plan.producers)
    pause = plan.pause_every

    async def async_consumer(got: list[Item]) -> None:
        while (item := await up.async_q.get()) is not None:
            got.append(item)
            if len(got) % pause == 0:
                await asyncio.sleep(0)

    async def async_producer(producer: int) -> None:
        for sequence in range(counts[producer]):
            await down.async_q.put((producer, sequence))
            if sequence % pause == 0:
                await asyncio.sleep(0)

    async def loop_side(up_got: list[list[Item]]) -> None:
        consumers = [asyncio.create_task(async_consumer(got)) for got in up_got]
        await asyncio.gather(*(async_producer(p) for p in range(plan.producers)))
        for _ in range(plan.consumers):  # one end marker per sync consumer
            await down.async_q.put(None)
        await asyncio.gather(*consumers)

    def sync_producer(producer: int) -> None:
        for sequence in range(counts[producer]):
            up.sync_q.put((producer, sequence), timeout=WAIT)
            if sequence % pause == 0:
                time.sleep(0)

    def sync_consumer(got: list[Item]) -> None:
        while (item := down.sync_q.get(timeout=WAIT)) is not None:
            got.append(item)
            if len(got) % pause == 0:
                time.sleep(0)

    up_got: list[list[Item]] = [[] for _ in range(plan.consumers)]
    down_got: list[list[Item]] = [[] for _ in range(plan.consumers)]
    errors: list[BaseException] = []

    def guarded(target: Callable[[Any], None], arg: object) -> threading.Thread:
        def body() -> None:
            try:
                target(arg)
            except BaseException as exc:
                errors.append(exc)

        return threading.Thread(target=body)

    loop_done = bridge.submit(loop_side(up_got), timeout=WAIT)
    threads = [guarded(sync_producer, p) for p in range(plan.producers)]
    threads += [guarded(sync_consumer, got) for got in down_got]
    for thread in threads:
        thread.start()
    for thread in threads[: plan.producers]:
        thread.join(WAIT)
    for _ in range(plan.consumers):  # producers done: one end marker per async consumer
        up.sync_q.put(None, timeout=WAIT)
    loop_done.result(WAIT)
    for thread in threads:
        thread.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a producer or consumer thread hung"
    assert errors == []
    _check(up_got, counts)
    _check(down_got, counts)
    assert up.sync_q.empty() and down.sync_q.empty()
    return up_got, down_got


def test_10000_items_each_way_with_several_producers_and_consumers() -> None:
    plan = Plan(producers=4, consumers=3, items=10_000, maxsize=64, pause_every=97)
    with AioThread(name="queues-10k", debug=False) as bridge:
        up_got, down_got = exchange(bridge, plan)
        stats = bridge.stats()
    # Work was shared: every consumer on both sides took part.
    assert all(up_got) and all(down_got)
    assert stats.failed == stats.cancelled == stats.in_flight == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    producers=st.integers(1, 4),
    consumers=st.integers(1, 4),
    items=st.integers(0, 1500),
    maxsize=st.sampled_from([0, 1, 2, 7, 64]),
    pause_every=st.integers(1, 50),
)
def test_queues_keep_every_item_once_and_in_producer_order(
    producers: int, consumers: int, items: int, maxsize: int, pause_every: int
) -> None:
    plan = Plan(producers, consumers, items, maxsize, pause_every)
    with AioThread(name="queues-prop") as bridge:
        exchange(bridge, plan)


def test_stop_with_items_queued_closes_the_queue_and_releases_blocked_threads() -> None:
    """Documented: ``stop()`` closes the queues it made; queued items are dropped."""
    outcomes: dict[str, BaseException | None] = {}
    blocked = threading.Event()
    with AioThread(name="queues-stop", debug=True) as bridge:
        full: janus.Queue[int] = bridge.queue(maxsize=3)
        waiting: janus.Queue[int] = bridge.queue()
        for i in range(3):
            full.sync_q.put(i, timeout=WAIT)
        waiting.sync_q.put(1, timeout=WAIT)  # never task_done(): join() waits

        def put_on_full() -> None:
            blocked.set()
            try:
                full.sync_q.put(99, timeout=WAIT)
                outcomes["put"] = None
            except BaseException as exc:
                outcomes["put"] = exc

        def join_waiting() -> None:
            try:
                waiting.sync_q.join()
                outcomes["join"] = None
            except BaseException as exc:
                outcomes["join"] = exc

        threads = [threading.Thread(target=put_on_full), threading.Thread(target=join_waiting)]
        for thread in threads:
            thread.start()
        assert blocked.wait(WAIT)
        wait_until(lambda: full.sync_q.qsize() == 3 and threads[0].is_alive(),
                   "the put blocked on the full queue", WAIT, interval=0.01)
    for thread in threads:
        thread.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a thread stayed blocked on a closed queue"
    assert full.closed and waiting.closed
    assert isinstance(outcomes["put"], janus.SyncQueueShutDown)
    assert outcomes["join"] is None  # released: the dropped items count as done
    assert full.sync_q.qsize() == 0  # queued items were dropped
    with pytest.raises(janus.SyncQueueShutDown):
        full.sync_q.get_nowait()
    with pytest.raises(janus.SyncQueueShutDown):
        full.sync_q.put_nowait(1)
