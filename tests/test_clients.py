"""``aiobridge.clients`` against a real aiohttp server and a real Redis: pooling, pub/sub, fork."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import aiohttp
import pytest
import redis
import redis.asyncio
from aiohttp import web

from aiobridge import AioThread
from aiobridge.clients import http_session, redis_client
from tests.helpers import WAIT, run_in_fork, run_python, start_and_join


class PeerServer:
    """An aiohttp.web server on 127.0.0.1 that records each request's client address."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []
        self.url = ""
        self._host = AioThread(name="peer-server")
        self._runner: web.AppRunner | None = None

    async def _peer(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername")[:2])
        return web.Response(text="ok")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/peer", self._peer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def __enter__(self) -> PeerServer:
        self._host.start()
        self._host.run(self._start(), timeout=WAIT)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._host.run(self._stop(), timeout=WAIT)
        self._host.stop()

    def ports(self) -> set[int]:
        return {port for _, port in self.peers}


@pytest.fixture(scope="module")
def peer_server() -> Iterator[PeerServer]:
    with PeerServer() as server:
        yield server


@pytest.fixture
def server(peer_server: PeerServer) -> PeerServer:
    peer_server.peers.clear()
    return peer_server


async def fetch(http: Any, url: str) -> str:
    session: aiohttp.ClientSession = await http.get()
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.text()


# -- http_session -------------------------------------------------------------------------
def test_http_session_reuses_one_connection_for_sequential_calls(
    bridge: AioThread, server: PeerServer
) -> None:
    http = bridge.resource(http_session())
    for _ in range(100):
        assert bridge.run(fetch(http, f"{server.url}/peer"), timeout=WAIT) == "ok"
    assert len(server.peers) == 100
    assert len(server.ports()) == 1  # one keep-alive connection served all 100


def test_http_session_pool_is_shared_by_threads(bridge: AioThread, server: PeerServer) -> None:
    http = bridge.resource(http_session(limit_per_host=4))
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(WAIT)
            for _ in range(25):
                bridge.run(fetch(http, f"{server.url}/peer"), timeout=WAIT)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    start_and_join(threads, WAIT * 3)
    assert not failures
    assert len(server.peers) == 100
    assert len(server.ports()) <= 4  # never more connections than concurrent callers


def test_http_session_is_closed_at_stop(server: PeerServer) -> None:
    with AioThread(name="http-stop", debug=True) as own:
        http = own.resource(http_session())
        own.run(fetch(http, f"{server.url}/peer"), timeout=WAIT)
        session = http.get_sync(timeout=WAIT)
        assert not session.closed
    assert session.closed


def test_enter_an_aiohttp_response_from_sync_code(bridge: AioThread, server: PeerServer) -> None:
    session = bridge.resource(http_session()).get_sync(timeout=WAIT)
    with bridge.enter(session.get(f"{server.url}/peer"), timeout=WAIT) as response:
        assert response.status == 200
        assert bridge.run(response.text(), timeout=WAIT) == "ok"
    assert response.closed


def test_http_session_refuses_a_connector() -> None:
    with pytest.raises(TypeError, match="limit_per_host"):
        http_session(connector=object())


# -- redis_client -----------------------------------------------------------------------
def test_redis_get_set_from_many_threads(bridge: AioThread, clean_redis: str) -> None:
    cache = bridge.resource(redis_client(clean_redis, decode_responses=True))
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    async def roundtrip(key: str, value: str) -> str | None:
        client: redis.asyncio.Redis = await cache.get()
        await client.set(key, value)
        result = await client.get(key)
        return None if result is None else str(result)

    def worker(n: int) -> None:
        try:
            barrier.wait(WAIT)
            for i in range(20):
                key = f"aiobridge:test:{n}:{i}"
                assert bridge.run(roundtrip(key, str(n * i)), timeout=WAIT) == str(n * i)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    start_and_join(threads, WAIT * 3)
    assert not failures
    check = redis.Redis.from_url(clean_redis, decode_responses=True)
    try:
        assert check.get("aiobridge:test:7:19") == str(7 * 19)
    finally:
        check.close()


def test_bounded_redis_pool_queues_commands_instead_of_opening_connections(
    bridge: AioThread, clean_redis: str
) -> None:
    """32 concurrent commands through a pool of 2: all succeed on 2 connections."""
    cache = bridge.resource(redis_client(clean_redis, max_connections=2, client_name="bounded"))

    async def burst() -> list[int]:
        client: redis.asyncio.Redis = await cache.get()
        return list(await asyncio.gather(*(client.incr("aiobridge:bounded") for _ in range(32))))

    results = bridge.run(burst(), timeout=WAIT)
    assert sorted(results) == list(range(1, 33))
    check = redis.Redis.from_url(clean_redis)
    try:
        names = [c.get("name") for c in check.client_list()]
    finally:
        check.close()
    assert 1 <= names.count("bounded") <= 2, names
    with pytest.raises(ValueError, match="max_connections"):
        redis_client(clean_redis, max_connections=0)


def test_redis_pubsub_through_iterate(
    bridge: AioThread, redis_url: str, redis_sync: redis.Redis
) -> None:
    cache = bridge.resource(redis_client(redis_url, decode_responses=True))
    channel = "aiobridge:test:events"
    log: list[str] = []

    async def messages() -> AsyncGenerator[dict[str, Any], None]:
        client: redis.asyncio.Redis = await cache.get()
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel)
            async for message in pubsub.listen():
                yield message
        finally:
            await pubsub.unsubscribe(channel)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            log.append("unsubscribed")

    received: list[str] = []
    for message in bridge.iterate(messages(), timeout=WAIT):
        if message["type"] == "subscribe":
            for n in range(3):  # subscribed: now publishing cannot be missed
                redis_sync.publish(channel, f"event-{n}")
            continue
        received.append(message["data"])
        if len(received) == 3:
            break
    assert received == ["event-0", "event-1", "event-2"]
    assert log == ["unsubscribed"]  # the subscription was released before the loop ended
    assert redis_sync.pubsub_numsub(channel) == [(channel, 0)]


