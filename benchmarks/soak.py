"""Soak: a million bridge calls, resident memory sampled every 100,000.

Run it with ``python -m benchmarks.soak`` (``--calls 200000`` for a shorter run).
Four threads share one :class:`~aiobridge.AioThread` and mix every outcome a
call can have: plain results through ``run``, futures through ``submit``,
groups through ``gather``, exceptions, timeouts and cancellations. The
process's RSS (psutil) is sampled after each block of calls, after a
``gc.collect()``; growth is measured from the first sample (taken after a
warm-up, so allocator pools, caches and the lag-sample ring are already full)
to the last. The run passes if growth stays within ``--max-growth-mb``
(default 10 MB) and the bridge's counters add up.

``main(argv)`` returns the figures as a dict and prints a table::

         calls   RSS MB   growth MB   calls/s
       100,000     41.2       +0.00    38,512
       ...
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import sys
import time
from typing import Any

import psutil

from aiobridge import AioThread

__all__ = ("main",)

THREADS = 4
WARMUP = 20_000
_TIMEOUT_EVERY = 1_000  # a timeout costs its full wait: keep them rare
_MB = 1024 * 1024


async def _value(i: int) -> int:
    await asyncio.sleep(0)
    return i


async def _fail(i: int) -> int:
    raise ValueError(i)


async def _forever(gate: asyncio.Event) -> int:
    await gate.wait()
    return -1


async def _event() -> asyncio.Event:
    return asyncio.Event()


def _one(bridge: AioThread, gate: asyncio.Event, i: int) -> str:
    """One call of a kind chosen by ``i``; returns the outcome seen by the caller."""
    if i % _TIMEOUT_EVERY == 0:
        try:
            bridge.run(_forever(gate), timeout=0.001)
        except TimeoutError:
            return "timeout"
        raise AssertionError("a call that never finishes returned")
    kind = i % 20
    if kind == 1:
        try:
            bridge.run(_fail(i))
        except ValueError:
            return "error"
        raise AssertionError("a failing call returned")
    if kind == 2:
        future = bridge.submit(_forever(gate))
        future.cancel()
        return "cancel"
    if kind == 3:
        if bridge.gather(_value(i), _value(i + 1)) != [i, i + 1]:
            raise AssertionError("gather returned wrong results")
        return "ok"
    if kind == 4:
        if bridge.submit(_value(i)).result(30) != i:
            raise AssertionError("submit returned a wrong result")
        return "ok"
    if bridge.run(_value(i)) != i:
        raise AssertionError("run returned a wrong result")
    return "ok"


def _block(bridge: AioThread, gate: asyncio.Event, start: int, stop: int) -> dict[str, int]:
    seen = {"ok": 0, "error": 0, "timeout": 0, "cancel": 0}
    for i in range(start, stop):
        seen[_one(bridge, gate, i)] += 1
    return seen


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=1_000_000, help="total calls (1,000,000)")
    parser.add_argument("--every", type=int, default=100_000, help="calls between samples")
    parser.add_argument("--threads", type=int, default=THREADS, help="caller threads (4)")
    parser.add_argument("--max-growth-mb", type=float, default=10.0, help="pass bound (10 MB)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the soak and return its figures (also printed as a table)."""
    args = _parser().parse_args(argv)
    every = max(1, min(args.every, args.calls))
    outcomes = {"ok": 0, "error": 0, "timeout": 0, "cancel": 0}
    samples: list[dict[str, float]] = []
    print(f"soak: {args.calls:,} bridge calls from {args.threads} threads, "
          f"RSS sampled every {every:,}", flush=True)  # fmt: skip
    print(f"{'calls':>12} {'RSS MB':>8} {'growth MB':>11} {'calls/s':>9}", flush=True)
    started = time.perf_counter()
    with (
        AioThread(name="soak") as bridge,
        concurrent.futures.ThreadPoolExecutor(
            args.threads, thread_name_prefix="soak-caller"
        ) as pool,
    ):
        gate = bridge.run(_event())

        def run_calls(first: int, count: int) -> None:
            share = -(-count // args.threads)
            blocks = [
                pool.submit(_block, bridge, gate, lo, min(lo + share, first + count))
                for lo in range(first, first + count, share)
            ]
            for block in blocks:
                for key, value in block.result().items():
                    outcomes[key] += value

        run_calls(args.calls, min(WARMUP, args.calls))  # warm-up, not counted below
        warm = outcomes.copy()
        baseline = _rss()
        done = 0
        while done < args.calls:
            block_started = time.perf_counter()
            count = min(every, args.calls - done)
            run_calls(done, count)
            done += count
            rss = _rss()
            rate = count / (time.perf_counter() - block_started)
            samples.append({"calls": done, "rss_mb": rss / _MB,
                            "growth_mb": (rss - baseline) / _MB, "calls_per_s": rate})  # fmt: skip
            print(f"{done:>12,} {rss / _MB:>8.1f} {(rss - baseline) / _MB:>+11.2f} {rate:>9,.0f}",
                  flush=True)  # fmt: skip
        bridge.run(asyncio.sleep(0.05))  # the last cancellations have landed
        stats = bridge.stats()
    seconds = time.perf_counter() - started
    counted = {key: outcomes[key] - warm[key] for key in outcomes}
    settled = stats.completed + stats.failed + stats.cancelled + stats.in_flight
    growth = max(s["growth_mb"] for s in samples) if samples else 0.0
    final = samples[-1]["growth_mb"] if samples else 0.0
    result: dict[str, Any] = {
        "calls": args.calls,
        "threads": args.threads,
        "seconds": round(seconds, 2),
        "calls_per_s": round((args.calls + min(WARMUP, args.calls)) / seconds),
        "baseline_rss_mb": round(baseline / _MB, 2),
        "samples": samples,
        "growth_mb": round(final, 2),
        "peak_growth_mb": round(growth, 2),
        "outcomes": counted,
        "stats": stats.as_dict(),
        "counters_add_up": settled == stats.submitted and stats.in_flight == 0,
    }
    result["ok"] = bool(growth <= args.max_growth_mb and result["counters_add_up"])
    print(f"growth {final:+.2f} MB (peak {growth:+.2f}, bound {args.max_growth_mb} MB); "
          f"outcomes {counted}; {result['calls_per_s']:,} calls/s; "
          f"{'PASS' if result['ok'] else 'FAIL'}", flush=True)  # fmt: skip
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
