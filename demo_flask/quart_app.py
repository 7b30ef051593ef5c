"""The ``quart`` mode: the demo's routes rewritten for Quart, served by uvicorn.

This is the rewrite a Flask developer would weigh against aiobridge: every
view ``async def`` on the server's own loop, one aiohttp session and one
``redis.asyncio`` pool opened when the server starts serving and closed when
it stops (:class:`~demo_flask.shared_clients.SharedClients`). Validation,
error answers and response shapes are the Flask app's own
(:mod:`demo_flask.params`, :mod:`demo_flask.errors`, :mod:`demo_flask.views`),
so both answer every request, good or bad, alike.

Run it with ``python -m demo_flask --mode quart`` (uvicorn, see
:mod:`demo_flask.uvicorn_server`).

Example::

    app = create_quart_app({"REDIS_URL": "redis://127.0.0.1:6379/0"})
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

from quart import Quart, Response, current_app, request, send_from_directory, url_for
from quart.typing import ResponseReturnValue

from . import default_config, params, settings_of
from .errors import register_json_errors
from .models import Settings
from .modes import SSE_HEADERS
from .page import PAGE, STATIC_DIR, new_order
from .shared_clients import SharedClients
from .views import EXTENSION_KEY, REDIS_DOWN, dog_headers, stats_body

__all__ = ("QuartMode", "create_quart_app")


class QuartMode:
    """The rewrite's state: its clients and whether the server is stopping."""

    name = "quart"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clients = SharedClients(settings)
        self.stopping = False

    def begin_shutdown(self) -> None:
        """End open ``/track`` streams (within ``STOP_POLL``); new ones end at once."""
        self.stopping = True

    async def open(self) -> None:
        """Open the clients on the server's loop (``before_serving``)."""
        await self.clients.open()

    async def close(self) -> None:
        """Close the clients (``after_serving``); ends open streams first."""
        self.begin_shutdown()
        await self.clients.close()

    async def sse(self, order_id: str) -> AsyncGenerator[str, None]:
        events = self.clients.track(order_id, stopping=lambda: self.stopping)
        try:
            async for event in events:
                yield event.to_sse()
        finally:
            await events.aclose()


def _mode() -> QuartMode:
    return cast(QuartMode, current_app.extensions[EXTENSION_KEY])


async def health() -> ResponseReturnValue:
    """Liveness: the app is up (it does not call Redis or the upstream)."""
    return {"status": "ok", "mode": _mode().name}


async def dog() -> ResponseReturnValue:
    """A dog picture with its name in ``X-Dog-Name``; the request is billed."""
    result = await _mode().clients.dog(params.latency(request.args))
    return Response(result.image, mimetype="image/jpeg", headers=dog_headers(result))


async def delay() -> ResponseReturnValue:
    """``n`` concurrent calls to the upstream's slow endpoint."""
    result = await _mode().clients.delay(*params.fan_out(request.args))
    return result.as_json()


async def publish(order_id: str) -> ResponseReturnValue:
    """Publish a position (JSON ``{"lat", "lon", "status"}``) for an order."""
    order = params.order_id(order_id)
    position = params.position(await request.get_json(silent=True), order)
    listeners = await _mode().clients.publish(position)
    return {"published": True, "listeners": listeners}, 202


async def track(order_id: str) -> ResponseReturnValue:
    """Server-sent events of the order's positions until a terminal status."""
    stream = _mode().sse(params.order_id(order_id))
    return Response(stream, mimetype="text/event-stream", headers=SSE_HEADERS)


async def stats() -> ResponseReturnValue:
    """Billing counters (and why they are missing while Redis is down)."""
    mode = _mode()
    try:
        billed = await mode.clients.billing()
    except REDIS_DOWN as exc:
        return stats_body(mode.name, None, str(exc))
    return stats_body(mode.name, billed)


async def index() -> ResponseReturnValue:
    """The demo's page (see :mod:`demo_flask.page`)."""
    response = await send_from_directory(STATIC_DIR, PAGE)
    response.headers["Cache-Control"] = "no-cache"
    return response


async def place_order() -> ResponseReturnValue:
    """A new order: its id, where to follow it and its courier's route."""
    return new_order(lambda order_id: url_for("track", order_id=order_id)), 201


def create_quart_app(config: Mapping[str, Any] | None = None) -> Quart:
    """The Quart rewrite of the demo; its clients open when the server starts serving.

    Args:
        config: overrides of the settings of :mod:`demo_flask` (``CAAS_MODE`` is ignored).

    Raises:
        ValueError: a malformed ``UPSTREAM_URL``.
    """
    app = Quart(__name__)
    app.config.from_mapping(default_config())
    if config:
        app.config.from_mapping(config)
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["CAAS_MAX_BODY_BYTES"])
    settings = settings_of(app.config)
    # A /track stream may last CAAS_SSE_MAX_SECONDS; Quart's own cut-off is 60 s.
    app.config["RESPONSE_TIMEOUT"] = settings.sse_max_seconds + 30
    mode = QuartMode(settings)
    app.extensions[EXTENSION_KEY] = mode
    register_json_errors(app)
    app.before_serving(mode.open)
    app.after_serving(mode.close)
    app.add_url_rule("/health", "health", health)
    app.add_url_rule("/dog", "dog", dog)
    app.add_url_rule("/delay", "delay", delay)
    app.add_url_rule("/track/<order_id>", "track", track, methods=["GET"])
    app.add_url_rule("/track/<order_id>", "publish", publish, methods=["POST"])
    app.add_url_rule("/stats", "stats", stats)
    app.add_url_rule("/", "index", index, methods=["GET"])
    app.add_url_rule("/orders", "place_order", place_order, methods=["POST"])
    return app