def test_redis_client_rebuilt_in_a_forked_child(bridge: AioThread, redis_url: str) -> None:
    cache = bridge.resource(redis_client(redis_url))

    async def client_id() -> int:
        client: redis.asyncio.Redis = await cache.get()
        result: int = await client.client_id()
        return result

    parent_id = bridge.run(client_id(), timeout=WAIT)

    def in_child() -> str:
        child_id = bridge.run(client_id(), timeout=WAIT)
        bridge.stop()
        return str(child_id)

    child_id = int(run_in_fork(in_child, timeout=WAIT * 3))
    assert child_id != parent_id  # the child opened its own connection
    assert bridge.run(client_id(), timeout=WAIT) == parent_id  # the parent's is intact


# -- optional dependencies -------------------------------------------------------------
def test_core_imports_without_aiohttp_and_redis() -> None:
    result = run_python(
        """
        import asyncio, sys
        for name in ("aiohttp", "redis", "redis.asyncio"):
            sys.modules[name] = None  # makes "import name" raise ImportError
        import aiobridge, aiobridge.clients, aiobridge._features, aiobridge._core
        from aiobridge.clients import http_session, redis_client

        with aiobridge.AioThread() as bridge:
            assert bridge.run(asyncio.sleep(0, result=1)) == 1
        # The library is imported when the factory is made, so that is what fails.
        for make, hint in ((http_session, "pip install aiohttp (or aiobridge's 'http' extra"),
                           (lambda: redis_client("redis://127.0.0.1:1/0"),
                            "pip install redis (or aiobridge's 'redis' extra")):
            try:
                make()
            except ImportError as exc:
                assert hint in str(exc), exc
            else:
                raise AssertionError("no ImportError")
        print("ok")
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_importing_aiobridge_does_not_import_the_clients() -> None:
    result = run_python(
        """
        import sys
        import aiobridge, aiobridge.clients
        print(sorted(m for m in ("aiohttp", "redis", "flask") if m in sys.modules))
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- no false alarm on first use ----------------------------------------------------------
FIRST_USE = """
import asyncio, logging, sys
from aiobridge import AioThread
from aiobridge.clients import http_session, redis_client

assert "aiohttp" not in sys.modules and "redis" not in sys.modules
http_factory = http_session()
cache_factory = redis_client({redis_url!r})
# Imported here, in the caller's thread, before anything ran on the loop:
print("aiohttp" in sys.modules, "redis.asyncio" in sys.modules)

async def first_use():
    session = await http.get()
    async with session.get({url!r}) as response:
        await response.read()
    return await (await cache.get()).ping()

with AioThread() as bridge:
    http = bridge.resource(http_factory)
    cache = bridge.resource(cache_factory)
    assert bridge.run(first_use(), timeout=30) is True
    print(bridge.stats().slow_callbacks)
"""


def test_first_use_of_the_client_helpers_raises_no_blocked_loop_alarm(
    redis_url: str,
) -> None:
    with PeerServer() as server:
        code = FIRST_USE.format(redis_url=redis_url, url=f"{server.url}/peer")
        result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "0"]
    assert "loop blocked" not in result.stderr
    assert result.stderr == "", result.stderr


