"""Helpers for tests that must not hang: run code in a child process with a bound."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(
    code: str, *, timeout: float = 60.0, dev: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (-X dev -W error by default), bounded."""
    args = [sys.executable]
    if dev:
        args += ["-X", "dev", "-W", "error"]
    args += ["-c", textwrap.dedent(code)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


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
