"""Items per second crossing between a thread and the bridge's loop.

Four transfers, each moving the same number of small ints from one side to the
other, on one bridge (default asyncio loop):

* ``queue sync→async``: a thread ``sync_q.put``\\ s, a coroutine ``async_q.get``\\ s;
* ``queue async→sync``: a coroutine ``async_q.put``\\ s, a thread ``sync_q.get``\\ s;
  both with ``bridge.queue()`` (janus, bound to the bridge) and with ``culsans``
  (a janus-compatible queue) as the reference, same ``maxsize``;
* ``iterate``: a thread consumes an async generator with ``bridge.iterate``
  (buffer 1 and 64), against the same stream carried by a culsans queue of the
  same size (a hand-written pump coroutine) and against one ``bridge.run``
  round trip per item (``run(agen.__anext__())``), the naive way.

Reported: items/s (median of the rounds), µs per item and the ratio to the
culsans reference of the same transfer. Every wait is bounded.

Run: ``python -m benchmarks.bm_streams [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import culsans

from aiobridge import AioThread

from .results import (
    Progress,
    Rows,
    main_for,
    markdown_table,
    numeric_align,
    ratio_rounds,
    rounds_option,
    spread,
    text,
)

NAME = "streams"
QUEUE_MAXSIZE = 64
WAIT = 60.0


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def _in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, name="bm-streams-thread")
    thread.start()
    return thread


# -- queues -----------------------------------------------------------------------------
def queue_sync_to_async(bridge: AioThread, queue: Any, n: int) -> float:
    async def consume() -> int:
        total = 0
        for _ in range(n):
            total += await queue.async_q.get()
        return total

    started = time.perf_counter()
    result = bridge.submit(consume())
    for i in range(n):
        queue.sync_q.put(i, timeout=WAIT)
    assert result.result(WAIT) == n * (n - 1) // 2
    return time.perf_counter() - started


def queue_async_to_sync(bridge: AioThread, queue: Any, n: int) -> float:
    async def produce() -> None:
        for i in range(n):
            await queue.async_q.put(i)

    started = time.perf_counter()
    done = bridge.submit(produce())
    total = 0
    for _ in range(n):
        total += queue.sync_q.get(timeout=WAIT)
    done.result(WAIT)
    assert total == n * (n - 1) // 2
    return time.perf_counter() - started


def make_culsans(bridge: AioThread, maxsize: int) -> Any:
    async def create() -> Any:
        return culsans.Queue(maxsize)

    return bridge.run(create(), timeout=WAIT)


def close_culsans(bridge: AioThread, queue: Any) -> None:
    bridge.run(queue.aclose(), timeout=WAIT)


# -- iterate ----------------------------------------------------------------------------
def via_iterate(bridge: AioThread, n: int, buffer: int) -> float:
    started = time.perf_counter()
    total = sum(bridge.iterate(numbers(n), buffer=buffer, timeout=WAIT))
    assert total == n * (n - 1) // 2
    return time.perf_counter() - started


def via_culsans_pump(bridge: AioThread, n: int, buffer: int) -> float:
    queue = make_culsans(bridge, buffer)
    end = object()

    async def pump() -> None:
        async for item in numbers(n):
            await queue.async_q.put(item)
        await queue.async_q.put(end)

    started = time.perf_counter()
    done = bridge.submit(pump())
    total = 0
    while (item := queue.sync_q.get(timeout=WAIT)) is not end:
        total += item
    done.result(WAIT)
    elapsed = time.perf_counter() - started
    close_culsans(bridge, queue)
    assert total == n * (n - 1) // 2
    return elapsed


def via_run_per_item(bridge: AioThread, n: int) -> float:
    source = numbers(n)
    total = 0
    started = time.perf_counter()
    while True:
        try:
            total += bridge.run(source.__anext__(), timeout=WAIT)
        except StopAsyncIteration:
            break
    elapsed = time.perf_counter() - started
    assert total == n * (n - 1) // 2
    return elapsed


# -- driver ----------------------------------------------------------------------------
def run_benchmark(
    rounds: int, n: int, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    cases: dict[tuple[str, str], Callable[[AioThread], float]] = {}

    def janus_case(move: Callable[[AioThread, Any, int], float]) -> Callable[[AioThread], float]:
        def run(bridge: AioThread) -> float:
            queue = bridge.queue(QUEUE_MAXSIZE)
            elapsed = move(bridge, queue, n)
            bridge.run(queue.aclose(), timeout=WAIT)
            return elapsed

        return run

    def culsans_case(move: Callable[[AioThread, Any, int], float]) -> Callable[[AioThread], float]:
        def run(bridge: AioThread) -> float:
            queue = make_culsans(bridge, QUEUE_MAXSIZE)
            elapsed = move(bridge, queue, n)
            close_culsans(bridge, queue)
            return elapsed

        return run

    cases[("queue sync→async", "bridge.queue (janus)")] = janus_case(queue_sync_to_async)
    cases[("queue sync→async", "culsans")] = culsans_case(queue_sync_to_async)
    cases[("queue async→sync", "bridge.queue (janus)")] = janus_case(queue_async_to_sync)
    cases[("queue async→sync", "culsans")] = culsans_case(queue_async_to_sync)
    for buffer in (1, 64):
        cases[(f"iterate buffer={buffer}", "bridge.iterate")] = (
            lambda b, size=buffer: via_iterate(b, n, size))
        cases[(f"iterate buffer={buffer}", "culsans")] = (
            lambda b, size=buffer: via_culsans_pump(b, n, size))
    cases[("iterate buffer=1", "run() per item")] = lambda b: via_run_per_item(b, n)

    times: dict[tuple[str, str], list[float]] = {key: [] for key in cases}
    with AioThread(name="bm-streams") as bridge:
        for case in cases.values():  # warm-up
            case(bridge)
        for round_index in range(rounds):
            for key, case in cases.items():
                progress(f"round {round_index + 1}/{rounds}: {key[0]} / {key[1]}")
                times[key].append(case(bridge))

    rows: list[dict[str, Any]] = []
    for (transfer, variant), samples in times.items():
        seconds = statistics.median(samples)
        ratio = spread(ratio_rounds(times[(transfer, "culsans")], samples))
        rows.append(
            {
                "transfer": transfer,
                "variant": variant,
                "items": n,
                "rounds": rounds,
                "items_per_s": round(n / seconds),
                "us_per_item": round(seconds / n * 1e6, 2),
                "ratio_to_culsans": ratio["median"] if ratio else None,
                "ratio_to_culsans_spread": ratio,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """One row per transfer and variant, the ratio with its spread over rounds."""
    headers = ["transfer", "variant", "items/s", "µs/item",
               "speed vs culsans, median (min-max over rounds)"]  # fmt: skip
    return markdown_table(headers, ([
        row["transfer"], row["variant"], f"{row['items_per_s']:,}", f"{row['us_per_item']:.2f}",
        text(row.get("ratio_to_culsans_spread")),
    ] for row in rows), numeric_align(headers, 2))  # fmt: skip


def _measure(args: argparse.Namespace, progress: Progress) -> tuple[dict[str, Any], Rows]:
    n = args.items or (5_000 if args.quick else 50_000)
    rounds = args.rounds or (3 if args.quick else 5)
    rows = run_benchmark(rounds, n, progress)
    return {"items": n, "rounds": rounds, "queue_maxsize": QUEUE_MAXSIZE}, rows


def main(argv: list[str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the benchmark; returns ``{"name", "params", "rows"}``."""
    return main_for(NAME, __doc__, argv, progress, _measure, format_table,
                    options=[("--items", {"type": int, "help": "items per transfer"}),
                             rounds_option()])  # fmt: skip


if __name__ == "__main__":
    main()
