"""End to end: ``python -m demo_flask`` under gunicorn, real load, graceful SIGTERM.

The launcher starts its own Redis and upstream on free 127.0.0.1 ports (or uses
``REDIS_URL``), then gunicorn with the demo's config. The test sends /dog
requests from several threads, checks that every 200 was billed exactly once
in Redis, then stops everything with SIGTERM and checks the shutdown was quick
and clean.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import redis

from demo_flask.catalog import BILLING_KEY
from demo_flask.services import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
GRACEFUL_TIMEOUT = 10
READY_TIMEOUT = 90.0
REQUESTS = 50
CALLER_THREADS = 8
WORKERS = 2
FORBIDDEN_IN_STDERR = ("Unclosed", "Task was destroyed", "was never awaited", "Traceback")


@dataclass
class Demo:
    """A running ``python -m demo_flask`` and what it printed."""

    proc: subprocess.Popen[str]
    port: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    banner: queue.Queue[str] = field(default_factory=queue.Queue)
    readers: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def printed(self, label: str) -> str:
        """The URL the banner printed after ``label``."""
        for line in self.stdout:
            match = re.match(rf"\s+{label}\s+(\S+)", line)
            if match:
                return match.group(1)
        raise AssertionError(f"no {label} line in {self.stdout}")

    def master_pid(self) -> int:
        for line in self.stderr:
            match = re.search(r"Listening at: \S+ \((\d+)\)", line)
            if match:
                return int(match.group(1))
        raise AssertionError("gunicorn did not log its master pid")


def _read(stream: IO[str], into: list[str], ready: queue.Queue[str] | None) -> None:
    for line in stream:
        into.append(line)
        if ready is not None and "Ctrl-C stops everything" in line:
            ready.put(line)
    if ready is not None:
        ready.put("")  # end of output: the launcher exited


@pytest.fixture
def start_demo() -> Iterator[list[Demo]]:
    """Demos launched by the test (``_launch``); any left running are killed at teardown."""
    demos: list[Demo] = []
    yield demos
    for demo in demos:
        if demo.proc.poll() is None:
            os.killpg(demo.proc.pid, signal.SIGKILL)
            demo.proc.wait(10)
        for reader in demo.readers:
            reader.join(10)
        for stream in (demo.proc.stdout, demo.proc.stderr):
            if stream is not None:
                stream.close()


def _launch(demos: list[Demo], *extra: str) -> Demo:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "UPSTREAM_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-X", "dev", "-m", "demo_flask", "--port", str(port),
         "--workers", str(WORKERS), "--threads", "8", *extra],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    demo = Demo(proc, port)
    demos.append(demo)
    assert proc.stdout is not None
    assert proc.stderr is not None
    for stream, into, ready in ((proc.stdout, demo.stdout, demo.banner),
                                (proc.stderr, demo.stderr, None)):  # fmt: skip
        reader = threading.Thread(target=_read, args=(stream, into, ready), daemon=True)
        reader.start()
        demo.readers.append(reader)
    line = demo.banner.get(timeout=READY_TIMEOUT)
    assert line, f"the demo exited before it was ready:\n{''.join(demo.stderr)}"
    return demo


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _stop(demo: Demo) -> None:
    demo.proc.send_signal(signal.SIGTERM)
    try:
        code = demo.proc.wait(GRACEFUL_TIMEOUT + 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the demo did not exit within {GRACEFUL_TIMEOUT + 5}s of SIGTERM")
    for reader in demo.readers:
        reader.join(10)
    assert code == 0, "".join(demo.stderr)
    stderr = "".join(demo.stderr)
    for bad in FORBIDDEN_IN_STDERR:
        assert bad not in stderr, stderr


class _OpenStream:
    """An SSE client held open across the shutdown; records the events it got."""

    def __init__(self, port: int, order_id: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.connection.request("GET", f"/track/{order_id}")
        self.response = self.connection.getresponse()
        self.lines: list[str] = []
        self.subscribed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for raw in self.response:
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if line == "event: subscribed":
                self.subscribed.set()

    def close(self) -> None:
        self.reader.join(30)
        self.connection.close()


def _threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True], ids=["post-fork", "preload"])
def test_demo_serves_bills_and_stops_cleanly(start_demo: list[Demo], preload: bool) -> None:
    demo = _launch(start_demo, "--mode", "bridge", *(["--preload"] if preload else []))
    client = redis.Redis.from_url(demo.printed("redis"), decode_responses=True)
    try:
        billed_before = int(client.get(BILLING_KEY) or 0)
        with ThreadPoolExecutor(CALLER_THREADS) as pool:
            results = list(pool.map(_get, [f"{demo.url}/dog?latency=5"] * REQUESTS))
        ok = [body for status, body in results if status == 200]
        assert len(ok) == REQUESTS, [status for status, _ in results]
        assert all(body.startswith(b"\xff\xd8") for body in ok)  # JPEG
        assert int(client.get(BILLING_KEY) or 0) - billed_before == len(ok)
    finally:
        client.close()

    status, body = _get(f"{demo.url}/stats")
    assert status == 200
    stats = json.loads(body)
    assert stats["mode"] == "bridge"
    assert stats["bridge"]["failed"] == 0

    # Each worker keeps one HTTP pool: far fewer upstream connections than requests.
    status, body = _get(f"{demo.printed('upstream')}/connections")
    assert status == 200
    assert json.loads(body)["connections"] <= WORKERS * CALLER_THREADS + 1

    if Path("/proc").is_dir():
        # No loop thread in the master, even when it loaded the app (--preload).
        assert _threads_of(demo.master_pid()) == 1

    # An open SSE stream must not hold the shutdown: it ends with a "shutdown" event.
    stream = _OpenStream(demo.port, "e2e-order")
    try:
        assert stream.subscribed.wait(30)
        _stop(demo)
    finally:
        stream.close()
    assert "event: end" in stream.lines
    assert any('"reason": "shutdown"' in line for line in stream.lines)
