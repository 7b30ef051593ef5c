"""A Flask app using Flask's hooks, error handlers, sessions and streaming, served on the loop.

Served by uvicorn (uvloop, httptools) through :func:`aiobridge.onloop.on_loop`
for ``tests/test_demo_onloop.py``, as the ``bridge-loop`` mode of the demo is.
Every answer says whether it was made in a request greenlet.

Routes: ``/hooks`` (sync and async ``before_request``, ``after_request``,
``teardown_request``; ``/teardowns`` counts the teardowns run), ``/fail/<kind>``
(a handled exception, an async handler, ``abort(404)``, an unhandled one),
``/login`` and ``/me`` (the signed cookie session), ``/stream`` (a generator
with ``stream_with_context`` that waits on the loop between chunks),
``/astream`` (``ext.stream`` of an async generator).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Iterator
from typing import Any

from flask import Flask, Response, abort, g, jsonify, request, session, stream_with_context

from aiobridge.flask import AioBridge
from aiobridge.onloop import in_request_greenlet, on_loop

app = Flask(__name__)
app.config.update(SECRET_KEY="test-only-not-secret", PROPAGATE_EXCEPTIONS=False)
ext = AioBridge(app)
tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="unset")
teardowns: list[str] = []


class Refused(Exception):
    """Handled by a sync error handler: 418."""


class Later(Exception):
    """Handled by an async error handler: 409."""


@app.before_request
def remember_path() -> None:
    g.path = request.path


@app.before_request
async def tag_request() -> None:
    await asyncio.sleep(0)
    tag.set(request.headers.get("X-Tag", "none"))


@app.after_request
def add_headers(response: Response) -> Response:
    response.headers["X-Tag"] = tag.get()
    response.headers["X-Path"] = g.path
    response.headers["X-Greenlet"] = str(in_request_greenlet())
    return response


@app.teardown_request
def count_teardown(error: BaseException | None) -> None:
    teardowns.append(request.path)


@app.errorhandler(Refused)
def refused(error: Refused) -> tuple[Response, int]:
    return jsonify(error="refused", greenlet=in_request_greenlet()), 418


@app.errorhandler(Later)
async def later(error: Later) -> tuple[Response, int]:
    await asyncio.sleep(0.01)
    return jsonify(error="later", greenlet=in_request_greenlet()), 409


@app.errorhandler(404)
def not_found(error: Any) -> tuple[Response, int]:
    return jsonify(error="not found", path=request.path), 404


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/hooks")
def hooks() -> dict[str, Any]:
    ext.run(asyncio.sleep(0.01))
    return {"tag": tag.get(), "path": g.path, "greenlet": in_request_greenlet()}


@app.get("/teardowns")
def count() -> dict[str, Any]:
    return {"teardowns": len(teardowns)}


@app.get("/fail/<kind>")
def fail(kind: str) -> str:
    if kind == "refused":
        raise Refused()
    if kind == "later":
        raise Later()
    if kind == "missing":
        abort(404)
    raise RuntimeError("a bug")


@app.post("/login")
def login() -> dict[str, Any]:
    session["user"] = request.get_json()["user"]
    return {"ok": True}


@app.get("/me")
async def me() -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"user": session.get("user"), "greenlet": in_request_greenlet()}


@app.get("/stream")
def stream() -> Response:
    count = int(request.args.get("n", "3"))

    @stream_with_context
    def chunks() -> Iterator[str]:
        for index in range(count):
            ext.run(asyncio.sleep(0.01))
            yield f"{request.path} {index} {in_request_greenlet()}\n"

    return Response(chunks(), mimetype="text/plain")


async def ticks(count: int) -> AsyncIterator[str]:
    for index in range(count):
        await asyncio.sleep(0.01)
        yield f"tick {index}\n"


@app.get("/astream")
def astream() -> Response:
    return ext.stream(ticks(int(request.args.get("n", "3"))), mimetype="text/plain")


asgi_app = on_loop(app)
