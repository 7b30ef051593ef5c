"""Per-call overhead of running a trivial coroutine from synchronous code.

Measures ``bridge.run(noop())`` from 1 and from 32 caller threads side by side,
in one process and interleaved round by round, against the ways a sync program
can run a coroutine today:

* ``raw-rct``: ``asyncio.run_coroutine_threadsafe(noop(), loop).result()`` on a
  background loop thread: the baseline every ratio refers to;
* ``asyncio.run``: a new event loop per call (the embedded-loop anti-pattern);
* ``embedded-loop``: one loop reused with ``run_until_complete`` (single thread
  only: it breaks as soon as two threads share it);
* ``asgiref``: ``asgiref.sync.async_to_sync`` (what Flask's async views use);
* ``anyio-portal``: anyio's blocking portal (``portal.call``);
* ``aiobridge`` and ``aiobridge-uvloop``: this library on the default loop and
  on uvloop;
* ``aiobridge+metrics``: the default loop with :mod:`aiobridge.metrics`
  installed (prometheus_client counters, gauges and histograms on every call).
* ``aiobridge-onloop`` and ``aiobridge-onloop-uvloop``: the call made from a
  request greenlet on a loop the bridge adopted (``aiobridge.onloop``, the
  demo's ``bridge-loop`` mode), default loop and uvloop: a switch to the loop
  and back instead of a hand-off between threads
  (:mod:`benchmarks._onloop_caller`; one caller only, on the loop's thread).

Reported per variant: µs per call (wall time / calls), CPU µs per call (the
process's CPU time / calls: both sides of a hand-off), calls/s, p50 and p99 of
the per-call latency, and the ratio of µs/call to ``raw-rct`` in the same run.

Where the caller and the loop thread run decides most of a single caller's
time, so the single caller is measured in three placements (Linux, two CPUs
or more; elsewhere only the last):

* ``one CPU``: every thread of the process pinned to one CPU. A hand-off is
  then a plain thread switch, and the time is the CPU work of a call on both
  sides: the figure this library controls, steady from run to run. The
  single-caller targets are checked on it.
* ``two CPUs``: the caller on one CPU, every other thread on another. Each
  hand-off wakes a thread on the other CPU; on a virtual machine whose idle
  CPUs halt, that wake-up costs tens of µs, paid twice per call by every
  variant alike, so the ratios there tend to 1.
* ``unpinned``: where the scheduler puts them. Each loop thread settles into
  one of the two regimes above for seconds at a time, so a variant's figure
  moves between them from round to round (spreads of 0.1x-2x are common on a
  virtual machine): shown as measured, not used for a target.

Many caller threads are measured unpinned only.

Run: ``python -m benchmarks.bm_call_overhead [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .results import (
    Progress,
    Rows,
    cell,
    check,
    main_for,
    markdown_table,
    ratio_rounds,
    rounds_option,
    spread,
    text,
)

NAME = "call_overhead"
THREAD_COUNTS = (1, 32)
BASELINE = "raw-rct"
ONE_CPU, TWO_CPUS, UNPINNED = "one CPU", "two CPUs", "unpinned"
#: The placement the single-caller targets are checked on, when it can be made.
TARGET_PLACEMENT = ONE_CPU
#: The call from a request greenlet the CPU target reads: on uvloop, as uvicorn serves it.
ONLOOP_TARGET = "aiobridge-onloop-uvloop"

Caller = Callable[[], object]


async def noop() -> None:
    return None


# -- the variants: each yields a thread-safe (or single-thread) caller ---------------


@contextlib.contextmanager
def raw_rct() -> Iterator[Caller]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="raw-rct", daemon=True)
    thread.start()
    try:
        yield lambda: asyncio.run_coroutine_threadsafe(noop(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def asyncio_run() -> Iterator[Caller]:
    yield lambda: asyncio.run(noop())


@contextlib.contextmanager
def embedded_loop() -> Iterator[Caller]:
    loop = asyncio.new_event_loop()
    try:
        yield lambda: loop.run_until_complete(noop())
    finally:
        loop.close()


@contextlib.contextmanager
def asgiref_sync() -> Iterator[Caller]:
    from asgiref.sync import async_to_sync

    yield async_to_sync(noop)


@contextlib.contextmanager
def anyio_portal() -> Iterator[Caller]:
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal() as portal:
        yield lambda: portal.call(noop)


@contextlib.contextmanager
def aiobridge_default() -> Iterator[Caller]:
    from aiobridge import AioThread

    with AioThread(name="bm-bridge") as bridge:
        yield lambda: bridge.run(noop())


@contextlib.contextmanager
def aiobridge_uvloop() -> Iterator[Caller]:
    import uvloop

    from aiobridge import AioThread

    with AioThread(name="bm-bridge-uvloop", loop_factory=uvloop.new_event_loop) as bridge:
        yield lambda: bridge.run(noop())


@contextlib.contextmanager
def aiobridge_metrics() -> Iterator[Caller]:
    from prometheus_client import CollectorRegistry

    from aiobridge import AioThread, metrics

    if metrics.installed() is not None:
        raise RuntimeError("aiobridge.metrics is already installed in this process")
    metrics.install(CollectorRegistry())
    try:
        # The observer is attached when the loop starts; the bridges of the
        # other variants, started before or after, stay unobserved.
        bridge = AioThread(name="bm-bridge-metrics").start()
    finally:
        metrics.uninstall()
    with bridge:
        yield lambda: bridge.run(noop())


@contextlib.contextmanager
def aiobridge_onloop() -> Iterator[Caller]:
    from ._onloop_caller import on_loop_caller

    with on_loop_caller(asyncio.new_event_loop, noop) as caller:
        yield caller


@contextlib.contextmanager
def aiobridge_onloop_uvloop() -> Iterator[Caller]:
    import uvloop

    from ._onloop_caller import on_loop_caller

    with on_loop_caller(uvloop.new_event_loop, noop) as caller:
        yield caller


VARIANTS: dict[str, tuple[Callable[[], contextlib.AbstractContextManager[Caller]], bool]] = {
    # name: (factory, safe from many threads)
    "raw-rct": (raw_rct, True),
    "aiobridge": (aiobridge_default, True),
    "aiobridge-uvloop": (aiobridge_uvloop, True),
    "aiobridge+metrics": (aiobridge_metrics, True),
    "aiobridge-onloop": (aiobridge_onloop, False),
    "aiobridge-onloop-uvloop": (aiobridge_onloop_uvloop, False),
    "anyio-portal": (anyio_portal, True),
    "asgiref": (asgiref_sync, True),
    "embedded-loop": (embedded_loop, False),
    "asyncio.run": (asyncio_run, True),
}


# -- measurement ------------------------------------------------------------------------


# -- placement: which CPUs the caller and the other threads run on --------------------


def placements() -> list[str]:
    """The placements this machine can make: all three on Linux with two CPUs or more."""
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        return [UNPINNED]
    if len(os.sched_getaffinity(0)) < 2:
        return [UNPINNED]
    return [ONE_CPU, TWO_CPUS, UNPINNED]


def _process_threads() -> list[int]:
    return [int(tid) for tid in os.listdir("/proc/self/task")]


def _set_affinity(tid: int, cpus: set[int]) -> None:
    with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
        os.sched_setaffinity(tid, cpus)


@contextlib.contextmanager
def placed(placement: str, callers: list[int]) -> Iterator[None]:
    """Pin the ``callers`` (native thread ids) and every other thread for ``placement``.

    Threads started meanwhile inherit their starter's CPUs. Every thread gets
    the process's original CPUs back afterwards.
    """
    if placement == UNPINNED:
        yield
        return
    allowed = sorted(os.sched_getaffinity(0))
    caller_cpus = {allowed[0]}
    other_cpus = {allowed[0]} if placement == ONE_CPU else {allowed[1]}
    try:
        for tid in _process_threads():
            _set_affinity(tid, caller_cpus if tid in callers else other_cpus)
        yield
    finally:
        for tid in _process_threads():
            _set_affinity(tid, set(allowed))


def measure(
    call: Caller, threads: int, calls_per_thread: int, placement: str = UNPINNED
) -> tuple[float, list[float], float]:
    """Run the calls in ``placement``: (wall s, per-call latencies s, the process's CPU s).

    A caller made on the loop (``call.on_loop``) makes its calls in a request
    greenlet on the loop's thread, which is then the thread placed as the caller.
    """
    if getattr(call, "on_loop", False):
        with placed(placement, [call.native_id]):  # type: ignore[attr-defined]
            cpu = time.process_time()
            wall, lats, _ = call.measure(calls_per_thread)  # type: ignore[attr-defined]
            return wall, lats, time.process_time() - cpu
    latencies: list[list[float]] = [[] for _ in range(threads)]
    ready = threading.Barrier(threads + 1)
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []
    callers: list[int] = []

    def worker(index: int) -> None:
        record = latencies[index].append
        clock = time.perf_counter
        callers.append(threading.get_native_id())
        try:
            ready.wait(60)
            barrier.wait(60)
            for _ in range(calls_per_thread):
                start = clock()
                call()
                record(clock() - start)
        except BaseException as exc:
            errors.append(exc)
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(60)

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    ready.wait(60)
    with placed(placement, callers):
        barrier.wait(60)
        started, cpu = time.perf_counter(), time.process_time()
        barrier.wait(600)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    for thread in pool:
        thread.join(60)
    if errors:
        raise errors[0]
    return wall, [lat for per_thread in latencies for lat in per_thread], cpu


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def run_benchmark(
    rounds: int, calls_single: int, calls_per_thread: int, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for threads in THREAD_COUNTS:
        per_thread = calls_single if threads == 1 else calls_per_thread
        where = placements() if threads == 1 else [UNPINNED]
        walls: dict[tuple[str, str], list[float]] = {}
        cpus: dict[tuple[str, str], list[float]] = {}
        lats: dict[tuple[str, str], list[float]] = {}
        with contextlib.ExitStack() as stack:
            callers = {}
            for name, (factory, thread_safe) in VARIANTS.items():
                if threads > 1 and not thread_safe:
                    continue
                callers[name] = stack.enter_context(factory())
                for _ in range(min(200, per_thread)):  # warm-up
                    callers[name]()
            for round_index in range(rounds):
                for placement in where:
                    for name, call in callers.items():
                        progress(f"{threads} thread(s), {placement}, round "
                                 f"{round_index + 1}/{rounds}: {name}")  # fmt: skip
                        wall, latencies, cpu = measure(call, threads, per_thread, placement)
                        walls.setdefault((name, placement), []).append(wall)
                        cpus.setdefault((name, placement), []).append(cpu)
                        lats.setdefault((name, placement), []).extend(latencies)
        calls = threads * per_thread
        for name, placement in walls:
            key = (name, placement)
            us = statistics.median(walls[key]) / calls * 1e6
            ordered = sorted(lats[key])
            ratio = spread(ratio_rounds(walls[key], walls[(BASELINE, placement)]))
            rows.append(
                {
                    "variant": name,
                    "threads": threads,
                    "placement": placement,
                    "calls_per_round": calls,
                    "rounds": rounds,
                    "us_per_call": round(us, 2),
                    "cpu_us_per_call": round(statistics.median(cpus[key]) / calls * 1e6, 2),
                    "calls_per_s": round(1e6 / us, 1),
                    "p50_us": round(percentile(ordered, 0.50) * 1e6, 2),
                    "p99_us": round(percentile(ordered, 0.99) * 1e6, 2),
                    "ratio_to_raw": ratio["median"] if ratio else None,
                    "ratio_to_raw_spread": ratio,
                    "wall_rounds": [round(wall, 6) for wall in walls[key]],
                }
            )
    return rows


def check_targets(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The targets of the call-overhead issue, evaluated on this run's ratios."""

    single = TARGET_PLACEMENT if any(
        row.get("placement") == TARGET_PLACEMENT for row in rows) else UNPINNED  # fmt: skip

    def walls(variant: str, threads: int, placement: str) -> list[float]:
        for row in rows:
            if (row["variant"], row["threads"], row.get("placement", UNPINNED)) == (
                    variant, threads, placement):  # fmt: skip
                return [float(wall) for wall in row["wall_rounds"]]
        raise KeyError(variant)

    def slower(a: str, b: str, threads: int = 1) -> dict[str, Any] | None:
        """``a``'s time per call over ``b``'s, round by round."""
        placement = single if threads == 1 else UNPINNED
        return spread(ratio_rounds(walls(a, threads, placement), walls(b, threads, placement)))

    on = f" ({single})"
    targets = {
        f"single caller <= 0.7x raw rct{on}": (slower("aiobridge", BASELINE), "<=", 0.7),
        f"metrics on, single caller <= 0.75x raw rct{on}": (
            slower("aiobridge+metrics", BASELINE), "<=", 0.75),
        f"uvloop single caller <= 0.65x raw rct{on}": (
            slower("aiobridge-uvloop", BASELINE), "<=", 0.65),
        f">= 4x faster than asgiref{on}": (slower("asgiref", "aiobridge"), ">=", 4.0),
        f">= 1.5x faster than anyio portal{on}": (
            slower("anyio-portal", "aiobridge"), ">=", 1.5),
        "32 threads >= 1.3x raw calls/s": (slower(BASELINE, "aiobridge", 32), ">=", 1.3),
    }
    checked = {label: check(ratio["median"] if ratio else None, op, bound, ratio,
                            bound_text=str(bound))
               for label, (ratio, op, bound) in targets.items()}  # fmt: skip
    cpu = next((row.get("cpu_us_per_call") for row in rows
                if (row["variant"], row["threads"], row.get("placement", UNPINNED))
                == (ONLOOP_TARGET, 1, single)), None)  # fmt: skip
    checked[f"one call from a request greenlet ({ONLOOP_TARGET}) <= 5 µs of CPU{on}"] = check(
        cpu, "<=", 5.0)
    return checked


def format_table(rows: list[dict[str, Any]]) -> str:
    """One row per variant, thread count and placement, the ratio with its spread."""
    headers = ["variant", "threads", "placement", "µs/call", "CPU µs/call", "calls/s", "p50 µs",
               "p99 µs", "x raw rct, median (min-max over rounds)"]  # fmt: skip
    return markdown_table(headers, ([
        row["variant"], str(row["threads"]), row.get("placement", UNPINNED),
        f"{row['us_per_call']:.1f}", cell(row.get("cpu_us_per_call")),
        f"{row['calls_per_s']:,.0f}", f"{row['p50_us']:.1f}",
        f"{row['p99_us']:.1f}", text(row.get("ratio_to_raw_spread")),
    ] for row in rows), "---|---:|---|" + "---:|" * 6)  # fmt: skip


def _measure(args: argparse.Namespace, progress: Progress) -> tuple[dict[str, Any], Rows]:
    rounds = args.rounds or (3 if args.quick else 7)
    calls_single = 1000 if args.quick else 5000
    calls_per_thread = 40 if args.quick else 200
    params = {
        "rounds": rounds,
        "calls_single_thread": calls_single,
        "calls_per_thread_at_32": calls_per_thread,
        "thread_counts": list(THREAD_COUNTS),
        "baseline": BASELINE,
    }
    return params, run_benchmark(rounds, calls_single, calls_per_thread, progress)


def main(argv: list[str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the benchmark; returns ``{"name", "params", "rows", "targets"}``."""
    return main_for(NAME, __doc__, argv, progress, _measure, format_table,
                    options=[rounds_option("interleaved rounds per variant")],
                    targets=check_targets)  # fmt: skip


if __name__ == "__main__":
    main()
