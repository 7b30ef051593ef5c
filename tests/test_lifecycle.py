"""Lifecycle (SPEC §3.3): stop drains then cancels, refuses new work, leaves no warning."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import selectors
import threading

import pytest

from aiobridge import AioThread, BridgeClosedError

from .helpers import WAIT, run_python, wait_until, without_slow_callback_reports


def test_start_is_idempotent_and_context_manager_stops() -> None:
    bridge = AioThread(name="cm")
    with bridge as entered:
        assert entered is bridge
        assert bridge.start() is bridge
        thread = bridge.thread
        assert thread is not None and thread.is_alive()
    assert not bridge.running
    assert not thread.is_alive()
    bridge.stop()  # idempotent
    with pytest.raises(BridgeClosedError, match="cannot be restarted"):
        bridge.start()


def test_stop_drains_in_flight_work_then_cancels_the_rest() -> None:
    bridge = AioThread().start()
    finishing_started = threading.Event()
    stuck_started, stuck_cancelled = threading.Event(), threading.Event()

    async def finishing() -> str:
        finishing_started.set()
        await asyncio.sleep(0.1)
        return "finished"

    async def stuck() -> None:
        stuck_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stuck_cancelled.set()
            raise

    done = bridge.submit(finishing())
    cancelled = bridge.submit(stuck())
    spawned = bridge.spawn(finishing())
    assert finishing_started.wait(WAIT) and stuck_started.wait(WAIT)
    stopper = threading.Thread(target=bridge.stop, kwargs={"timeout": 1.0})
    stopper.start()
    # While stopping (the drain takes ~0.1 s here), new work is refused at once.
    # Polls the state flip made by stop() in the other thread.
    wait_until(lambda: not bridge.running, "stop() marking the bridge stopping", interval=0.001)
    assert stopper.is_alive(), "stop() should still be draining"
    with pytest.raises(BridgeClosedError):
        bridge.run(asyncio.sleep(0), timeout=WAIT)
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert done.result(0) == "finished"
    assert spawned.result(0) == "finished"
    with pytest.raises(concurrent.futures.CancelledError):
        cancelled.result(0)
    assert stuck_cancelled.is_set()
    assert bridge.thread is not None and not bridge.thread.is_alive()
    assert bridge.stats().in_flight == 0


def test_waiting_caller_is_released_when_the_bridge_stops() -> None:
    bridge = AioThread().start()
    started = threading.Event()
    outcome: list[BaseException] = []

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    def caller() -> None:
        try:
            bridge.run(forever())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    assert started.wait(WAIT)
    bridge.stop(timeout=0.05)
    thread.join(WAIT)
    assert not thread.is_alive(), "a caller hung after stop()"
    assert len(outcome) == 1 and isinstance(outcome[0], concurrent.futures.CancelledError)


class _BreakableSelector(selectors.DefaultSelector):
    """A selector that fails: a stand-in for a bug deep in the event loop."""

    broken = False
    error = errno.EIO

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self.broken:
            raise OSError(self.error, os.strerror(self.error))
        return super().select(timeout)


def test_loop_thread_crash_releases_callers(caplog: pytest.LogCaptureFixture) -> None:
    """A loop that dies (its selector fails) must not leave any caller waiting forever.

    A user's SystemExit no longer kills the loop (tests/test_base_exceptions.py).
    """
    selector = _BreakableSelector()
    bridge = AioThread(loop_factory=lambda: asyncio.SelectorEventLoop(selector)).start()
    started = threading.Event()
    outcome: list[BaseException] = []

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    def caller() -> None:
        try:
            bridge.run(forever())
        except BaseException as exc:
            outcome.append(exc)

    def kill_loop() -> None:
        selector.broken = True

    thread = threading.Thread(target=caller)
    thread.start()
    assert started.wait(WAIT)
    bridge.call_soon(kill_loop)
    thread.join(WAIT)
    assert not thread.is_alive(), "a caller hung after the loop thread died"
    assert len(outcome) == 1 and isinstance(outcome[0], BridgeClosedError)
    assert not bridge.running
    with pytest.raises(BridgeClosedError):
        bridge.run(asyncio.sleep(0))
    bridge.stop()
    assert any("crashed" in r.getMessage() for r in caplog.records)


def test_stop_from_loop_thread_is_refused(bridge: AioThread) -> None:
    from aiobridge import BridgeDeadlockError

    async def stop_inside() -> None:
        bridge.stop()

    with pytest.raises(BridgeDeadlockError):
        bridge.run(stop_inside())


CLEAN_SHUTDOWN = """
import asyncio, aiobridge
from aiobridge import AioThread

async def work(i):
    await asyncio.sleep(0.001)
    return i

async def forever():
    await asyncio.Event().wait()

async def agen():
    try:
        for i in range(100):
            yield i
            await asyncio.sleep(0)
    finally:
        await asyncio.sleep(0)

async def leave_generator_open():
    gen = agen()
    await gen.__anext__()   # suspended inside; only shutdown_asyncgens closes it
    return gen

bridge = AioThread(debug=True).start()
assert bridge.gather(*(work(i) for i in range(50))) == list(range(50))
bridge.spawn(forever())                 # cancelled at stop
pending = bridge.submit(forever())      # cancelled at stop
kept = bridge.run(leave_generator_open())
bridge.run(asyncio.to_thread(sum, [1, 2]))  # default executor in use
{stop}
print(aiobridge.run(work(7)))           # default bridge, stopped at exit
"""


@pytest.mark.parametrize("stop", ["bridge.stop(timeout=0.2)", "pass  # left to the exit hook"])
def test_shutdown_is_clean_under_dev_mode_and_warnings_as_errors(stop: str) -> None:
    result = run_python(CLEAN_SHUTDOWN.format(stop=stop), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "7"
    assert without_slow_callback_reports(result.stderr) == "", result.stderr


def test_failing_loop_factory_is_reported_and_the_bridge_is_closed() -> None:
    from aiobridge import BridgeError

    def broken_factory() -> asyncio.AbstractEventLoop:
        raise OSError("no more file descriptors")

    bridge = AioThread(loop_factory=broken_factory)
    with pytest.raises(BridgeError, match="could not create its event loop") as info:
        bridge.start()
    assert isinstance(info.value.__cause__, OSError)
    coro = asyncio.sleep(0)
    with pytest.raises(BridgeClosedError):
        bridge.run(coro)
    bridge.stop()


def test_descriptor_closed_under_the_loop_is_not_logged_as_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uWSGI closes every descriptor before it re-executes itself on a reload (HUP).

    The loop's selector then fails with EBADF: the bridge stops and says why,
    without a "crashed" report and its traceback.
    """
    selector = _BreakableSelector()
    selector.error = errno.EBADF
    bridge = AioThread(loop_factory=lambda: asyncio.SelectorEventLoop(selector)).start()
    thread = bridge.thread
    assert thread is not None
    bridge.call_soon(setattr, selector, "broken", True)
    thread.join(WAIT)
    assert not thread.is_alive()
    assert not bridge.running
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "aiobridge"]
    assert not [m for m in messages if "crashed" in m[1]], messages
    assert [level for level, m in messages if "descriptor" in m] == ["WARNING"], messages
    bridge.stop()
