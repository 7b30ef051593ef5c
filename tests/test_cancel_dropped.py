"""A coroutine that drops aiobridge's cancellation: counted, logged once, outcome kept.

The coroutines here catch ``CancelledError`` on purpose, as a library with a
cancellation bug does by accident (``asyncio.wait_for`` on Python 3.11,
CPython gh-86296). The caller must still see its timeout or cancellation, and
``stats()`` and the log must say which coroutine did it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading

import pytest

from aiobridge import AioThread
from aiobridge._core import cancellation as _redeliver
from tests.helpers import WAIT, run_python, wait_until


class Swallower:
    """Runs on the loop; catches the first cancellation and returns or raises instead."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.ended = threading.Event()

    async def returns_after_cancel(self) -> str:
        try:
            self.started.set()
            await asyncio.sleep(WAIT * 3)
            return "finished"
        except asyncio.CancelledError:
            return "went on"  # the dropped cancellation
        finally:
            self.ended.set()

    async def raises_after_cancel(self) -> str:
        try:
            self.started.set()
            await asyncio.sleep(WAIT * 3)
            return "finished"
        except asyncio.CancelledError:
            raise LookupError("turned the cancellation into an error") from None
        finally:
            self.ended.set()

    def wait_started(self) -> None:
        assert self.started.wait(WAIT), "the coroutine did not start"

    def wait_ended(self) -> None:
        assert self.ended.wait(WAIT), "the coroutine did not end after its cancellation"


