"""Observability (SPEC §3.4): lag probe and slow-callback detection with location."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from aiobridge import AioThread


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
