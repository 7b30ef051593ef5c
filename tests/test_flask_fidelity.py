"""aiobridge.flask keeps Flask's own contract: context variables, its override point,
extension conventions, one deadline per request, debug mode as the interpreter says."""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from flask import Flask, Response, current_app

from aiobridge.flask import EXTENSION_KEY, AioBridge, shutdown
from aiobridge.pytest_plugin import FlaskAppFactory

from .helpers import ROOT

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "flask_request_id", default=None
)


@pytest.fixture
def app(aiobridge_flask_app: Flask) -> Flask:
    """The plugin's app: the extension on the plugin's guarded bridge."""
    return aiobridge_flask_app


# -- 2. context variables ----------------------------------------------------------------
def test_a_contextvar_set_in_an_async_hook_is_seen_by_the_view_and_later_hooks(
    app: Flask,
) -> None:
    @app.before_request
    async def tag() -> None:
        await asyncio.sleep(0)
        request_id.set("abc123")

    @app.get("/")
    def index() -> str:
        return str(request_id.get())

    @app.after_request
    def header(response: Response) -> Response:
        response.headers["X-Request-Id"] = str(request_id.get())
        return response

    response = app.test_client().get("/")
    assert response.text == "abc123"
    assert response.headers["X-Request-Id"] == "abc123"


def test_async_view_and_ext_run_hand_their_context_changes_back(app: Flask) -> None:
    ext = app.extensions[EXTENSION_KEY]

    async def set_id(value: str) -> None:
        request_id.set(value)

    @app.get("/async")
    async def async_view() -> str:
        request_id.set("from-async-view")
        return "ok"

    @app.get("/sync")
    def sync_view() -> str:
        ext.run(set_id("from-ext-run"))
        return str(request_id.get())

    @app.after_request
    def header(response: Response) -> Response:
        response.headers["X-Request-Id"] = str(request_id.get())
        return response

    client = app.test_client()
    assert client.get("/async").headers["X-Request-Id"] == "from-async-view"
    assert client.get("/sync").text == "from-ext-run"


def test_nothing_leaks_into_the_next_request_served_by_the_same_thread(app: Flask) -> None:
    @app.before_request
    async def tag() -> None:
        from flask import request

        if "id" in request.args:
            request_id.set(request.args["id"])

    @app.get("/")
    def index() -> str:
        return str(request_id.get())

    client = app.test_client()  # the test client serves every request in this thread
    assert client.get("/?id=first").text == "first"
    assert client.get("/").text == "None"
    assert client.get("/?id=third").text == "third"
    assert request_id.get() is None  # nor into the thread once the request is over


def test_async_teardown_changes_do_not_leak_either(app: Flask) -> None:
    @app.teardown_request
    async def forget(error: BaseException | None) -> None:
        request_id.set("set-in-teardown")

    @app.get("/")
    def index() -> str:
        return str(request_id.get())

    client = app.test_client()
    assert client.get("/").text == "None"
    assert client.get("/").text == "None"
    assert request_id.get() is None


