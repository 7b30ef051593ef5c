"""aiobridge.flask: async views, handlers and streams on the app's one bridge."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from flask import Flask, abort, current_app, g, jsonify, request, session

from aiobridge import AioThread
from aiobridge.flask import EXTENSION_KEY, AioBridge, shutdown, startup
from aiobridge.pytest_plugin import FlaskAppFactory
from tests.helpers import WAIT, wait_until


@pytest.fixture
def app(aiobridge_make_flask_app: FlaskAppFactory) -> Flask:
    """A bare app with the extension owning its bridge; the bridge is stopped after the test."""
    return aiobridge_make_flask_app("ext_test", SECRET_KEY="test", AIOBRIDGE_STOP_TIMEOUT=1.0)


def test_init_app_sets_config_defaults_without_overriding() -> None:
    app = Flask("cfg")
    app.config["AIOBRIDGE_TIMEOUT"] = 3
    ext = AioBridge()
    ext.init_app(app)
    try:
        assert app.config["AIOBRIDGE_TIMEOUT"] == 3
        assert app.config["AIOBRIDGE_MAX_IN_FLIGHT"] is None
        assert app.config["AIOBRIDGE_UVLOOP"] is False
        assert app.config["AIOBRIDGE_SLOW_CALLBACK"] == 0.1
        assert EXTENSION_KEY in app.extensions
        # Nothing starts before the first call (gunicorn's master must stay loop-free).
        assert ext.get_bridge(app).thread is None
    finally:
        shutdown(app)


def test_loop_settings_come_from_config(aiobridge_make_flask_app: FlaskAppFactory) -> None:
    app = aiobridge_make_flask_app(
        "tuned",
        AIOBRIDGE_SLOW_CALLBACK=0.25, AIOBRIDGE_DEBUG=True, AIOBRIDGE_THREAD_NAME="tuned-loop",
    )
    bridge = AioBridge().get_bridge(app)
    assert bridge.loop.slow_callback_duration == 0.25
    assert bridge.loop.get_debug()
    assert bridge.thread is not None
    assert bridge.thread.name == "tuned-loop"


def test_double_init_app_is_an_error(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="already initialised"):
        AioBridge().init_app(app)


def test_two_requests_are_served_by_the_same_loop(app: Flask) -> None:
    seen: list[tuple[asyncio.AbstractEventLoop, str]] = []

    @app.get("/loop")
    async def which_loop() -> dict[str, str]:
        seen.append((asyncio.get_running_loop(), threading.current_thread().name))
        return {"ok": "yes"}

    client = app.test_client()
    assert client.get("/loop").status_code == 200
    assert client.get("/loop").status_code == 200
    assert len(seen) == 2
    assert seen[0][0] is seen[1][0]
    assert seen[0][1] == seen[1][1] == "aiobridge"
    assert seen[0][0] is AioBridge().get_bridge(app).loop


def test_flask_default_uses_a_new_loop_per_call() -> None:
    """The behaviour the extension replaces, shown for contrast."""
    plain = Flask("plain")
    loops: list[asyncio.AbstractEventLoop] = []

    @plain.get("/loop")
    async def which_loop() -> str:
        loops.append(asyncio.get_running_loop())
        return "ok"

    client = plain.test_client()
    client.get("/loop")
    client.get("/loop")
    assert loops[0] is not loops[1]


def test_request_g_current_app_and_session_inside_async_code(app: Flask) -> None:
    @app.before_request
    async def remember_caller() -> None:
        await asyncio.sleep(0)
        g.caller = request.headers.get("X-Caller", "anonymous")

    @app.get("/who")
    async def who() -> Any:
        await asyncio.sleep(0)
        session["visits"] = session.get("visits", 0) + 1
        return jsonify(
            caller=g.caller,
            app=current_app.name,
            arg=request.args["q"],
            visits=session["visits"],
        )

    client = app.test_client()
    first = client.get("/who?q=1", headers={"X-Caller": "ada"})
    second = client.get("/who?q=2", headers={"X-Caller": "ada"})
    assert first.json == {"caller": "ada", "app": "ext_test", "arg": "1", "visits": 1}
    assert second.json == {"caller": "ada", "app": "ext_test", "arg": "2", "visits": 2}


def test_async_error_handler_runs_on_the_bridge(app: Flask) -> None:
    class Teapot(Exception):
        pass

    @app.errorhandler(Teapot)
    async def teapot(error: Teapot) -> Any:
        await asyncio.sleep(0)
        return {"thread": threading.current_thread().name}, 418

    @app.get("/boom")
    async def boom() -> str:
        raise Teapot

    response = app.test_client().get("/boom")
    assert response.status_code == 418
    assert response.json == {"thread": "aiobridge"}


def test_http_exceptions_pass_through(app: Flask) -> None:
    @app.get("/missing")
    async def missing() -> str:
        abort(404)

    assert app.test_client().get("/missing").status_code == 404


def test_timeout_is_a_504_json_and_cancels_the_view(app: Flask) -> None:
    app.config["AIOBRIDGE_TIMEOUT"] = 0.2
    cancelled = threading.Event()

    @app.get("/slow")
    async def slow() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    response = app.test_client().get("/slow")
    assert response.status_code == 504
    assert response.json is not None
    assert response.json["timeout"] == 0.2
    assert "error" in response.json
    assert cancelled.wait(WAIT)


def test_calls_after_shutdown_are_a_503_json(app: Flask) -> None:
    @app.get("/hello")
    async def hello() -> str:
        return "hello"

    client = app.test_client()
    assert client.get("/hello").data == b"hello"
    shutdown(app)
    shutdown(app)  # idempotent
    response = client.get("/hello")
    assert response.status_code == 503
    assert response.json == {"error": "the service is shutting down; retry shortly"}
    assert response.headers["Retry-After"] == "1"


def test_in_flight_request_cancelled_by_shutdown_is_a_503(app: Flask) -> None:
    app.config["AIOBRIDGE_STOP_TIMEOUT"] = 0.1
    entered = threading.Event()

    @app.get("/hang")
    async def hang() -> str:
        entered.set()
        await asyncio.Event().wait()
        return "never"

    statuses: list[int] = []
    client = app.test_client()
    caller = threading.Thread(target=lambda: statuses.append(client.get("/hang").status_code))
    caller.start()
    assert entered.wait(WAIT)
    shutdown(app)
    caller.join(WAIT)
    assert not caller.is_alive()
    assert statuses == [503]


def test_ext_run_from_a_sync_view(app: Flask) -> None:
    ext = AioBridge()

    async def add(a: int, b: int) -> tuple[int, str]:
        await asyncio.sleep(0)
        return a + b, threading.current_thread().name

    @app.get("/add")
    def add_view() -> Any:
        total, thread = ext.run(add(2, 3))
        return {"total": total, "thread": thread}

    assert app.test_client().get("/add").json == {"total": 5, "thread": "aiobridge"}


def test_several_apps_in_one_process(app: Flask, aiobridge_make_flask_app: FlaskAppFactory) -> None:
    other = aiobridge_make_flask_app("other")
    for each in (app, other):

        @each.get("/name")
        async def name() -> str:
            return f"{current_app.name} on {threading.current_thread().name}"

    assert app.test_client().get("/name").data == b"ext_test on aiobridge"
    assert other.test_client().get("/name").data == b"other on aiobridge"
    ext = AioBridge()
    assert ext.get_bridge(app) is not ext.get_bridge(other)


def test_a_shared_bridge_is_left_to_its_owner() -> None:
    with AioThread(name="shared") as bridge:
        first, second = Flask("first"), Flask("second")
        ext = AioBridge(bridge=bridge)
        ext.init_app(first)
        ext.init_app(second)
        for each in (first, second):

            @each.get("/thread")
            async def thread() -> str:
                return threading.current_thread().name

        assert first.test_client().get("/thread").data == b"shared"
        assert second.test_client().get("/thread").data == b"shared"
        shutdown(first)
        assert bridge.running
        assert second.test_client().get("/thread").data == b"shared"


def test_max_in_flight_from_config(aiobridge_make_flask_app: FlaskAppFactory) -> None:
    app = aiobridge_make_flask_app("limited", AIOBRIDGE_MAX_IN_FLIGHT=1)
    inside: list[int] = []
    high_water: list[int] = []
    entered = threading.Event()
    gate: dict[str, asyncio.Event] = {}

    @app.get("/limited")
    async def limited() -> str:
        inside.append(1)
        high_water.append(len(inside))
        entered.set()
        await gate.setdefault("open", asyncio.Event()).wait()
        inside.pop()
        return "done"

    bridge = AioBridge().get_bridge(app)
    statuses: list[int] = []

    def call() -> None:
        statuses.append(app.test_client().get("/limited").status_code)

    callers = [threading.Thread(target=call) for _ in range(2)]
    callers[0].start()
    assert entered.wait(WAIT)
    callers[1].start()
    # The second call waits for the first.
    wait_until(lambda: bridge.stats().queued == 1, lambda: f"1 call queued: {bridge.stats()}")
    bridge.call_soon(lambda: gate.setdefault("open", asyncio.Event()).set())
    for caller in callers:
        caller.join(WAIT)
    assert statuses == [200, 200]
    assert max(high_water) == 1


def test_startup_starts_the_bridge_eagerly() -> None:
    app = Flask("lazy")
    bridge = AioBridge(app).get_bridge(app)
    try:
        assert not bridge.running
        startup(app)
        assert bridge.running
        startup(Flask("without-extension"))  # no-op
    finally:
        shutdown(app)


def test_uvloop_from_config(aiobridge_make_flask_app: FlaskAppFactory) -> None:
    uvloop = pytest.importorskip("uvloop")
    app = aiobridge_make_flask_app("uv", AIOBRIDGE_UVLOOP=True)

    @app.get("/loop")
    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert app.test_client().get("/loop").data.decode().startswith(uvloop.__name__)


def test_outside_an_app_context_the_error_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="inside an app or request context"):
        AioBridge().bridge  # noqa: B018


# -- streaming ---------------------------------------------------------------------


def test_async_view_returning_an_async_generator_is_streamed(app: Flask) -> None:
    finished = threading.Event()

    @app.get("/count")
    async def count() -> Any:
        limit = int(request.args["to"])

        async def numbers() -> AsyncIterator[str]:
            try:
                for i in range(limit):
                    await asyncio.sleep(0)
                    yield f"{i}\n"
            finally:
                finished.set()

        return numbers()

    response = app.test_client().get("/count?to=4")
    assert response.status_code == 200
    assert response.data == b"0\n1\n2\n3\n"
    assert finished.wait(WAIT)


def test_ext_stream_sse_and_client_going_away_cancels_the_producer(app: Flask) -> None:
    ext = AioBridge()
    released = threading.Event()

    async def ticks() -> AsyncIterator[str]:
        try:
            n = 0
            while True:
                yield f"event: tick\ndata: {n}\n\n"
                n += 1
                await asyncio.sleep(0)
        finally:
            released.set()

    @app.get("/ticks")
    def stream_ticks() -> Any:
        return ext.stream(ticks(), mimetype="text/event-stream")

    response = app.test_client().get("/ticks", buffered=False)
    assert response.mimetype == "text/event-stream"
    chunks = iter(response.response)
    assert next(chunks) == b"event: tick\ndata: 0\n\n"
    assert next(chunks) == b"event: tick\ndata: 1\n\n"
    response.close()
    assert released.wait(WAIT)


def test_resource_is_built_once_and_shared_then_closed(app: Flask) -> None:
    ext = AioBridge()
    built: list[object] = []
    closed = threading.Event()

    class Client:
        async def aclose(self) -> None:
            closed.set()

    async def make() -> Client:
        client = Client()
        built.append(client)
        return client

    client_resource = ext.resource(make, app=app)

    @app.get("/client")
    async def which_client() -> str:
        return str(id(await client_resource.get()))

    client = app.test_client()
    ids = {client.get("/client").data for _ in range(3)}
    assert len(ids) == 1
    assert len(built) == 1
    shutdown(app)
    assert closed.wait(WAIT)


EXIT_SCRIPT = """
import asyncio
from flask import Flask
from aiobridge.flask import AioBridge

app = Flask("exit")
AioBridge(app)

@app.get("/")
async def index():
    await asyncio.sleep(0)
    return "ok"

assert app.test_client().get("/").data == b"ok"
print("served")
"""


def test_bridge_stops_cleanly_at_interpreter_exit() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", EXIT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "served"
    assert "Unclosed" not in result.stderr
    assert "Task was destroyed" not in result.stderr
