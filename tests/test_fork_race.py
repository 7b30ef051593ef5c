"""The restart after fork happens once per process, however many threads race for it.

uWSGI forks its workers without running Python's at-fork hooks, so a worker
finds out that it was forked on its first call; with 8 threads per worker
racing that first call, some workers used to start two loop threads (the
reset re-created the lock that was meant to guard it). Here the fork is made
the way uWSGI makes it, with libc's ``fork()`` (no Python hooks run), and many
threads released together by a barrier make the first call of the child. To
make the race certain rather than likely, the first thread to reset the state
is held (through a trace function) until every other thread has entered
``start()`` too.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import sys
import threading
import traceback
from types import FrameType

import pytest

import aiobridge
from aiobridge import AioThread
from aiobridge.loop_thread import LoopThread
from tests.helpers import wait_child

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts threads through /proc/self/task"
)

THREADS = 16
FORKS = 4
WAIT = 30.0


def _raw_fork() -> int:
    """libc's fork() with the GIL held (PyDLL) and, like uWSGI, no Python at-fork hook."""
    return int(ctypes.PyDLL(None).fork())


def _live_threads(name: str) -> int:
    """Threads called ``name`` that really run in this process (not stale copies)."""
    tids = {int(tid) for tid in os.listdir("/proc/self/task")}
    return sum(1 for t in threading.enumerate() if t.name == name and t.native_id in tids)


async def _pid() -> int:
    await asyncio.sleep(0)
    return os.getpid()


class _HoldFirstReset:
    """A trace function: the first reset of the loop thread's state waits until
    all ``threads`` racing threads have entered ``LoopThread.start``."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.started = 0
        self.held = False
        self.timed_out = False
        self.cond = threading.Condition()

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        code = frame.f_code
        if code is LoopThread.start.__code__:
            with self.cond:
                self.started += 1
                self.cond.notify_all()
        elif code is LoopThread._init_state.__code__:
            with self.cond:
                if self.held:
                    return
                self.held = True
                if not self.cond.wait_for(lambda: self.started >= self.threads, WAIT):
                    self.timed_out = True


def _race(call: object, gate: _HoldFirstReset | None = None) -> dict[str, object]:
    if gate is not None:
        threading.settrace(gate)  # type: ignore[arg-type]
    barrier = threading.Barrier(THREADS, timeout=WAIT)
    results: list[object] = []

    def first_call() -> None:
        barrier.wait()
        try:
            results.append(call())  # type: ignore[operator]
        except BaseException as exc:
            results.append(repr(exc))

    threads = [threading.Thread(target=first_call) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    threading.settrace(None)  # type: ignore[arg-type]
    gated = {} if gate is None else {"held": gate.held, "gate_timed_out": gate.timed_out}
    return {"alive": sum(t.is_alive() for t in threads), "results": results, **gated}


def _in_raw_fork(body: object) -> dict[str, object]:
    read_end, write_end = os.pipe()
    pid = _raw_fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(body()).encode())  # type: ignore[operator]
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        status = wait_child(pid, WAIT * 2)
        output = pipe.read().decode()
    assert status == 0, f"child exited with {status}"
    result: dict[str, object] = json.loads(output)
    return result


@pytest.mark.parametrize("fork", range(FORKS))
def test_racing_first_calls_start_one_loop_thread(fork: int) -> None:
    # A quiet probe: the fork below must not catch a parent thread mid-GIL hand-over.
    with AioThread(name="race-bridge", slow_callback_duration=60) as bridge:
        assert bridge.run(_pid()) == os.getpid()

        def child() -> dict[str, object]:
            gate = _HoldFirstReset(THREADS)
            outcome = _race(lambda: bridge.run(_pid(), timeout=WAIT), gate)
            outcome["loop_threads"] = _live_threads("race-bridge")
            outcome["watchdogs"] = _live_threads("race-bridge-watchdog")
            outcome["pid"] = os.getpid()
            bridge.stop()
            return outcome

        outcome = _in_raw_fork(child)
        assert outcome["alive"] == 0
        assert outcome["held"] is True
        assert outcome["gate_timed_out"] is False
        assert outcome["results"] == [outcome["pid"]] * THREADS
        assert outcome["loop_threads"] == 1
        assert outcome["watchdogs"] == 1
        assert bridge.run(_pid()) == os.getpid()  # the parent's loop is untouched


@pytest.mark.parametrize("fork", range(FORKS))
def test_racing_first_calls_of_the_default_bridge(fork: int) -> None:
    parent = aiobridge.default_bridge()
    assert aiobridge.run(_pid()) == os.getpid()

    def child() -> dict[str, object]:
        outcome = _race(lambda: aiobridge.run(_pid(), timeout=WAIT))
        outcome["loop_threads"] = _live_threads(parent.name)
        outcome["same"] = aiobridge.default_bridge() is parent
        outcome["pid"] = os.getpid()
        parent.stop()
        return outcome

    outcome = _in_raw_fork(child)
    assert outcome["alive"] == 0
    assert outcome["results"] == [outcome["pid"]] * THREADS
    assert outcome["loop_threads"] == 1
    assert outcome["same"] is True
