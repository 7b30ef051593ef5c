"""The demo's routes, as one blueprint per kind of mode.

Blocking modes get plain ``def`` views, async modes the same views written
``async def``; both validate input identically and build identical responses.
"""

from __future__ import annotations

import os
from typing import Any, cast

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import UnsupportedMediaType

from . import params
from .errors import REDIS_FAILOVER_ERRORS
from .models import DelayResult, DogResult
from .modes import AsyncMode, BlockingMode, Mode

__all__ = ("EXTENSION_KEY", "REDIS_DOWN", "create_blueprint", "current_mode", "dog_headers",
           "stats_body")

EXTENSION_KEY = "caas"


def current_mode() -> Mode:
    """The mode of the app handling the current request."""
    return cast(Mode, current_app.extensions[EXTENSION_KEY])


def _latency() -> int:
    return params.latency(request.args)


def _fan_out() -> tuple[float, int]:
    return params.fan_out(request.args)


def _position(order_id: str) -> dict[str, Any]:
    order = params.order_id(order_id)
    if request.content_length and not request.is_json:
        raise UnsupportedMediaType(
            "send the position with the header Content-Type: application/json, "
            f"got {request.mimetype or 'none'}"
        )
    # Past MAX_CONTENT_LENGTH this raises RequestEntityTooLarge: a 413.
    return params.position(request.get_json(silent=True), order)


def dog_headers(result: DogResult) -> dict[str, str]:
    """The headers of a ``/dog`` answer (its body is the JPEG picture).

    ``X-Worker-Pid`` names the worker process that answered (as ``/stats``
    does): the failover drills tell from it when each worker writes again.
    """
    return {"X-Filename": result.filename, "X-Dog-Name": result.name,
            "X-Worker-Pid": str(os.getpid())}  # fmt: skip


def _dog_response(result: DogResult) -> Response:
    return Response(result.image, mimetype="image/jpeg", headers=dog_headers(result))


def _delay_response(result: DelayResult) -> Response:
    return jsonify(result.as_json())


# /stats must answer while Redis is down: that is when its loop figures matter.
REDIS_DOWN = REDIS_FAILOVER_ERRORS


def stats_body(
    mode: str, billed: int | None, redis_error: str | None = None,
    figures: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``/stats``'s JSON: which worker answered, the billing count (or why it is
    missing) and the mode's figures.

    Billing is one counter in Redis, shared by every worker; the rest is this
    worker process's own: each gunicorn worker answers for itself.
    """
    billing: dict[str, Any] = {"dog_requests": billed}
    if redis_error is not None:
        billing["error"] = f"redis is unavailable: {redis_error}"
    return {"mode": mode, "worker_pid": os.getpid(), "billing": billing, **(figures or {})}


def _stats(mode: Mode, billed: int | None, redis_error: str | None = None) -> Response:
    return jsonify(stats_body(mode.name, billed, redis_error, mode.stats()))


def health() -> ResponseReturnValue:
    """Liveness: the app is up (it does not call Redis or the upstream)."""
    return jsonify({"status": "ok", "mode": current_mode().name})


def track(order_id: str) -> ResponseReturnValue:
    """Server-sent events of the order's positions until a terminal status."""
    return current_mode().track_response(params.order_id(order_id))


def dog() -> ResponseReturnValue:
    """A dog picture with its name in ``X-Dog-Name``; the request is billed."""
    mode = cast(BlockingMode, current_mode())
    return _dog_response(mode.dog(_latency()))


def delay() -> ResponseReturnValue:
    """``n`` calls to the upstream's slow endpoint."""
    mode = cast(BlockingMode, current_mode())
    return _delay_response(mode.delay(*_fan_out()))


def publish(order_id: str) -> ResponseReturnValue:
    """Publish a position (JSON ``{"lat", "lon", "status"}``) for an order."""
    mode = cast(BlockingMode, current_mode())
    listeners = mode.publish(_position(order_id))
    return jsonify({"published": True, "listeners": listeners}), 202


def stats() -> ResponseReturnValue:
    """Billing counters and the mode's own figures (bridge stats in bridge mode)."""
    mode = cast(BlockingMode, current_mode())
    try:
        billed = mode.billing()
    except REDIS_DOWN as exc:
        return _stats(mode, None, str(exc))
    return _stats(mode, billed)


async def dog_async() -> ResponseReturnValue:
    """A dog picture with its name in ``X-Dog-Name``; the request is billed."""
    mode = cast(AsyncMode, current_mode())
    return _dog_response(await mode.dog(_latency()))


async def delay_async() -> ResponseReturnValue:
    """``n`` concurrent calls to the upstream's slow endpoint."""
    mode = cast(AsyncMode, current_mode())
    return _delay_response(await mode.delay(*_fan_out()))


async def publish_async(order_id: str) -> ResponseReturnValue:
    """Publish a position (JSON ``{"lat", "lon", "status"}``) for an order."""
    mode = cast(AsyncMode, current_mode())
    listeners = await mode.publish(_position(order_id))
    return jsonify({"published": True, "listeners": listeners}), 202


async def stats_async() -> ResponseReturnValue:
    """Billing counters and the mode's own figures (bridge stats in bridge mode)."""
    mode = cast(AsyncMode, current_mode())
    try:
        billed = await mode.billing()
    except REDIS_DOWN as exc:
        return _stats(mode, None, str(exc))
    return _stats(mode, billed)


def create_blueprint(is_async: bool) -> Blueprint:
    """The demo's routes, with ``async def`` views when ``is_async``."""
    bp = Blueprint("caas", __name__)
    bp.add_url_rule("/health", "health", health)
    bp.add_url_rule("/track/<order_id>", "track", track, methods=["GET"])
    if is_async:
        bp.add_url_rule("/dog", "dog", dog_async)
        bp.add_url_rule("/delay", "delay", delay_async)
        bp.add_url_rule("/track/<order_id>", "publish", publish_async, methods=["POST"])
        bp.add_url_rule("/stats", "stats", stats_async)
    else:
        bp.add_url_rule("/dog", "dog", dog)
        bp.add_url_rule("/delay", "delay", delay)
        bp.add_url_rule("/track/<order_id>", "publish", publish, methods=["POST"])
        bp.add_url_rule("/stats", "stats", stats)
    return bp
