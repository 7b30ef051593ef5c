"""Load and loop abuse, on top of ``tests/test_concurrency.py`` and ``tests/test_monitor.py``.

``test_concurrency.py::test_thread_storm_mixed_outcomes`` storms an unbounded
bridge (64 threads x 1,000 calls). Here the same kind of storm meets
*backpressure* (``max_in_flight``): calls that time out or are cancelled while
they still wait for a slot, groups (``gather``) among single calls, and a
high-water mark that must never pass the limit. ``test_monitor.py`` detects a
blocking coroutine on a bare bridge; here it is an ``async def`` Flask view
under the extension, while other requests keep being served.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any

import pytest

from aiobridge import AioThread
from aiobridge.flask import AioBridge
from aiobridge.pytest_plugin import FlaskAppFactory

from .helpers import start_and_join

WAIT = 60.0
OUTCOMES = ("ok", "error", "timeout", "cancel", "group")


@pytest.mark.slow
def test_storm_under_backpressure_exact_outcomes_and_bounded_concurrency() -> None:
    threads, calls, limit = 32, 500, 8
    running = {"now": 0, "high": 0}
    counts = dict.fromkeys(OUTCOMES, 0)
    problems: list[str] = []
    lock = threading.Lock()

    async def job(i: int, gate: asyncio.Event) -> int:
        running["now"] += 1  # on the loop thread only: no lock needed
        running["high"] = max(running["high"], running["now"])
        try:
            kind = i % 10
            if kind == 6:
                raise ValueError(i)
            if kind in (7, 8):
                await gate.wait()  # never set: ends by timeout (7) or cancellation (8)
            await asyncio.sleep(0)
            return i
        finally:
            running["now"] -= 1

    async def plain(i: int) -> int:
        await asyncio.sleep(0)
        return i

    with AioThread(name="storm-bp", max_in_flight=limit) as bridge:
        gate = bridge.run(_event())
        barrier = threading.Barrier(threads)

        def one(i: int) -> str:
            kind = i % 10
            try:
                if kind == 8:
                    future = bridge.submit(job(i, gate))
                    future.cancel()
                    future.exception(WAIT) if not future.cancelled() else None
                    return "cancel"
                if kind == 9:
                    got = bridge.gather(plain(i), plain(-i), timeout=WAIT)
                    if got != [i, -i]:
                        problems.append(f"gather {i}: {got}")
                    return "group"
                value = bridge.run(job(i, gate), timeout=0.005 if kind == 7 else WAIT)
                if value != i:
                    problems.append(f"run {i}: {value}")
                return "ok"
            except ValueError as exc:
                if exc.args != (i,):
                    problems.append(f"error {i}: {exc!r}")
                return "error"
            except TimeoutError:
                return "timeout"
            except concurrent.futures.CancelledError:
                return "cancel"

        def worker(index: int) -> None:
            local = dict.fromkeys(OUTCOMES, 0)
            barrier.wait(WAIT)
            deadline = time.monotonic() + WAIT
            for n in range(calls):
                if time.monotonic() > deadline:
                    problems.append(f"thread {index} ran out of time at call {n}")
                    break
                local[one(index * calls + n)] += 1
            with lock:
                for key, value in local.items():
                    counts[key] += value

        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        start_and_join(pool, WAIT * 2)
        bridge.run(asyncio.sleep(0.05))  # cancellations requested by callers have landed
        stats = bridge.stats()
        leftover = bridge.run(_other_tasks())
    total = threads * calls
    assert problems == []
    tenth = total // 10
    assert counts == {"ok": tenth * 6, "error": tenth, "timeout": tenth, "cancel": tenth,
                      "group": tenth}  # fmt: skip
    assert running["high"] <= limit
    assert running["now"] == 0
    # Counters add up: every call (the bookkeeping ones included) settled exactly once.
    assert stats.submitted == total + 2  # + the event and the sleep; a gather is one call
    assert stats.in_flight == 0 and stats.queued == 0
    assert stats.completed + stats.failed + stats.cancelled + stats.in_flight == stats.submitted
    assert stats.failed == counts["error"]
    assert stats.timed_out == counts["timeout"]
    assert stats.cancelled == counts["timeout"] + counts["cancel"]
    assert leftover == 0


async def _event() -> asyncio.Event:
    return asyncio.Event()


async def _other_tasks() -> int:
    current = asyncio.current_task()
    return len([t for t in asyncio.all_tasks() if t is not current and not t.done()])


def test_blocking_async_view_is_detected_and_other_requests_still_complete(
    caplog: pytest.LogCaptureFixture, aiobridge_make_flask_app: FlaskAppFactory
) -> None:
    app = aiobridge_make_flask_app(__name__, AIOBRIDGE_SLOW_CALLBACK=0.05,
                                   AIOBRIDGE_THREAD_NAME="abuse")
    entered = threading.Event()

    @app.get("/block")
    async def blocking_view() -> dict[str, Any]:
        entered.set()
        time.sleep(0.4)  # the mistake under test: blocking code in an async view
        return {"blocked": True}

    @app.get("/fast")
    async def fast_view() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"fast": True}

    caplog.set_level(logging.WARNING, logger="aiobridge")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        blocked = pool.submit(lambda: app.test_client().get("/block").status_code)
        assert entered.wait(WAIT)
        # Sent while the loop is held: they wait behind it, then all complete.
        fast = [pool.submit(lambda: app.test_client().get("/fast").status_code)
                for _ in range(20)]  # fmt: skip
        statuses = [f.result(WAIT) for f in fast] + [blocked.result(WAIT)]
    bridge = AioBridge().get_bridge(app)
    bridge.run(asyncio.sleep(0.2))  # a few probe periods after the stall
    stats = bridge.stats()
    assert statuses == [200] * 21
    assert stats.slow_callbacks >= 1
    assert stats.loop_lag_max >= 0.2
    assert stats.failed == 0
    located = [r.getMessage() for r in caplog.records if "blocking_view" in r.getMessage()]
    assert located, [r.getMessage() for r in caplog.records]
    assert "test_reliability_load.py" in located[0]


def test_soak_script_runs_and_reports_its_curve() -> None:
    """``benchmarks/soak.py`` (run by hand for 1,000,000 calls) stays runnable: a short run."""
    from benchmarks import soak

    result = soak.main(["--calls", "3000", "--every", "1000"])
    assert [s["calls"] for s in result["samples"]] == [1000, 2000, 3000]
    assert result["counters_add_up"] and result["ok"]
    assert sum(result["outcomes"].values()) == 3000
