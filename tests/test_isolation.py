"""The suite never touches what it did not start (tests/isolation.py, issue 23).

A developer's shell may hold ``REDIS_URL`` (their Redis, with their data),
``PROMETHEUS_MULTIPROC_DIR``, ``AIOBRIDGE_*`` settings. These tests run parts of
the real suite in a child pytest with such a shell, against a Redis started
here with a canary key, and check that nothing of it was touched; then that
``AIOBRIDGE_TEST_REDIS_URL_MAY_BE_WIPED`` is the one way to hand the suite a
Redis (which it then flushes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from demo_flask.services import RedisServer
from tests.helpers import ROOT, wait_until
from tests.isolation import SCRUBBED_NAMES, Globals, scrubbed

# A test that flushes the suite's Redis (clean_redis), and the metrics tests.
INNER_TESTS = (
    "tests/test_clients.py::test_redis_get_set_from_many_threads",
    "tests/test_metrics.py",
)
CANARY = "developer:precious"


@pytest.fixture
def developers_redis() -> Iterator[redis.Redis]:
    """Stands for the developer's own Redis: started here, holding a canary key."""
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            client.set(CANARY, "do not flush")
            yield client
        finally:
            client.close()


def _url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def _inner_suite(env: dict[str, str], *tests: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-X", "dev", "-m", "pytest", "-p", "no:randomly",
               "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_the_shells_variables_do_not_reach_the_suite(
    developers_redis: redis.Redis, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "multiproc"
    metrics_dir.mkdir()
    shell = dict(
        os.environ,
        REDIS_URL=_url(developers_redis),
        UPSTREAM_URL="http://127.0.0.1:9/",  # the discard port: nothing answers
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        AIOBRIDGE_TIMEOUT="0.000001",  # would time out every request of the demo
        PYTHONASYNCIODEBUG="1",
        PYTHONPATH=ROOT,
    )
    result = _inner_suite(shell, *INNER_TESTS)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert ("aiobridge suite: environment cleared of AIOBRIDGE_TIMEOUT, PROMETHEUS_MULTIPROC_DIR, "
            "PYTHONASYNCIODEBUG, REDIS_URL, UPSTREAM_URL; Redis: its own") in result.stdout
    assert developers_redis.get(CANARY) == "do not flush"
    assert developers_redis.dbsize() == 1  # nothing written either
    assert list(metrics_dir.iterdir()) == []  # the metrics never went multiprocess


def test_a_redis_named_wipeable_is_used_and_flushed(developers_redis: redis.Redis) -> None:
    shell = dict(os.environ, AIOBRIDGE_TEST_REDIS_URL_MAY_BE_WIPED=_url(developers_redis),
                 PYTHONPATH=ROOT)
    result = _inner_suite(shell, INNER_TESTS[0])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Redis: yours (AIOBRIDGE_TEST_REDIS_URL_MAY_BE_WIPED)" in result.stdout
    assert developers_redis.get(CANARY) is None  # flushed, as its name allowed


def test_this_session_runs_without_the_variables() -> None:
    assert not [name for name in os.environ if scrubbed(name)]
    assert scrubbed("AIOBRIDGE_UVLOOP") and scrubbed("CAAS_MODE") and scrubbed("FLASK_DEBUG")
    assert "REDIS_URL" in SCRUBBED_NAMES and not scrubbed("REDIS_SERVER")


def test_a_leaked_global_is_named_and_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    before = Globals.now()
    os.environ["AIOBRIDGE_LEAKED"] = "1"
    changes = Globals.now().changes_since(before)
    assert changes == ["os.environ: added ['AIOBRIDGE_LEAKED'], removed [], changed []"]
    assert "AIOBRIDGE_LEAKED" not in os.environ


WAITING_TEST = """
import os
import time
from pathlib import Path


def test_waits_for_sigterm(redis_server):
    Path(os.environ["READY_FILE"]).write_text(str(redis_server.pid))
    time.sleep(100)  # ended by the SIGTERM the outer test sends
"""


def test_sigterm_to_the_suite_stops_the_servers_it_started(tmp_path: Path) -> None:
    # The session's Redis runs in a session of its own: the signal does not reach
    # it, only the fixture's teardown stops it.
    (tmp_path / "test_waiting.py").write_text(WAITING_TEST)
    ready = tmp_path / "ready"
    command = [sys.executable, "-X", "dev", "-m", "pytest", "-p", "tests.isolation",
               "-p", "tests.servers", "-p", "no:randomly", "-p", "no:cacheprovider",
               "--rootdir", str(tmp_path), "-c", os.devnull,
               str(tmp_path / "test_waiting.py")]  # fmt: skip
    env = dict(os.environ, READY_FILE=str(ready), PYTHONPATH=ROOT)
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    redis_pid = 0
    try:
        wait_until(lambda: ready.exists() and ready.read_text(), "the inner test started", 60)
        redis_pid = int(ready.read_text())
        assert psutil.pid_exists(redis_pid)
        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=60)
    finally:
        child.kill()
        child.communicate(timeout=10)
    left = psutil.pid_exists(redis_pid) and psutil.Process(redis_pid).status() != "zombie"
    if left:  # the failure below: not left running for the rest of the suite
        psutil.Process(redis_pid).kill()
    assert "SIGTERM: the session stops" in output, output
    assert child.returncode == pytest.ExitCode.INTERRUPTED, output
    assert not left, "the inner session's Redis outlived it"
