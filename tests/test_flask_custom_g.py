"""The extension's per-request state lives where no app class can hide it (issue 23).

Flask lets an app replace ``g``'s class (``app_ctx_globals_class``); Flask's own
``test_appctx.py::test_custom_app_ctx_globals_class`` uses one with no ``get``.
The extension once kept its request scope in ``g`` and called ``g.get``: such
an app answered every request with a 500. The scope now lives in the WSGI
environ (a request) or in a map keyed by the app context (no request).
"""

from __future__ import annotations

import asyncio
import contextvars

from flask import Flask, g

from aiobridge import AioThread
from aiobridge.flask import AioBridge

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class BareGlobals:
    """A ``g`` with attributes only: no ``get``, no ``pop``, no ``setdefault``."""

    def __init__(self) -> None:
        self.spam = "eggs"


def _app(bridge: AioThread) -> tuple[Flask, AioBridge]:
    app = Flask("custom_g")
    app.app_ctx_globals_class = BareGlobals  # type: ignore[assignment]
    app.config["TESTING"] = True
    return app, AioBridge(app, bridge=bridge)


def test_async_view_with_a_g_class_without_get(aiobridge_bridge: AioThread) -> None:
    app, _ = _app(aiobridge_bridge)

    @app.before_request
    async def tag() -> None:
        request_id.set("r-1")

    @app.get("/")
    async def index() -> dict[str, str]:
        await asyncio.sleep(0)
        return {"spam": g.spam, "request_id": request_id.get()}

    response = app.test_client().get("/")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json == {"spam": "eggs", "request_id": "r-1"}
    assert aiobridge_bridge.stats().completed >= 2  # the hook and the view ran on the bridge


def test_app_context_without_request_keeps_its_scope_out_of_g(
    aiobridge_bridge: AioThread,
) -> None:
    app, ext = _app(aiobridge_bridge)

    async def set_id() -> str:
        request_id.set("job-7")
        return "set"

    with app.app_context():
        assert ext.run(set_id()) == "set"
        assert request_id.get() == "job-7"  # carried back, as after an await
        assert vars(g) == {"spam": "eggs"}  # nothing of the extension's in the user's g
    assert request_id.get() == "-"  # undone when the app context ended
