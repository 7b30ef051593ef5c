"""The contracts of the bridge inside a request greenlet on the server's loop (aiobridge.onloop).

A real uvicorn server runs in a thread of the test process (its own loop, on
127.0.0.1, a free port) serving a Flask app through ``on_loop``; the app's
bridge adopts that loop at lifespan startup and is stopped at lifespan
shutdown. Requests are real HTTP requests. Waits are bounded; coroutines
report through ``threading.Event``s, never sleeps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import http.client
import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from flask import Flask, g, request, session

from aiobridge import AioThread, BridgeTimeoutError
from aiobridge.flask import AioBridge, threaded
from aiobridge.onloop import in_request_greenlet, on_loop, run_in_thread
from aiobridge.pytest_plugin import no_loop_blocking
from demo_flask.services import HOST, free_port

DEADLINE = 10.0
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class Served:
    """A uvicorn server in a thread serving ``on_loop(app)``."""

    def __init__(self, app: Flask, bridge: AioThread | None = None, **config: Any) -> None:
        self.app = app
        self.asgi = on_loop(app, bridge=bridge)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(
            self.asgi, host=HOST, port=self.port, lifespan="on", log_level="warning", **config))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + DEADLINE
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def get(self, path: str, timeout: float = DEADLINE) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            kind = response.getheader("content-type", "")
            return response.status, json.loads(body) if "json" in kind else body
        finally:
            conn.close()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()


def make_app(**config: Any) -> tuple[Flask, AioBridge]:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", AIOBRIDGE_SLOW_CALLBACK=0.05, **config)
    ext = AioBridge(app)
    return app, ext


@pytest.fixture
def served() -> Iterator[tuple[Served, Flask, AioBridge]]:
    app, ext = make_app()
    add_routes(app, ext)
    server = Served(app)
    try:
        yield server, app, ext
    finally:
        server.stop()
    assert not ext.get_bridge(app).running


def add_routes(app: Flask, ext: AioBridge) -> None:
    events: dict[str, threading.Event] = {}
    app.extensions["test-events"] = events

    @app.get("/where")
    def where() -> dict[str, Any]:
        async def loop_thread() -> int:
            await asyncio.sleep(0)
            return threading.get_ident()

        return {"view": threading.get_ident(), "loop": ext.run(loop_thread()),
                "greenlet": in_request_greenlet()}

    @app.get("/context/<name>")
    def context(name: str) -> dict[str, Any]:
        g.name = name
        session["name"] = name
        gate = app.extensions.setdefault("gate", {})

        async def set_and_wait() -> str:
            request_id.set(f"id-{name}")
            # Wait until both concurrent requests are inside: their greenlets interleave.
            gate.setdefault(name, asyncio.Event()).set()
            for other in ("a", "b"):
                await asyncio.wait_for(gate.setdefault(other, asyncio.Event()).wait(), DEADLINE)
            return request.args["q"]

        seen = ext.run(set_and_wait())
        return {"q": seen, "g": g.name, "session": session["name"], "var": request_id.get(),
                "path": request.path}

    @app.get("/error")
    def error() -> dict[str, Any]:
        async def fails() -> None:
            await asyncio.sleep(0)
            raise LookupError("from the loop")

        try:
            ext.run(fails())
        except LookupError as exc:
            names = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
            return {"type": type(exc).__name__, "frames": names}
        return {}

    @app.get("/exit")
    def exits() -> dict[str, Any]:
        async def leave() -> None:
            raise SystemExit(3)

        try:
            ext.run(leave())
        except SystemExit as exc:
            return {"code": exc.code}
        return {}

    @app.get("/timeout")
    def timeout() -> dict[str, Any]:
        cancelled = events.setdefault("timeout", threading.Event())

        async def forever() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        try:
            ext.run(forever(), timeout=0.05)
        except BridgeTimeoutError:
            return {"timed_out": True, "cancelled": cancelled.is_set()}
        return {}

    @app.get("/hang")
    def hang() -> dict[str, Any]:
        started = events.setdefault("hang-started", threading.Event())
        cancelled = events.setdefault("hang-cancelled", threading.Event())

        async def forever() -> None:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        ext.run(forever())
        return {}

    @app.get("/async")
    async def async_view() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"path": request.path, "greenlet_view": True}

    @app.get("/features")
    def features() -> dict[str, Any]:
        bridge = ext.bridge

        async def value(v: int, delay: float = 0) -> int:
            await asyncio.sleep(delay)
            return v

        async def ticks() -> AsyncIterator[int]:
            for i in range(5):
                yield i

        class Manager:
            async def __aenter__(self) -> str:
                return "entered"

            async def __aexit__(self, *exc: object) -> None:
                return None

        out: dict[str, Any] = {
            "gather": bridge.gather(value(1), value(2)),
            "first": bridge.first(value(1, 5), value(2)),
            "submit": bridge.submit(value(3, 0.01)).result(DEADLINE),
            "iterate": list(bridge.iterate(ticks(), buffer=2)),
        }
        with bridge.enter(Manager()) as entered:
            out["enter"] = entered
        out["as_completed"] = list(bridge.as_completed([value(1, 0.02), value(2)]))
        return out

    @app.get("/stream")
    def stream() -> Any:
        closed = events.setdefault("stream-closed", threading.Event())

        async def items() -> AsyncIterator[str]:
            try:
                for i in range(3):
                    await asyncio.sleep(0)
                    yield f"data: {i}\n\n"
            finally:
                closed.set()

        return ext.stream(items(), mimetype="text/event-stream")

    @app.get("/endless")
    def endless() -> Any:
        closed = events.setdefault("endless-closed", threading.Event())

        async def items() -> AsyncIterator[str]:
            try:
                while True:
                    await asyncio.sleep(0.01)
                    yield "data: tick\n\n"
            finally:
                closed.set()

        return ext.stream(items(), mimetype="text/event-stream")

    @app.get("/threaded")
    @threaded
    def in_thread() -> dict[str, Any]:
        async def loop_name() -> str:
            return threading.current_thread().name

        return {"thread": threading.current_thread().name, "loop": ext.run(loop_name()),
                "path": request.path, "greenlet": in_request_greenlet()}

    @app.get("/listed")
    def listed() -> dict[str, Any]:
        return {"thread": threading.current_thread().name}

    @app.get("/block")
    def block() -> dict[str, Any]:
        time.sleep(0.4)  # blocks the loop: what the watchdog must name
        return {}

    @app.get("/one-call-in-thread")
    def one_call() -> dict[str, Any]:
        return {"thread": run_in_thread(lambda: threading.current_thread().name)}


def test_views_run_in_greenlets_on_the_servers_loop(served: Any) -> None:
    server, app, ext = served
    status, body = server.get("/where")
    assert status == 200 and body["greenlet"] is True
    assert body["view"] == body["loop"] == server.thread.ident
    bridge = ext.get_bridge(app)
    assert bridge.loop is not None and bridge.thread is server.thread
    # Any other thread reaches the same loop through the hand-off.
    assert bridge.run(asyncio.sleep(0, "from a thread"), timeout=DEADLINE) == "from a thread"
    assert bridge.stats().completed >= 2


def test_each_request_has_its_own_context(served: Any) -> None:
    server, _, _ = served
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a = pool.submit(server.get, "/context/a?q=1")
        b = pool.submit(server.get, "/context/b?q=2")
        (sa, ba), (sb, bb) = a.result(DEADLINE), b.result(DEADLINE)
    assert sa == sb == 200
    assert ba == {"q": "1", "g": "a", "session": "a", "var": "id-a", "path": "/context/a"}
    assert bb == {"q": "2", "g": "b", "session": "b", "var": "id-b", "path": "/context/b"}


def test_exceptions_keep_type_and_traceback(served: Any) -> None:
    server, _, _ = served
    status, body = server.get("/error")
    assert status == 200 and body["type"] == "LookupError"
    assert "fails" in body["frames"] and "error" in body["frames"]


def test_system_exit_reaches_the_view_and_the_loop_lives_on(served: Any) -> None:
    server, _, _ = served
    assert server.get("/exit") == (200, {"code": 3})
    assert server.get("/where")[0] == 200


def test_timeout_cancels_the_task(served: Any) -> None:
    server, _, ext = served
    assert server.get("/timeout") == (200, {"timed_out": True, "cancelled": True})
    assert ext.get_bridge(server.app).stats().timed_out == 1


def test_request_deadline_answers_504() -> None:
    app, ext = make_app(AIOBRIDGE_TIMEOUT=0.1)
    add_routes(app, ext)
    server = Served(app)
    try:
        status, body = server.get("/hang")
        assert status == 504 and "cancelled" in body["error"]
        assert app.extensions["test-events"]["hang-cancelled"].wait(DEADLINE)
    finally:
        server.stop()


def test_a_client_that_goes_away_cancels_what_its_request_waits_for(served: Any) -> None:
    server, app, _ = served
    events = app.extensions["test-events"]
    events["hang-started"] = threading.Event()
    events["hang-cancelled"] = threading.Event()
    with socket.create_connection((HOST, server.port), timeout=DEADLINE) as sock:
        sock.sendall(f"GET /hang HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        assert events["hang-started"].wait(DEADLINE)
    assert events["hang-cancelled"].wait(DEADLINE)
    assert server.get("/where")[0] == 200


def test_async_views_run_on_the_loop(served: Any) -> None:
    server, _, _ = served
    assert server.get("/async") == (200, {"path": "/async", "greenlet_view": True})


def test_every_feature_switches(served: Any) -> None:
    server, _, _ = served
    status, body = server.get("/features")
    assert status == 200, body
    assert body == {"gather": [1, 2], "first": 2, "submit": 3, "iterate": [0, 1, 2, 3, 4],
                    "enter": "entered", "as_completed": [2, 1]}


def test_streamed_response(served: Any) -> None:
    server, app, _ = served
    status, body = server.get("/stream")
    assert status == 200
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert app.extensions["test-events"]["stream-closed"].wait(DEADLINE)


def test_a_stream_ends_when_its_client_goes_away(served: Any) -> None:
    server, app, _ = served
    with socket.create_connection((HOST, server.port), timeout=DEADLINE) as sock:
        sock.sendall(f"GET /endless HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        assert b"data: tick" in sock.recv(4096)
    assert app.extensions["test-events"]["endless-closed"].wait(DEADLINE)


def test_threaded_views_run_in_the_pool() -> None:
    app, ext = make_app(AIOBRIDGE_THREADED_VIEWS=["listed"])
    add_routes(app, ext)
    server = Served(app)
    try:
        status, body = server.get("/threaded")
        assert status == 200 and body["thread"].startswith("aiobridge-view")
        assert body["loop"] == "uvicorn-test" and body["path"] == "/threaded"
        assert body["greenlet"] is False
        assert server.get("/listed")[1]["thread"].startswith("aiobridge-view")
        assert server.get("/one-call-in-thread")[1]["thread"].startswith("aiobridge-view")
        assert server.get("/where")[1]["greenlet"] is True
    finally:
        server.stop()


def test_the_watchdog_names_the_route_that_blocked_the_loop(served: Any,
                                                           caplog: Any) -> None:
    server, _, _ = served
    with caplog.at_level(logging.WARNING, logger="aiobridge"), \
            pytest.raises(pytest.fail.Exception, match="GET /block"), no_loop_blocking() as reports:
        assert server.get("/block")[0] == 200
    assert reports and reports[0][0] == "GET /block"
    assert "time.sleep(0.4)" in reports[0][1]
    assert any("GET /block" in r.getMessage() and "threaded" in r.getMessage()
               for r in caplog.records)


def test_adopting_leaves_the_servers_loop_and_tasks_alone() -> None:
    closed: list[str] = []

    async def main() -> None:
        bridge = AioThread(name="adopter").adopt()
        assert bridge.running and bridge.loop is asyncio.get_running_loop()
        theirs = asyncio.get_running_loop().create_task(asyncio.sleep(60))
        spawned = bridge.spawn(asyncio.sleep(60))

        async def make() -> str:
            return "pool"

        async def close(_: str) -> None:
            closed.append("pool")

        resource = bridge.resource(make, close=close)
        assert await resource.get() == "pool"
        # A call from another thread reaches the adopted loop.
        assert await asyncio.to_thread(bridge.run, asyncio.sleep(0, "handed"), timeout=5) \
            == "handed"
        await bridge.astop(0.05)
        assert not bridge.running and spawned.cancelled()
        assert not theirs.done()  # the server's task is not the bridge's to cancel
        theirs.cancel()

    asyncio.run(main())
    assert closed == ["pool"]


def test_a_plain_wsgi_app_gets_a_pep_3333_environ() -> None:
    closed = threading.Event()

    class Body:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def __iter__(self) -> Iterator[bytes]:
            yield self.data

        def close(self) -> None:
            closed.set()

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/fail":
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                raise ValueError("after start_response")
            except ValueError:
                import sys
                start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
            return Body(b"replaced")
        keys = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
                "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "CONTENT_TYPE",
                "CONTENT_LENGTH", "HTTP_X_TWICE", "wsgi.url_scheme")
        seen = {key: environ.get(key) for key in keys}
        seen["body"] = environ["wsgi.input"].read().decode()
        seen["multithread"] = environ["wsgi.multithread"]
        seen["errors"] = hasattr(environ["wsgi.errors"], "write")
        start_response("201 Created", [("Content-Type", "application/json")])
        return Body(json.dumps(seen).encode())

    bridge = AioThread(name="plain-wsgi")
    plain = Served(wsgi, bridge=bridge, root_path="/prefix")  # type: ignore[arg-type]
    try:
        conn = http.client.HTTPConnection(HOST, plain.port, timeout=DEADLINE)
        # A proxy strips the prefix; uvicorn's root_path puts it back in the scope's path.
        conn.putrequest("POST", "/items/%C3%A9?a=1&b=%20")
        for name, value in (("Content-Type", "text/plain"), ("Content-Length", "5"),
                            ("X-Twice", "1"), ("X-Twice", "2")):
            conn.putheader(name, value)
        conn.endheaders(b"hello")
        response = conn.getresponse()
        seen = json.loads(response.read())
        conn.close()
        assert response.status == 201
        assert seen == {
            "REQUEST_METHOD": "POST", "SCRIPT_NAME": "/prefix",
            "PATH_INFO": "/items/\u00c3\u00a9", "QUERY_STRING": "a=1&b=%20",
            "SERVER_NAME": HOST, "SERVER_PORT": str(plain.port), "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "5",
            "HTTP_X_TWICE": "1,2", "wsgi.url_scheme": "http", "body": "hello",
            "multithread": True, "errors": True,
        }
        assert closed.wait(DEADLINE)
        closed.clear()
        status, body = plain.get("/fail")
        assert (status, body) == (500, b"replaced")
        assert closed.wait(DEADLINE)
    finally:
        plain.stop()
    assert not bridge.running
