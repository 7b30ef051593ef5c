"""The observer hook of the core: every counter change reaches an installed observer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aiobridge import AioThread, BridgeTimeoutError
from aiobridge.monitor import Observer, Outcome, set_observer_factory

from .helpers import run_in_fork, wait_until


class Recorder(Observer):
    """Keeps what it is told; figures are read after the bridge has stopped or quietened."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.starts: list[bool] = []
        self.in_flight_now = 0
        self.in_flight_peak = 0
        self.queued_now = 0
        self.queued_peak = 0
        self.outcomes: list[tuple[Outcome, float | None]] = []
        self.lags: list[float] = []
        self.slow = 0
        self.lag_seen = threading.Event()

    def loop_started(self, after_fork: bool) -> None:
        self.starts.append(after_fork)

    def in_flight(self, delta: int) -> None:
        self.in_flight_now += delta
        self.in_flight_peak = max(self.in_flight_peak, self.in_flight_now)

    def queued(self, delta: int) -> None:
        self.queued_now += delta
        self.queued_peak = max(self.queued_peak, self.queued_now)

    def finished(self, outcome: Outcome, seconds: float | None) -> None:
        self.outcomes.append((outcome, seconds))

    def lag(self, seconds: float) -> None:
        self.lags.append(seconds)
        self.lag_seen.set()

    def slow_callback(self) -> None:
        self.slow += 1


@pytest.fixture
def recorders() -> Iterator[dict[str, Recorder]]:
    made: dict[str, Recorder] = {}

    def factory(loop_thread: Any) -> Recorder:
        made[loop_thread.name] = recorder = Recorder(loop_thread.name)
        return recorder

    set_observer_factory(factory)
    try:
        yield made
    finally:
        set_observer_factory(None)


def test_every_outcome_reaches_the_observer(recorders: dict[str, Recorder]) -> None:
    async def boom() -> None:
        raise ValueError("boom")

    async def slow(gate: asyncio.Event) -> None:
        await gate.wait()

    with AioThread(name="observed") as bridge:
        assert bridge.run(asyncio.sleep(0.01, result=1)) == 1
        with pytest.raises(ValueError):
            bridge.run(boom())
        with pytest.raises(BridgeTimeoutError):
            bridge.run(asyncio.sleep(30), timeout=0.05)
        # The caller gave up; the loop reports the cancelled task a moment later.
        wait_until(lambda: len(recorders["observed"].outcomes) == 3, "3 outcomes observed")
        gate = bridge.run(_make_event())
        future = bridge.submit(slow(gate))
        wait_until(lambda: recorders["observed"].in_flight_now == 1, "1 call observed in flight")
        future.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(10)
        wait_until(lambda: len(recorders["observed"].outcomes) == 5, "5 outcomes observed")
    recorder = recorders["observed"]
    assert [outcome for outcome, _ in recorder.outcomes] == [
        "completed", "failed", "timed_out", "completed", "cancelled",
    ]
    completed_seconds = recorder.outcomes[0][1]
    assert completed_seconds is not None and completed_seconds >= 0.01
    assert recorder.in_flight_now == 0
    assert recorder.starts == [False]
    stats = bridge.stats()
    assert (stats.completed, stats.failed, stats.cancelled, stats.timed_out) == (2, 1, 2, 1)


def test_calls_waiting_for_a_slot_are_reported_queued(recorders: dict[str, Recorder]) -> None:
    with AioThread(name="narrow", max_in_flight=1) as bridge:
        gate = bridge.run(_make_event())
        futures = [bridge.submit(gate.wait()) for _ in range(3)]
        wait_until(lambda: recorders["narrow"].queued_now == 2, "2 calls observed queued")
        assert bridge.stats().queued == 2
        late = bridge.submit(asyncio.sleep(30), timeout=0.05)  # times out while queued
        with pytest.raises(BridgeTimeoutError):
            late.result(10)
        bridge.call_soon(gate.set)
        for future in futures:
            future.result(10)
    recorder = recorders["narrow"]
    assert recorder.queued_peak == 3
    assert recorder.queued_now == 0 and recorder.in_flight_now == 0
    assert recorder.in_flight_peak == 1
    assert ("timed_out", None) in recorder.outcomes  # never ran: no duration
    assert sorted(o for o, _ in recorder.outcomes) == ["completed"] * 4 + ["timed_out"]


def test_lag_samples_and_slow_callbacks_reach_the_observer(
    recorders: dict[str, Recorder],
) -> None:
    async def blocks_the_loop() -> None:
        time.sleep(0.3)  # the mistake the watchdog reports

    with AioThread(name="lagged", slow_callback_duration=0.05) as bridge:
        bridge.run(blocks_the_loop())
        recorder = recorders["lagged"]
        recorder.lag_seen.clear()
        assert recorder.lag_seen.wait(10)
        wait_until(lambda: max(recorder.lags) >= 0.2, "a lag of 0.2 s or more observed")
    assert recorder.slow >= 1
    assert recorder.slow == bridge.stats().slow_callbacks


def test_a_loop_restarted_in_a_forked_child_is_reported(recorders: dict[str, Recorder]) -> None:
    with AioThread(name="forked") as bridge:
        bridge.run(asyncio.sleep(0))

        def child() -> str:
            bridge.run(asyncio.sleep(0))
            return repr(recorders["forked"].starts)

        assert run_in_fork(child) == "[True]"
        assert recorders["forked"].starts == [False]


def test_no_observer_without_a_factory() -> None:
    with AioThread(name="plain") as bridge:
        bridge.run(asyncio.sleep(0))
        assert bridge._portal._loop_thread.observer is None


async def _make_event() -> asyncio.Event:
    return asyncio.Event()


def test_a_failing_observer_factory_leaves_the_bridge_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(loop_thread: Any) -> Observer:
        raise OSError("metrics directory is gone")

    set_observer_factory(broken)
    try:
        with AioThread(name="unobserved") as bridge:
            assert bridge.run(asyncio.sleep(0, result=7)) == 7
            assert bridge._portal._loop_thread.observer is None
    finally:
        set_observer_factory(None)
    assert any("runs unobserved" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("loop_factory", [None, asyncio.new_event_loop],
                         ids=["default loop", "loop_factory"])  # fmt: skip
def test_gauges_are_up_to_date_for_whoever_a_call_wakes(
    recorders: dict[str, Recorder], loop_factory: object
) -> None:
    """Batched or not, a caller that got its result sees the gauges counting it out."""

    async def seen_running(name: str) -> int:
        await asyncio.sleep(0)  # a later pass of the loop: told by now in both modes
        return recorders[name].in_flight_now

    with AioThread(name="gauged", loop_factory=loop_factory) as bridge:  # type: ignore[arg-type]
        for _ in range(50):
            bridge.run(asyncio.sleep(0))
            assert recorders["gauged"].in_flight_now == 0
        gate = bridge.run(_make_event())
        held = [bridge.submit(gate.wait()) for _ in range(3)]
        wait_until(lambda: recorders["gauged"].in_flight_now == 3, "3 calls observed in flight")
        assert bridge.run(seen_running("gauged")) in (3, 4)  # 4 if told while it ran
        bridge.call_soon(gate.set)
        for future in held:
            future.result(10)
        assert recorders["gauged"].in_flight_now == 0
        assert recorders["gauged"].in_flight_peak <= 4