def test_future_cancel_stays_cancelled_and_is_counted(
    bridge: AioThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiobridge")
    for _ in range(2):
        swallower = Swallower()
        future = bridge.submit(swallower.returns_after_cancel())
        swallower.wait_started()
        assert future.cancel()
        swallower.wait_ended()
        wait_until(lambda: not bridge.stats().in_flight, "every call settled")
    stats = bridge.stats()
    assert (stats.cancel_ignored, stats.cancelled, stats.completed) == (2, 2, 0), stats
    logged = [r.getMessage() for r in caplog.records if "returns_after_cancel" in r.getMessage()]
    assert len(logged) == 1, logged  # once per location, not once per call
    assert "Swallower.returns_after_cancel" in logged[0]
    assert "test_cancel_dropped.py" in logged[0]


def test_a_timed_out_submit_raises_timeout_not_the_late_result(bridge: AioThread) -> None:
    swallower = Swallower()
    future = bridge.submit(swallower.returns_after_cancel(), timeout=0.05)
    with pytest.raises(TimeoutError):
        future.result(WAIT)
    swallower.wait_ended()
    wait_until(lambda: not bridge.stats().in_flight, "every call settled")
    stats = bridge.stats()
    assert (stats.cancel_ignored, stats.timed_out, stats.completed) == (1, 1, 0), stats


def test_an_error_raised_instead_of_the_cancellation_is_counted_and_logged(
    bridge: AioThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiobridge")
    swallower = Swallower()
    future = bridge.submit(swallower.raises_after_cancel(), timeout=0.05)
    with pytest.raises(TimeoutError):
        future.result(WAIT)
    swallower.wait_ended()
    wait_until(lambda: not bridge.stats().in_flight, "every call settled")
    stats = bridge.stats()
    assert (stats.cancel_ignored, stats.timed_out, stats.failed) == (1, 1, 0), stats
    logged = [r for r in caplog.records if "raises_after_cancel" in r.getMessage()]
    assert len(logged) == 1 and "raised LookupError" in logged[0].getMessage()


def test_a_run_timeout_is_counted_as_timed_out(bridge: AioThread) -> None:
    swallower = Swallower()
    with pytest.raises(TimeoutError):
        bridge.run(swallower.returns_after_cancel(), timeout=0.05)
    swallower.wait_ended()
    wait_until(lambda: not bridge.stats().in_flight, "every call settled")
    stats = bridge.stats()
    assert (stats.cancel_ignored, stats.timed_out, stats.completed) == (1, 1, 0), stats


def test_a_coroutine_that_ends_cancelled_is_not_counted(bridge: AioThread) -> None:
    started = threading.Event()

    async def polite() -> None:
        started.set()
        await asyncio.sleep(WAIT * 3)

    future = bridge.submit(polite())
    assert started.wait(WAIT)
    future.cancel()
    wait_until(lambda: not bridge.stats().in_flight, "every call settled")
    assert bridge.stats().cancel_ignored == 0
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(0)


# -- re-delivery -------------------------------------------------------------------------
def test_a_dropped_cancellation_is_delivered_again(
    bridge: AioThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiobridge")
    started, ended = threading.Event(), threading.Event()
    steps: list[str] = []

    async def drops_then_goes_on() -> str:
        try:
            started.set()
            try:
                await asyncio.sleep(WAIT * 3)
            except asyncio.CancelledError:
                steps.append("dropped")
            await asyncio.sleep(WAIT * 3)  # the next step: cancelled again here
            steps.append("next step ran")
            return "finished"
        except asyncio.CancelledError:
            steps.append("cancelled again")
            raise
        finally:
            ended.set()

    future = bridge.submit(drops_then_goes_on(), timeout=0.05)
    with pytest.raises(TimeoutError):
        future.result(WAIT)
    assert ended.wait(WAIT), "the task still runs: the cancellation was not delivered again"
    assert steps == ["dropped", "cancelled again"]
    wait_until(lambda: not bridge.stats().in_flight, "every call settled")
    stats = bridge.stats()
    assert (stats.cancel_redelivered, stats.cancel_ignored, stats.timed_out) == (1, 0, 1), stats
    logged = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(logged) == 1 and "drops_then_goes_on" in logged[0], logged


def test_cleanup_after_a_cancellation_is_not_interrupted(bridge: AioThread) -> None:
    """Awaits in ``except``/``finally``/``async with`` exits while the cancellation
    travels up are cleanup, not a dropped cancellation: they run to their end."""
    started, ended = threading.Event(), threading.Event()
    steps: list[str] = []

    class Connection:
        async def __aenter__(self) -> Connection:
            return self

        async def __aexit__(self, *exc_info: object) -> None:
            for _ in range(5):  # several passes of the loop
                await asyncio.sleep(0)
            steps.append("released")

    async def cleans_up() -> None:
        try:
            async with Connection():
                try:
                    started.set()
                    await asyncio.sleep(WAIT * 3)
                except asyncio.CancelledError:
                    await asyncio.sleep(0.01)
                    steps.append("except")
                    raise
                finally:
                    await asyncio.sleep(0.01)
                    steps.append("finally")
        finally:
            ended.set()

    future = bridge.submit(cleans_up())
    assert started.wait(WAIT)
    future.cancel()
    assert ended.wait(WAIT)
    assert steps == ["except", "finally", "released"]
    wait_until(lambda: not bridge.stats().in_flight, "every call settled")
    stats = bridge.stats()
    assert (stats.cancel_redelivered, stats.cancel_ignored, stats.cancelled) == (0, 0, 1), stats


def test_a_task_that_drops_every_cancellation_releases_its_caller(
    bridge: AioThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiobridge")
    started, stop_dropping, ended = threading.Event(), threading.Event(), threading.Event()
    dropped: list[int] = []

    async def drops_everything() -> str:
        try:
            started.set()
            while not stop_dropping.is_set():
                try:
                    await asyncio.sleep(0.001)
                except asyncio.CancelledError:
                    dropped.append(1)
            return "finished"
        finally:
            ended.set()

    future = bridge.submit(drops_everything(), timeout=0.05)
    assert started.wait(WAIT)
    with pytest.raises(TimeoutError):
        future.result(WAIT)  # released after the last re-delivery, although still running
    assert not ended.is_set()
    stop_dropping.set()
    assert ended.wait(WAIT)
    wait_until(lambda: not bridge.stats().in_flight, "every call settled")
    assert len(dropped) == 1 + _redeliver.MAX_DELIVERIES
    stats = bridge.stats()
    assert (stats.cancel_redelivered, stats.cancel_ignored, stats.timed_out) == (1, 1, 1), stats
    assert any("its caller is released" in r.getMessage() for r in caplog.records)


def test_stop_cancels_again_a_loop_task_that_dropped_its_cancellation() -> None:
    """A task that is not a call (started with ``create_task`` inside one) and
    drops the cancellation of ``stop()`` is cancelled again at its next step,
    not only when the stop's grace period is nearly over."""
    started, ended = threading.Event(), threading.Event()
    steps: list[str] = []

    async def background() -> None:
        try:
            started.set()
            try:
                await asyncio.sleep(WAIT * 3)
            except asyncio.CancelledError:
                steps.append("dropped")
            await asyncio.sleep(0.5)  # shorter than stop's grace before it re-cancels
            steps.append("ran on")
        except asyncio.CancelledError:
            steps.append("cancelled again")
            raise
        finally:
            ended.set()

    tasks: set[asyncio.Task[None]] = set()

    async def start_background() -> None:
        tasks.add(asyncio.get_running_loop().create_task(background()))

    bridge = AioThread(name="stop-redeliver").start()
    try:
        bridge.run(start_background(), timeout=WAIT)
        assert started.wait(WAIT)
    finally:
        bridge.stop(timeout=0.1)
    assert ended.is_set()
    assert steps == ["dropped", "cancelled again"]


def test_ctrl_c_in_the_waiting_thread_cancels_again_a_coroutine_that_dropped_it() -> None:
    result = run_python(
        """
        import asyncio, signal, threading
        from aiobridge import AioThread

        started, ended = threading.Event(), threading.Event()
        steps = []

        async def body():
            started.set()
            try:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    steps.append("dropped")
                await asyncio.sleep(3600)
                steps.append("ran on")
            except asyncio.CancelledError:
                steps.append("cancelled-again")
                raise
            finally:
                ended.set()

        def interrupt():
            assert started.wait(10)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

        with AioThread() as bridge:
            threading.Thread(target=interrupt).start()
            try:
                bridge.run(body())
            except KeyboardInterrupt:
                print("interrupted")
            assert ended.wait(10), "the task still runs"
            print(*steps, bridge.stats().cancel_redelivered)
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["interrupted", "dropped", "cancelled-again", "1"]
