"""The servers legacy Flask apps run under, for real (docs/servers.md; issue 11).

Each test starts a real server on 127.0.0.1 (gunicorn sync workers, uWSGI,
a Celery prefork worker with the suite's Redis as broker, uvicorn through
a2wsgi, waitress) with ``tests/server_app.py`` (or ``tests/server_celery.py``)
in Python's development mode, uses the bridge through it, stops it the way
production does (SIGTERM, ``--max-requests``, HUP) and checks:

- from Redis itself that every process that used the bridge closed its pools
  on the way out (the pool's close writes ``closed:<tag>:<pid>``; a process
  that dies without stopping its bridge never does);
- that the server's output has no "Unclosed client session", no warning, no
  traceback, no "crashed".

Every wait is bounded; a server left running is killed with its process group.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import redis

from demo_flask.services import HOST, UpstreamServer, free_port
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
EXIT_TIMEOUT = 60.0

pytestmark = pytest.mark.slow

# What a clean run never prints (warnings are shown: development mode).
BAD = ("Unclosed", "unclosed", "Exception ignored", "crashed", "Task was destroyed",
       "never awaited", "Traceback", "Bad file descriptor")  # fmt: skip


class Server:
    """A server process in its own process group, with its output in a temporary file."""

    def __init__(self, command: list[str], env: dict[str, str], port: int) -> None:
        self.command = command
        self.env = env
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
                                     start_new_session=True)  # fmt: skip

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def wait_ready(self, path: str = "/threads") -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.command[:3]} exited at start:\n{self.output()}")
            try:
                get_json(self.url + path, timeout=2.0)
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    pytest.fail(f"{self.command[:3]} did not answer:\n{self.output()}")
                time.sleep(0.05)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.command[:3]} did not exit within {timeout} s:\n{self.output()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self._log.close()


def get_json(url: str, timeout: float = 20.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def assert_clean(output: str, *, allow: tuple[str, ...] = ()) -> None:
    """No line of ``output`` says any of BAD, except lines containing one of ``allow``."""
    bad = [line for line in output.splitlines()
           if any(word in line for word in BAD) and not any(ok in line for ok in allow)]
    assert not bad, "\n".join(bad) + "\n---- full output ----\n" + output


def closed_pids(client: redis.Redis, tag: str) -> set[int]:
    return {int(key.rsplit(":", 1)[1]) for key in client.scan_iter(f"closed:{tag}:*")}


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def server_env(redis_url: str, upstream: UpstreamServer, tag: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, REDIS_URL=redis_url, UPSTREAM_URL=upstream.url, SERVER_TAG=tag,
                PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""),
                PYTHONDEVMODE="1")  # fmt: skip


@pytest.fixture
def launch(server_env: dict[str, str]) -> Iterator[Any]:
    servers: list[Server] = []

    def start(command: list[str], port: int, **env: str) -> Server:
        server = Server(command, dict(server_env, **env), port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _dogs(url: str, count: int, threads: int = 4) -> list[dict[str, Any]]:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: get_json(url + "/dog"), range(count)))


# -- gunicorn ---------------------------------------------------------------------
def test_gunicorn_sync_preload_max_requests_hup(launch: Any, redis_sync: redis.Redis,
                                            tag: str) -> None:  # fmt: skip
    """The master warms the bridge at import (--preload); workers recycle (--max-requests,
    HUP)."""
    port = free_port()
    server = launch([sys.executable, "-X", "dev", "-m", "gunicorn", "--worker-class", "sync",
                     "--workers", "2", "--preload", "--max-requests", "3",
                     "--graceful-timeout", "10", "--bind", f"{HOST}:{port}",
                     "tests.server_app:app"], port, WARM_AT_IMPORT="1")  # fmt: skip
    server.wait_ready()
    dogs = _dogs(server.url, 10, threads=2)
    assert {d["upstream"] for d in dogs} == {200}
    served_by = {d["pid"] for d in dogs}
    assert server.proc.pid not in served_by
    assert get_json(server.url + "/threads")["loop_threads"] == 1
    # HUP: gunicorn replaces every worker; the new ones serve with their own bridges.
    server.signal(signal.SIGHUP)
    after_hup: set[int] = set()

    def new_worker_served() -> bool:
        after_hup.clear()
        after_hup.update(d["pid"] for d in _dogs(server.url, 4, threads=2))
        return bool(after_hup - served_by)

    wait_until(new_worker_served, lambda: f"a new worker after HUP:\n{server.output()}",
               START_TIMEOUT, interval=0.1)
    served_by |= after_hup
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    closed = closed_pids(redis_sync, tag)
    # Every worker that used the bridge closed its pools (recycled ones included),
    # and so did the master, whose import-time call had started its own bridge.
    assert served_by <= closed, (served_by, closed)
    assert server.proc.pid in closed
    # Idle workers forked from a warm master included. Under -X dev gunicorn's own
    # sync workers leave its listening socket to the garbage collector: not ours.
    assert_clean(server.output(), allow=(f"laddr=('{HOST}', {port})>",))


# -- uWSGI --------------------------------------------------------------------------
def _uwsgi() -> str:
    binary = shutil.which("uwsgi", path=os.path.dirname(sys.executable)) or shutil.which("uwsgi")
    if binary is None:
        pytest.skip("uWSGI is not installed (pip install uwsgi)")
    return binary


def _uwsgi_command(port: int, *extra: str) -> list[str]:
    return [_uwsgi(), "--http-socket", f"{HOST}:{port}", "--master", "--module",
            "tests.server_app:app", "--need-app", "--die-on-term", "--vacuum",
            "--worker-reload-mercy", "20", "--home", sys.prefix,
            "--master-fifo", str(_fifo_path(port)), *extra]  # fmt: skip


def _fifo_path(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"aiobridge-test-uwsgi-{port}.fifo"


def _uwsgi_graceful_stop(server: Server) -> None:
    """uWSGI's graceful shutdown ('q' on the master FIFO): workers finish, then exit.

    SIGTERM with --die-on-term kills the workers with SIGINT instead, and uWSGI
    skips the exit hooks of a worker it considers busy.
    """
    fd = os.open(_fifo_path(server.port), os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"q")
    finally:
        os.close(fd)


def _threads_per_worker(url: str, calls: int) -> dict[int, int]:
    seen: dict[int, int] = {}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for answer in pool.map(lambda _: get_json(url + "/threads"), range(calls)):
            seen[answer["pid"]] = max(seen.get(answer["pid"], 0), answer["loop_threads"])
    return seen


@pytest.mark.parametrize("lazy_apps", [False, True], ids=["app-in-master", "lazy-apps"])
def test_uwsgi_prefork_with_threads(launch: Any, redis_sync: redis.Redis, tag: str,
                                    lazy_apps: bool) -> None:  # fmt: skip
    """Racing first calls in each worker start one loop thread; workers close at exit."""
    port = free_port()
    extra = ["--processes", "2", "--threads", "8", "--enable-threads"]
    # The app-in-master run calls the bridge at import (in the master): that needs
    # Python's fork hooks (see test_uwsgi_master_without_fork_hooks_is_refused).
    extra.append("--lazy-apps" if lazy_apps else "--py-call-uwsgi-fork-hooks")
    server = launch(_uwsgi_command(port, *extra), port,
                    WARM_AT_IMPORT="0" if lazy_apps else "1")  # fmt: skip
    server.wait_ready()
    # With --lazy-apps each worker imports the app itself, after the port answers: wait
    # for both (a worker still importing when the graceful stop comes did not exit).
    if lazy_apps:
        wait_until(lambda: server.output().count("WSGI app 0 (mountpoint='') ready") >= 2,
                   lambda: f"both uWSGI workers loading the app:\n{server.output()}",
                   START_TIMEOUT)
    dogs = _dogs(server.url, 32, threads=16)
    assert {d["upstream"] for d in dogs} == {200}
    served_by = {d["pid"] for d in dogs}
    per_worker = _threads_per_worker(server.url, 32)
    # One loop thread in each worker that made a call. With --lazy-apps nothing calls
    # at import, so a worker the kernel handed none of the /dog requests has none.
    expected = {pid: 1 if pid in served_by or not lazy_apps else 0 for pid in per_worker}
    assert per_worker == expected, (per_worker, served_by)
    _uwsgi_graceful_stop(server)
    server.wait_exit()
    closed = closed_pids(redis_sync, tag)
    assert served_by <= closed, (served_by, closed, server.output())
    assert_clean(server.output())


def test_uwsgi_reload_is_not_a_crash(launch: Any, tag: str) -> None:
    """HUP: the master (whose import-time call started a bridge) re-executes itself.

    uWSGI closes every descriptor before it does, the loop's epoll one too; a
    loop that keeps waking up (a background task) meets the closed descriptor
    before the exec: that used to be logged as "loop thread crashed".
    """
    port = free_port()
    server = launch(_uwsgi_command(port, "--processes", "1", "--enable-threads",
                                   "--py-call-uwsgi-fork-hooks"), port,
                    WARM_AT_IMPORT="1", TICK_AT_IMPORT="1")  # fmt: skip
    server.wait_ready()
    before = get_json(server.url + "/dog")["pid"]
    server.signal(signal.SIGHUP)
    deadline = time.monotonic() + START_TIMEOUT
    while True:  # the reloaded master forks a new worker
        try:
            if get_json(server.url + "/dog", timeout=2.0)["pid"] != before:
                break
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"uWSGI did not come back after HUP:\n{server.output()}")
        time.sleep(0.1)
    server.signal(signal.SIGTERM)
    server.wait_exit()
    output = server.output()
    assert "gracefully reloading" in output or "reload" in output.lower(), output
    assert_clean(output)


def test_uwsgi_master_without_fork_hooks_is_refused(launch: Any) -> None:
    """A loop thread started in the master makes raw-forked workers crash (SIGSEGV).

    Without ``--py-call-uwsgi-fork-hooks`` uWSGI forks without Python's fork
    hooks; a call at import in the master is refused with the fix to apply.
    """
    port = free_port()
    server = launch(_uwsgi_command(port, "--processes", "2", "--enable-threads"), port,
                    WARM_AT_IMPORT="1")  # fmt: skip
    assert server.wait_exit() != 0  # --need-app: the app failed to load
    output = server.output()
    assert "cannot start in the uWSGI master" in output, output
    assert "--py-call-uwsgi-fork-hooks" in output
    assert "killed by signal" not in output


def test_uwsgi_without_threads_is_refused(launch: Any) -> None:
    """uWSGI < 2.0.27 runs Python without threads unless --enable-threads: refused.

    uWSGI 2.0.27 and later always run threads; point ``UWSGI_NO_THREADS_BIN``
    at an older uwsgi binary to run this test against one (`.ci/run` builds 2.0.26).
    """
    binary = os.environ.get("UWSGI_NO_THREADS_BIN")
    if not binary:
        pytest.skip("needs a uWSGI older than 2.0.27 (UWSGI_NO_THREADS_BIN)")
    # With aiobridge.uwsgi.setup(): the app refuses to load, at start.
    port = free_port()
    command = _uwsgi_command(port, "--processes", "1")
    command[0] = binary
    server = launch(command, port)
    server.wait_exit()
    embedded = re.search(r"Python version: (\d+\.\d+)", server.output())
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert embedded is None or embedded.group(1) == running, (
        f"UWSGI_NO_THREADS_BIN={binary} embeds Python {embedded.group(1)}, the tests run "
        f"on {running}: build uWSGI 2.0.26 with this Python (see .ci/run)")
    assert "Start uWSGI with --enable-threads" in server.output(), server.output()
    # Without it: the bridge itself refuses to start, on the first call.
    port = free_port()
    command = _uwsgi_command(port, "--processes", "1")
    command[0] = binary
    server = launch(command, port, UWSGI_SETUP="0")
    server.wait_ready()
    with pytest.raises(urllib.error.HTTPError) as refused:
        get_json(server.url + "/dog")
    refused.value.close()  # the error holds the response's socket
    assert refused.value.code == 500
    server.signal(signal.SIGTERM)
    server.wait_exit()
    assert "Start uWSGI with --enable-threads" in server.output(), server.output()


# -- Celery -------------------------------------------------------------------------
def test_celery_prefork_worker(launch: Any, redis_url: str, redis_sync: redis.Redis,
                               tag: str) -> None:  # fmt: skip
    """Tasks use the bridge in prefork children; each child closes its pools as it exits."""
    from celery import Celery

    worker = launch([sys.executable, "-X", "dev", "-m", "celery", "-A",
                     "tests.server_celery:celery_app", "worker", "--pool", "prefork",
                     "--concurrency", "2", "--loglevel", "WARNING", "--without-gossip",
                     "--without-mingle", "--without-heartbeat", "-Q", f"q-{tag}",
                     "-n", f"w-{tag}@127.0.0.1"], 0)  # fmt: skip
    client = Celery("client", broker=redis_url, backend=redis_url)
    try:
        results = [client.send_task("server_celery.fetch", queue=f"q-{tag}") for _ in range(6)]
        answers = [result.get(timeout=START_TIMEOUT) for result in results]
    finally:
        client.close()
    assert {a["upstream"] for a in answers} == {200}
    used = {a["pid"] for a in answers}
    assert worker.proc.pid not in used
    worker.signal(signal.SIGTERM)  # warm shutdown: the children exit, then the worker
    assert worker.wait_exit() == 0
    closed = closed_pids(redis_sync, tag)
    assert used <= closed, (used, closed, worker.output())
    assert_clean(worker.output())


# -- ASGI and waitress: servers that die by SIGTERM ------------------------------------
def test_uvicorn_a2wsgi_lifespan_closes_pools(launch: Any, redis_sync: redis.Redis,
                                              tag: str) -> None:  # fmt: skip
    port = free_port()
    server = launch([sys.executable, "-X", "dev", "-m", "uvicorn", "tests.server_app:asgi_app",
                     "--host", HOST, "--port", str(port), "--lifespan", "on"], port)  # fmt: skip
    server.wait_ready()
    pid = get_json(server.url + "/dog")["pid"]
    assert pid == server.proc.pid
    server.signal(signal.SIGTERM)
    server.wait_exit()
    assert pid in closed_pids(redis_sync, tag), server.output()
    assert_clean(server.output())


WAITRESS = """
import signal, sys
import waitress
from aiobridge.exit import stop_on_signals
from tests.server_app import app
stop_on_signals(signal.SIGTERM)
waitress.serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=4)
"""


def test_waitress_sigterm_closes_pools(launch: Any, redis_sync: redis.Redis, tag: str) -> None:
    port = free_port()
    server = launch([sys.executable, "-X", "dev", "-c", WAITRESS, str(port)], port)
    server.wait_ready()
    pid = get_json(server.url + "/dog")["pid"]
    server.signal(signal.SIGTERM)
    # The default action still happens after the bridges stopped: death by SIGTERM.
    assert server.wait_exit() == -signal.SIGTERM
    assert pid in closed_pids(redis_sync, tag), server.output()
    assert_clean(server.output())
