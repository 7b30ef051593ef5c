"""A Flask app on the server's own loop (aiobridge.onloop) under real ASGI servers.

uvicorn (uvloop, httptools), gunicorn with uvicorn workers and granian's ASGI
interface serve ``tests/onloop_app.py`` in development mode on 127.0.0.1. Each
test checks that requests run in request greenlets, answers concurrent
requests, then sends SIGTERM while requests are in flight: they finish, every
worker closes its pools (from Redis itself: ``closed:<tag>:<pid>``), and the
server's output has no warning, traceback or unclosed resource.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import signal
import sys
import time
from typing import Any

import pytest
import redis

from demo_flask.services import HOST, free_port
from tests.test_servers import assert_clean, closed_pids, get_json, launch, server_env, tag

__all__ = ("launch", "server_env", "tag")  # fixtures, imported for this module's tests

pytestmark = pytest.mark.slow

IN_FLIGHT = 3
DEADLINE = 30.0


def _serve_and_stop(server: Any, client: redis.Redis, tag: str,
                    allow: tuple[str, ...] = ()) -> None:
    server.wait_ready("/threads")
    assert get_json(server.url + "/threads")["greenlet"] is True
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        dogs = list(pool.map(lambda _: get_json(server.url + "/dog"), range(16)))
    assert all(d["upstream"] == 200 and d["greenlet"] for d in dogs), dogs
    pids = {d["pid"] for d in dogs}
    with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
        slow = [pool.submit(get_json, server.url + "/slow?seconds=1.5", 30.0)
                for _ in range(IN_FLIGHT)]
        deadline = time.monotonic() + DEADLINE
        while int(client.get(f"in-flight:{tag}") or 0) < IN_FLIGHT:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.02)
        server.signal(signal.SIGTERM)
        answers = [future.result(DEADLINE) for future in slow]
    assert [a["slept"] for a in answers] == [1.5] * IN_FLIGHT
    server.wait_exit()
    pids |= {a["pid"] for a in answers}
    assert pids <= closed_pids(client, tag), server.output()
    assert_clean(server.output(), allow=allow)


def test_uvicorn_uvloop_httptools(launch: Any, redis_sync: redis.Redis, tag: str) -> None:
    port = free_port()
    server = launch([sys.executable, "-X", "dev", "-m", "uvicorn", "tests.onloop_app:asgi_app",
                     "--host", HOST, "--port", str(port), "--loop", "uvloop",
                     "--http", "httptools", "--lifespan", "on"], port)
    _serve_and_stop(server, redis_sync, tag)


def test_gunicorn_uvicorn_workers(launch: Any, redis_sync: redis.Redis, tag: str) -> None:
    port = free_port()
    server = launch([sys.executable, "-X", "dev", "-m", "gunicorn", "tests.onloop_app:asgi_app",
                     "-k", "uvicorn_worker.UvicornWorker", "-w", "2", "-b", f"{HOST}:{port}",
                     "--graceful-timeout", "20"], port)
    # gunicorn 27 and uvicorn-worker both close the listening socket at SIGTERM; the
    # second close is logged at INFO level with any ASGI app, a trivial one included.
    _serve_and_stop(server, redis_sync, tag, allow=("Error while closing socket",))


@pytest.mark.skipif(shutil.which("granian") is None and sys.modules.get("granian") is None,
                    reason="granian is not installed")
def test_granian_asgi(launch: Any, redis_sync: redis.Redis, tag: str) -> None:
    port = free_port()
    server = launch([sys.executable, "-X", "dev", "-m", "granian", "--interface", "asgi",
                     "--host", HOST, "--port", str(port), "--workers", "1",
                     "tests.onloop_app:asgi_app"], port)
    _serve_and_stop(server, redis_sync, tag)
