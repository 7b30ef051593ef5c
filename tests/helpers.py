"""Helpers for tests that must not hang: bounded waits, code run in a child process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Bound on every wait for another thread or process; never reached when the code is right.
WAIT = 10.0


_SLOW_CALLBACK = re.compile(r"^Executing <.*> took \d+\.\d+ seconds$")
_BLOCKED_HEAD = "aiobridge loop blocked for more than "
_BLOCKED_TAIL = "move it to a thread (await asyncio.to_thread(...))."


def without_slow_callback_reports(stderr: str) -> str:
    """``stderr`` minus the slow-callback reports a busy machine can cause.

    Under ``-X dev`` the loop runs in debug mode, so asyncio reports any callback
    that took longer than ``slow_callback_duration`` ("Executing <...> took 0.11
    seconds") and the bridge's watchdog logs where a stalled loop was. On a loaded
    CI machine either can appear without a bug; tests about shutdown warnings drop
    them and keep everything else (warnings, tracebacks, "never awaited", ...).
    """
    kept: list[str] = []
    in_report = False
    for line in stderr.splitlines(keepends=True):
        text = line.rstrip("\n")
        if in_report:
            in_report = not text.endswith(_BLOCKED_TAIL)
            continue
        if _SLOW_CALLBACK.match(text):
            continue
        if text.startswith(_BLOCKED_HEAD):
            in_report = not text.endswith(_BLOCKED_TAIL)
            continue
        kept.append(line)
    return "".join(kept)


def run_python(
    code: str, *, timeout: float = 60.0, dev: bool = True, args: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (-X dev -W error by default), bounded.

    ``args`` become ``sys.argv[1:]`` of the program.
    """
    command = [sys.executable]
    if dev:
        command += ["-X", "dev", "-W", "error"]
    command += ["-c", textwrap.dedent(code), *args]
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def wait_until(
    condition: Callable[[], object],
    what: str | Callable[[], str],
    timeout: float = WAIT,
    *,
    interval: float = 0.005,
) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` once ``timeout`` has passed.

    For a state nothing signals (a counter, a gauge, another process); where the
    code under test sets an event, wait on the event instead. ``what`` says what
    was awaited; a callable is called only on failure, for a message with what
    was seen at the deadline (a server's log, the replies so far).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            message = what() if callable(what) else what
            raise AssertionError(f"not within {timeout} s: {message}")
        time.sleep(interval)


def wait_child(pid: int, timeout: float = 30.0) -> int:
    """Wait for a forked child with a bound; kill it and fail if it overstays."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"forked child {pid} did not exit within {timeout} s")


def run_in_fork(body: Callable[[], str], *, timeout: float = 60.0) -> str:
    """Fork; run ``body()`` in the child and return the string it produced.

    The child never returns into pytest: it exits 0 after sending the result
    through a pipe, 1 if ``body`` raised (its traceback goes to stderr). The
    parent waits with a bound and fails the test on a non-zero exit.
    """
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads: that is what is tested.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, body().encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        status = wait_child(pid, timeout)
        output = pipe.read().decode()
    assert status == 0, f"forked child exited with {status}"
    return output


def start_and_join(threads: list[threading.Thread], timeout: float) -> None:
    """Start every thread, join each with a bound, fail if any is still running."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"threads still running after {timeout} s: {hung}"
