"""Observability (SPEC §3.4): lag probe and slow-callback detection with location."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from aiobridge import AioThread
from tests.helpers import wait_until


def test_blocking_coroutine_is_detected_with_its_location(caplog: pytest.LogCaptureFixture) -> None:
    async def blocks_the_loop() -> None:
        time.sleep(0.4)  # the mistake under test: blocking code inside a coroutine

    async def quick() -> str:
        return "ok"

    caplog.set_level(logging.WARNING, logger="aiobridge")
    with AioThread(slow_callback_duration=0.05) as bridge:
        blocked = bridge.submit(blocks_the_loop())
        after = bridge.submit(quick())  # queued behind the blocker, still completes
        blocked.result(10)
        assert after.result(10) == "ok"
        bridge.run(asyncio.sleep(0.2))  # a few probe periods after the stall
        stats = bridge.stats()
    assert stats.slow_callbacks >= 1
    assert stats.loop_lag_max >= 0.2
    assert stats.loop_lag_max >= stats.loop_lag_p99 >= stats.loop_lag_p50 >= 0
    located = [r.getMessage() for r in caplog.records if "blocks_the_loop" in r.getMessage()]
    assert located, [r.getMessage() for r in caplog.records]
    assert "test_monitor.py" in located[0]


def test_healthy_loop_reports_small_lag_and_no_slow_callbacks() -> None:
    with AioThread(slow_callback_duration=0.5) as bridge:
        bridge.run(asyncio.sleep(0.6))  # at least two probe periods
        stats = bridge.stats()
    assert stats.slow_callbacks == 0
    assert 0 <= stats.loop_lag_p50 < 0.25
    assert stats.as_dict()["slow_callbacks"] == 0


@pytest.mark.parametrize("loop", ["default", "uvloop"])
def test_an_idle_loop_thread_is_seen_idle_by_the_watchdog(loop: str) -> None:
    import sys

    factory = None
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    with AioThread(name=f"idle-{loop}", loop_factory=factory) as bridge:
        bridge.run(asyncio.sleep(0))
        thread = bridge.thread
        assert thread is not None and thread.ident is not None
        is_idle = bridge._portal._loop_thread.monitor.is_idle
        # Starved of the GIL while idle, the thread must not be reported as stuck.
        ident = thread.ident
        # Caught between two callbacks: look again.
        wait_until(lambda: is_idle(sys._current_frames()[ident]),
                   lambda: f"idle, not {sys._current_frames()[ident].f_code}", interval=0.01)


def _hold_the_gil(seconds: float) -> None:
    """Keep the GIL in C code (as a garbage collection does) for about ``seconds``."""
    started = time.perf_counter()
    sum(range(1_000_000))
    per_million = time.perf_counter() - started
    sum(range(int(seconds / max(per_million, 1e-6) * 1_000_000)))


def test_a_stall_of_the_whole_process_is_not_blamed_on_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The GIL held elsewhere stalls the loop mid-callback; the watchdog, stalled as
    well, must not report it as blocking code in a coroutine."""
    caplog.set_level(logging.WARNING, logger="aiobridge")
    spinning = threading.Event()
    stop = threading.Event()

    async def always_in_a_callback() -> None:  # never idle in select()
        spinning.set()
        while not stop.is_set():
            await asyncio.sleep(0)

    with AioThread(name="starved", slow_callback_duration=0.05) as bridge:
        busy = bridge.submit(always_in_a_callback())
        assert spinning.wait(10)
        for _ in range(5):
            _hold_the_gil(0.3)
            bridge.run(asyncio.sleep(0.1))  # a few watchdog periods after each stall
        stop.set()
        busy.result(10)
        stats = bridge.stats()
    assert stats.loop_lag_max >= 0.2  # the stall happened, and the lag probe saw it
    assert stats.slow_callbacks == 0, [r.getMessage() for r in caplog.records]