# -- defaults (CHANGES: bounded Redis pool, HTTP total timeout inside the request deadline) ----


def test_redis_client_pool_is_bounded_by_default(bridge: AioThread, clean_redis: str) -> None:
    """64 blocking commands at once: the default pool opens 32 connections, None opens 64."""
    from aiobridge.clients import REDIS_MAX_CONNECTIONS

    assert REDIS_MAX_CONNECTIONS == 32
    bounded = bridge.resource(redis_client(clean_redis, client_name="default-bound"))
    unbounded = bridge.resource(
        redis_client(clean_redis, max_connections=None, client_name="no-bound")
    )

    async def burst(resource: Any) -> None:
        client: redis.asyncio.Redis = await resource.get()
        # Each BLPOP holds its connection for 0.2 s, so every command in flight needs one.
        await asyncio.gather(*(client.blpop(["aiobridge:empty"], timeout=0.2) for _ in range(64)))

    bridge.run(burst(bounded), timeout=WAIT)
    bridge.run(burst(unbounded), timeout=WAIT)
    check = redis.Redis.from_url(clean_redis)
    try:
        names = [c.get("name") for c in check.client_list()]
    finally:
        check.close()
    assert names.count("default-bound") == REDIS_MAX_CONNECTIONS, names.count("default-bound")
    assert names.count("no-bound") == 64, names.count("no-bound")


def test_http_total_timeout_is_inside_the_flask_request_deadline(
    upstream: Any,
    aiobridge_make_flask_app: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hung upstream times out in the view (which answers for it), not as the request's 504."""
    from aiobridge import clients
    from aiobridge.flask import _DEFAULTS

    assert _DEFAULTS["AIOBRIDGE_TIMEOUT"] > clients.HTTP_TOTAL_TIMEOUT
    # The same 20 s : 30 s ratio, scaled down so the test takes a second.
    monkeypatch.setattr(clients, "HTTP_TOTAL_TIMEOUT", 0.4)
    app = aiobridge_make_flask_app("http_deadline", AIOBRIDGE_TIMEOUT=0.6)
    ext = app.extensions["aiobridge"]
    http = ext.resource(http_session(), app=app)

    @app.get("/slow")
    async def slow() -> Any:
        session: aiohttp.ClientSession = await http.get()
        try:
            async with session.get(f"{upstream.url}/delay", params={"seconds": "3"}) as response:
                return await response.json()
        except TimeoutError:
            return {"fallback": True}, 200

    response = app.test_client().get("/slow")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json == {"fallback": True}
