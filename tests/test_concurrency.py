"""Many threads at once: exact results, counters that add up, real concurrency."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aiobridge import AioThread

from .helpers import start_and_join

WAIT = 30.0


async def square(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_32_threads_x_300_calls_exact(loop_kind: str) -> None:
    threads, calls = 32, 300
    factory = None
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)
    with AioThread(loop_factory=factory) as bridge:

        def worker(index: int) -> None:
            try:
                barrier.wait(WAIT)
                base = index * calls
                results[index] = [bridge.run(square(base + i), timeout=WAIT) for i in range(calls)]
            except BaseException as exc:
                errors.append(exc)

        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        start_and_join(pool, WAIT * 2)
        assert errors == []
        for index in range(threads):
            base = index * calls
            assert results[index] == [(base + i) ** 2 for i in range(calls)]
        stats = bridge.stats()
    total = threads * calls
    assert stats.submitted == total
    assert stats.completed == total
    assert stats.failed == stats.cancelled == stats.timed_out == stats.in_flight == 0
    assert stats.queued == 0


def test_calls_from_many_threads_really_run_concurrently(bridge: AioThread) -> None:
    """Each call waits until all are in flight: only true concurrency completes it."""
    threads = 16
    state = {"arrived": 0}
    (all_here,) = bridge.run(_events(1))

    async def rendezvous() -> int:
        state["arrived"] += 1
        if state["arrived"] == threads:
            all_here.set()
        await all_here.wait()
        return state["arrived"]

    outcomes: list[int] = []
    pool = [
        threading.Thread(target=lambda: outcomes.append(bridge.run(rendezvous(), timeout=WAIT)))
        for _ in range(threads)
    ]
    start_and_join(pool, WAIT)
    assert outcomes == [threads] * threads


async def _events(n: int) -> list[asyncio.Event]:
    return [asyncio.Event() for _ in range(n)]


@pytest.mark.slow
def test_thread_storm_mixed_outcomes() -> None:
    """64 threads x 1,000 calls mixing success, errors, timeouts and cancellations."""
    import concurrent.futures

    threads, calls = 64, 1000
    counts = {"ok": 0, "error": 0, "timeout": 0, "cancel": 0}
    lock = threading.Lock()
    problems: list[str] = []

    async def job(i: int, gate: asyncio.Event) -> int:
        kind = i % 10
        if kind == 7:
            raise ValueError(i)
        if kind in (8, 9):
            await gate.wait()  # never set: ends by timeout (8) or cancellation (9)
        await asyncio.sleep(0)
        return i

    with AioThread() as bridge:
        (gate,) = bridge.run(_events(1))
        barrier = threading.Barrier(threads)

        def worker(index: int) -> None:
            local = {"ok": 0, "error": 0, "timeout": 0, "cancel": 0}
            barrier.wait(WAIT)
            for n in range(calls):
                i = index * calls + n
                kind = i % 10
                try:
                    if kind == 9:
                        future = bridge.submit(job(i, gate))
                        future.cancel()
                        try:
                            future.result(WAIT)
                        except concurrent.futures.CancelledError:
                            local["cancel"] += 1
                        continue
                    value = bridge.run(job(i, gate), timeout=0.01 if kind == 8 else WAIT)
                    if value != i:
                        problems.append(f"wrong result {value} for {i}")
                    local["ok"] += 1
                except ValueError as exc:
                    if exc.args != (i,):
                        problems.append(f"wrong error {exc!r} for {i}")
                    local["error"] += 1
                except TimeoutError:
                    local["timeout"] += 1
            with lock:
                for key, value in local.items():
                    counts[key] += value

        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        start_and_join(pool, 120)
        # Cancellations requested by the callers reach the loop before this call; it
        # waits for the tasks still finishing (their outcomes are counted as they end).
        leftover = bridge.run(_settle_other_tasks())
        stats = bridge.stats()
    total = threads * calls
    assert problems == []
    assert counts == {"ok": total * 7 // 10, "error": total // 10, "timeout": total // 10,
                      "cancel": total // 10}
    assert stats.completed == counts["ok"] + 2  # + the two bookkeeping calls above
    assert stats.failed == counts["error"]
    assert stats.timed_out == counts["timeout"]
    # A submit cancelled before the loop picked it up never runs; one cancelled
    # later is cancelled on the loop. Either way it is counted as cancelled.
    assert stats.cancelled == counts["timeout"] + counts["cancel"]
    assert stats.in_flight == 0
    assert stats.submitted == total + 2
    assert leftover == 0


async def _settle_other_tasks() -> int:
    """Wait (bounded) for every other task of the loop; return how many are still running.

    The bridge counts a call's outcome in its task's done callback, added when the
    task was made, so it has run by the time ``asyncio.wait`` (a later callback) returns.
    """
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current]
    if others:
        await asyncio.wait(others, timeout=WAIT)
    return len([t for t in others if not t.done()])
