"""The restart after fork happens once per process, however many threads race for it.

uWSGI forks its workers without running Python's at-fork hooks, so a worker
finds out that it was forked on its first call; with 8 threads per worker
racing that first call, some workers used to start two loop threads (the
reset re-created the lock that was meant to guard it). Here the fork is made
the way uWSGI makes it, with libc's ``fork()`` (no Python hook runs), and many
threads released together by a barrier make the first call of the child. To
make the race certain rather than likely, the first thread to reset the state
is held (through a trace function) until every other thread has entered
``LoopThread.start()`` too.

It runs in a fresh interpreter whose only other threads are the bridge's
(quiet ones): a raw fork must not catch another thread holding a lock.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import run_python

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts threads through /proc/self/task"
)

THREADS = 16
FORKS = 5

SCRIPT = """
import asyncio, ctypes, json, os, sys, threading, time, traceback
from aiobridge import AioThread
from aiobridge._core.loop_thread import LoopThread

THREADS, FORKS, WAIT = int(sys.argv[1]), int(sys.argv[2]), 30.0


class HoldFirstReset:
    def __init__(self):
        self.started = 0
        self.held = False
        self.timed_out = False
        self.cond = threading.Condition()

    def __call__(self, frame, event, arg):
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
                if not self.cond.wait_for(lambda: self.started >= THREADS, WAIT):
                    self.timed_out = True


def live_threads(name):
    # A raw fork leaves stale copies of the parent's threads in threading.enumerate().
    tids = {int(tid) for tid in os.listdir("/proc/self/task")}
    return sum(1 for t in threading.enumerate() if t.name == name and t.native_id in tids)


async def pid():
    await asyncio.sleep(0)
    return os.getpid()


def child(bridge):
    gate = HoldFirstReset()
    threading.settrace(gate)
    barrier = threading.Barrier(THREADS, timeout=WAIT)
    results = []

    def first_call():
        barrier.wait()
        try:
            results.append(bridge.run(pid(), timeout=WAIT))
        except BaseException as exc:
            results.append(repr(exc))

    threads = [threading.Thread(target=first_call) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    threading.settrace(None)
    outcome = {
        "alive": sum(t.is_alive() for t in threads), "held": gate.held,
        "gate_timed_out": gate.timed_out, "wrong": [r for r in results if r != os.getpid()],
        "calls": len(results), "loop_threads": live_threads("race"),
        "watchdogs": live_threads("race-watchdog"),
    }
    bridge.stop()
    return outcome


# A quiet bridge: its threads rarely wake, so a fork never finds one holding a lock.
bridge = AioThread(name="race", slow_callback_duration=60).start()
outcomes = []
for _ in range(FORKS):
    assert bridge.run(pid(), timeout=WAIT) == os.getpid()
    read_end, write_end = os.pipe()
    child_pid = ctypes.PyDLL(None).fork()  # the GIL held across it; no Python hook runs
    if child_pid == 0:
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(child(bridge)).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + 2 * WAIT
    while not (done := os.waitpid(child_pid, os.WNOHANG))[0]:
        if time.monotonic() > deadline:
            os.kill(child_pid, 9)
            raise SystemExit("a forked child hung")
        time.sleep(0.01)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read().decode()
    assert os.waitstatus_to_exitcode(done[1]) == 0, "a forked child failed"
    outcomes.append(json.loads(output))
assert bridge.run(pid(), timeout=WAIT) == os.getpid()  # the parent's loop is untouched
bridge.stop()
print(json.dumps(outcomes))
"""


def test_racing_first_calls_in_forked_children_start_one_loop_thread() -> None:
    proc = run_python(SCRIPT, args=[str(THREADS), str(FORKS)], timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    outcomes = json.loads(proc.stdout)
    assert len(outcomes) == FORKS
    for outcome in outcomes:
        assert outcome["held"] is True  # the race really happened
        assert outcome["gate_timed_out"] is False
        assert outcome["alive"] == 0
        assert outcome["calls"] == THREADS
        assert outcome["wrong"] == []
        assert outcome["loop_threads"] == 1, outcomes
        assert outcome["watchdogs"] == 1, outcomes