# -- 3. Flask's override point -------------------------------------------------------------
class LoopPerCallFlask(Flask):
    calls = 0

    def async_to_sync(
        self, func: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            type(self).calls += 1
            return asyncio.run(func(*args, **kwargs))

        return run


def test_an_overridden_async_to_sync_is_refused_with_the_way_out() -> None:
    app = LoopPerCallFlask("custom")
    with pytest.raises(RuntimeError) as info:
        AioBridge(app)
    message = str(info.value)
    assert "LoopPerCallFlask.async_to_sync" in message
    assert "async_views=False" in message
    assert "aiobridge" not in app.extensions


def test_an_async_to_sync_set_on_the_instance_is_refused_too() -> None:
    app = Flask("patched")
    app.async_to_sync = lambda func: func  # type: ignore[method-assign,assignment,return-value]
    with pytest.raises(RuntimeError, match=r"overrides Flask\.async_to_sync"):
        AioBridge(app)


def test_async_views_false_keeps_the_override_and_the_rest_of_the_extension(
    aiobridge_make_flask_app: FlaskAppFactory,
) -> None:
    app = aiobridge_make_flask_app("custom-kept", app_class=LoopPerCallFlask, async_views=False)
    ext = app.extensions[EXTENSION_KEY]

    @app.get("/view")
    async def view() -> str:
        return threading.current_thread().name

    async def thread_name() -> str:
        return threading.current_thread().name

    @app.get("/run")
    def run() -> str:
        return ext.run(thread_name())

    client = app.test_client()
    assert client.get("/view").text == threading.current_thread().name
    assert LoopPerCallFlask.calls >= 1
    assert client.get("/run").text == "aiobridge"


# -- 4. extension conventions ----------------------------------------------------------------
def test_app_extensions_holds_the_extension_object() -> None:
    app = Flask("conventions")
    ext = AioBridge(app)
    try:
        assert app.extensions["aiobridge"] is ext

        @app.get("/")
        def index() -> str:
            same = current_app.extensions["aiobridge"] is ext
            return f"{same} {current_app.extensions['aiobridge'].bridge.name}"

        assert app.test_client().get("/").text == "True aiobridge"
    finally:
        shutdown(app)


def test_resource_needs_no_app_when_the_extension_has_one(
    aiobridge_make_flask_app: FlaskAppFactory,
) -> None:
    app = aiobridge_make_flask_app("one-app")
    ext = app.extensions[EXTENSION_KEY]  # the extension of this one app

    async def make() -> str:
        return "client"

    client = ext.resource(make)  # module level: no app context, no app=
    assert ext.get_bridge() is ext.get_bridge(app)

    @app.get("/")
    async def index() -> str:
        return await client.get()

    assert app.test_client().get("/").text == "client"


def test_an_extension_of_several_apps_asks_which_one() -> None:
    first, second = Flask("first"), Flask("second")
    ext = AioBridge()
    ext.init_app(first)
    ext.init_app(second)
    try:
        with pytest.raises(RuntimeError, match="serves 2 apps"):
            ext.resource(lambda: None)
        with first.app_context():
            assert ext.bridge is ext.get_bridge(first)
    finally:
        shutdown(first)
        shutdown(second)


# -- 6. one deadline per request -------------------------------------------------------------
def test_the_deadline_counts_from_the_start_of_the_request(app: Flask) -> None:
    app.config["AIOBRIDGE_TIMEOUT"] = 0.5
    ran: list[str] = []

    @app.before_request
    def slow_sync_hook() -> None:
        time.sleep(0.6)  # at least 0.6 s: the whole budget

    @app.get("/")
    async def index() -> str:
        ran.append("view")
        return "ok"

    response = app.test_client().get("/")
    assert response.status_code == 504
    assert response.json == {
        "error": "the request took too long and was cancelled", "timeout": 0.5,
    }
    assert ran == []  # refused before it started: nothing left of the budget


def test_async_hooks_and_the_view_share_one_deadline(app: Flask) -> None:
    app.config["AIOBRIDGE_TIMEOUT"] = 0.5
    torn_down = threading.Event()

    @app.before_request
    async def hook() -> None:
        await asyncio.sleep(0.3)  # within the budget on its own

    @app.get("/")
    async def index() -> str:
        await asyncio.sleep(0.3)  # within the budget on its own, not after the hook
        return "ok"

    @app.teardown_request
    async def teardown(error: BaseException | None) -> None:
        await asyncio.sleep(0)  # after the response: not bound by the spent deadline
        torn_down.set()

    assert app.test_client().get("/").status_code == 504
    assert torn_down.is_set()


# -- 6. debug mode follows the interpreter --------------------------------------------------
DEBUG_PROBE = """
from flask import Flask
from aiobridge import AioThread
from aiobridge.flask import AioBridge, shutdown

with AioThread({args}) as bridge:
    core = bridge.loop.get_debug()
app = Flask("probe")
{config}
ext = AioBridge(app)
flask = ext.get_bridge(app).loop.get_debug()
shutdown(app)
print(core, flask)
"""


@pytest.mark.parametrize(
    ("flags", "env", "args", "config", "expected"),
    [
        ([], {}, "", "", "False False"),
        (["-X", "dev"], {}, "", "", "True True"),
        ([], {"PYTHONASYNCIODEBUG": "1"}, "", "", "True True"),
        (["-X", "dev"], {}, "debug=False", "app.config['AIOBRIDGE_DEBUG'] = False",
         "False False"),
        ([], {}, "debug=True", "app.config['AIOBRIDGE_DEBUG'] = True", "True True"),
    ],
    ids=["plain", "dev-mode", "env", "dev-mode-but-off", "on"],
)
def test_debug_mode_follows_the_interpreter_unless_told(
    flags: list[str], env: dict[str, str], args: str, config: str, expected: str
) -> None:
    code = textwrap.dedent(DEBUG_PROBE.format(args=args, config=config))
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    environ.update(env, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, *flags, "-c", code],
        capture_output=True, text=True, timeout=60, env=environ, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_an_app_with_the_extension_is_freed_at_zero_refcount() -> None:
    """No reference cycle through the app (Flask's test_app_freed_on_zero_refcount).

    The extension once set ``app.ensure_sync`` to a partial holding the app and
    its bound method: the app then lived until the garbage collector ran.
    """
    import gc
    import weakref

    from aiobridge import AioThread

    with AioThread(name="freed-app") as bridge:
        gc.disable()
        try:
            app = Flask(__name__)
            AioBridge(app, bridge=bridge)
            assert app.view_functions["static"]
            freed = weakref.ref(app)
            del app
            assert freed() is None
        finally:
            gc.enable()
