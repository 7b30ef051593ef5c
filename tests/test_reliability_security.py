"""Security of the demo: loopback only, no debug, no request-chosen upstream, bounded streams.

Already covered elsewhere (not repeated here): parameter bounds
(``tests/test_demo.py::test_bad_input_is_a_400_naming_the_parameter`` and the
fuzzing in ``test_reliability_input.py``), an SSE stream's maximum duration and
its release when a test client goes away (``tests/test_demo.py``), streams
ended by SIGTERM (``tests/test_demo_e2e.py``). Here: what binds where, debug
off, the upstream URL immune to query strings and headers in every mode, and a
stream's maximum duration and disconnect release through a real gunicorn socket.
"""

from __future__ import annotations

import http.client
import runpy
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from demo_flask import MODES
from demo_flask.catalog import TRACK_CHANNEL_PREFIX
from demo_flask.launcher import server_command_for
from demo_flask.services import HOST, RedisServer, UpstreamServer
from tests.demo_apps import DemoAppFactory, demo_app
from tests.helpers import wait_until
from tests.test_reliability_faults import Gunicorn, gunicorn

__all__ = ("demo_app", "gunicorn")  # the fixtures: the demo app's, the fault scenarios'

CONF = Path(__file__).resolve().parent.parent / "demo_flask" / "gunicorn.conf.py"
WAIT = 30.0


def _listening(pid: int) -> set[str]:
    process = psutil.Process(pid)
    addresses = set()
    for proc in [process, *process.children(recursive=True)]:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                addresses.add(conn.laddr.ip)
    return addresses


def test_everything_binds_loopback_only_by_default(
    redis_server: object, upstream: UpstreamServer
) -> None:
    config = runpy.run_path(str(CONF))
    assert config["bind"] == ["127.0.0.1:8000"]
    assert HOST == "127.0.0.1"
    command = server_command_for([])
    assert command[command.index("--bind") + 1] == "127.0.0.1:8000"
    granian = server_command_for(["--server", "granian"])
    assert granian[granian.index("--host") + 1] == "127.0.0.1"
    # The running upstream and Redis listen on loopback and nowhere else.
    assert upstream.pid is not None
    assert _listening(upstream.pid) == {"127.0.0.1"}
    if isinstance(redis_server, RedisServer):
        assert redis_server.pid is not None
        assert _listening(redis_server.pid) == {"127.0.0.1"}


def test_no_debug_mode_under_gunicorn_even_with_flask_debug_set(
    monkeypatch: pytest.MonkeyPatch, demo_app: DemoAppFactory
) -> None:
    config = runpy.run_path(str(CONF))
    assert not config.get("reload", False)
    assert config.get("loglevel") != "debug"
    monkeypatch.setenv("FLASK_DEBUG", "1")  # leaked into a worker's environment
    app = demo_app({"CAAS_MODE": "sync"})  # what gunicorn's wsgi_app calls
    assert app.debug is False
    assert app.config["DEBUG"] is False
    assert app.config["PROPAGATE_EXCEPTIONS"] in (None, False)


@pytest.fixture
def trap() -> Iterator[socket.socket]:
    """A listener on 127.0.0.1 that no request may ever reach."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        sock.listen(16)
        sock.setblocking(False)
        yield sock


@pytest.mark.parametrize("mode", MODES)
def test_upstream_url_is_never_taken_from_the_request(
    mode: str, upstream: UpstreamServer, redis_url: str, trap: socket.socket,
    demo_app: DemoAppFactory,
) -> None:
    evil = f"http://{HOST}:{trap.getsockname()[1]}"
    app = demo_app({"CAAS_MODE": mode, "UPSTREAM_URL": upstream.url, "REDIS_URL": redis_url})
    client = app.test_client()
    headers = {"Host": evil[7:], "X-Forwarded-Host": evil[7:], "Referer": evil,
               "X-Upstream-Url": evil, "Forwarded": f"host={evil[7:]}"}  # fmt: skip
    for path in ("/dog", "/delay"):
        query = f"upstream={evil}&url={evil}&UPSTREAM_URL={evil}&seconds=0&n=1"
        response = client.get(f"{path}?{query}", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
    with pytest.raises(BlockingIOError):
        trap.accept()  # nobody connected to the trap


def _numsub(client: redis.Redis, channel: str) -> int:
    return int(dict(client.pubsub_numsub(channel))[channel])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sse_stream_under_gunicorn_is_released_on_disconnect_and_bounded_in_time(
    redis_url: str,
    upstream: UpstreamServer,
    redis_sync: redis.Redis,
    gunicorn: Callable[..., Gunicorn],
) -> None:
    heartbeat, longest = 0.3, 2.0
    app = gunicorn(
        redis_url=redis_url,
        upstream_url=upstream.url,
        config={"CAAS_SSE_HEARTBEAT": heartbeat, "CAAS_SSE_MAX_SECONDS": longest},
    )
    # 1. A client that goes away: its subscription is released by the next heartbeat.
    channel = TRACK_CHANNEL_PREFIX + "sec-gone"
    conn = http.client.HTTPConnection(HOST, app.port, timeout=WAIT)
    conn.request("GET", "/track/sec-gone")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("X-Accel-Buffering") == "no"  # proxies must not buffer SSE
    assert b"event: subscribed" in response.readline() + response.readline()
    assert _numsub(redis_sync, channel) == 1
    if conn.sock is not None:
        conn.sock.shutdown(socket.SHUT_RDWR)  # the client goes away
    conn.close()
    closed_at = time.monotonic()
    wait_until(lambda: _numsub(redis_sync, channel) == 0, "the gone client's subscription released",
               WAIT, interval=0.02)
    released = time.monotonic() - closed_at
    assert released < heartbeat * 2 + 2.0, released
    # 2. A client that stays: the stream ends by itself at its maximum duration.
    started = time.monotonic()
    conn = http.client.HTTPConnection(HOST, app.port, timeout=WAIT)
    try:
        conn.request("GET", "/track/sec-stay")
        body = conn.getresponse().read().decode()  # returns when the server ends the stream
    finally:
        conn.close()
    lasted = time.monotonic() - started
    assert '"reason": "max-duration"' in body, body[-300:]
    assert longest <= lasted < longest + 3.0, lasted
    # Released as the stream ends (the unsubscribe may land just after the last bytes).
    wait_until(lambda: _numsub(redis_sync, TRACK_CHANNEL_PREFIX + "sec-stay") == 0,
               "the ended stream's subscription released", 5, interval=0.02)
