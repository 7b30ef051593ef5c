"""The demo's web page (``GET /``) and the order it lets a visitor place (``POST /orders``).

The page is one static HTML file with plain JavaScript, no build step: a dog
and its name from ``/dog``, an order whose positions arrive live through
``/track/<order_id>`` (``EventSource``) until it is delivered, and the serving
worker's figures from ``/stats``. It works the same in every mode.

``POST /orders`` places an order: a new order id and the route its courier
will take. The page plays the courier: it publishes each position of the route
with ``POST /track/<order_id>``, the way a courier's phone would.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, send_from_directory, url_for
from flask.typing import ResponseReturnValue

__all__ = ("PAGE", "ROUTE_STEPS", "STATIC_DIR", "create_page_blueprint", "new_order",
           "plan_route")

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The page's file in :data:`STATIC_DIR`.
PAGE = "index.html"
#: Positions of a route, the last one ``delivered``.
ROUTE_STEPS = 6
_KITCHEN = (48.8566, 2.3522)
_STEP = (0.0021, 0.0034)


def plan_route(steps: int = ROUTE_STEPS) -> list[dict[str, Any]]:
    """A courier's route: picked up, en route, delivered (``steps`` positions)."""
    route = []
    for index in range(steps):
        status = "picked_up" if index == 0 else "delivered" if index == steps - 1 else "en_route"
        route.append({
            "lat": round(_KITCHEN[0] + _STEP[0] * index, 6),
            "lon": round(_KITCHEN[1] + _STEP[1] * index, 6),
            "status": status,
        })  # fmt: skip
    return route


def new_order(track_url: Callable[[str], str]) -> dict[str, Any]:
    """The body of ``POST /orders``: a new order id, its ``/track`` URL and its route."""
    order_id = f"order-{secrets.token_hex(6)}"
    return {"order_id": order_id, "track": track_url(order_id), "route": plan_route()}


def index() -> ResponseReturnValue:
    """The page."""
    response = send_from_directory(STATIC_DIR, PAGE, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


def place_order() -> ResponseReturnValue:
    """A new order: its id, where to follow it and its courier's route."""
    return jsonify(new_order(lambda order_id: url_for("caas.track", order_id=order_id))), 201


def create_page_blueprint() -> Blueprint:
    """``GET /`` and ``POST /orders``; the same in every mode."""
    bp = Blueprint("page", __name__)
    bp.add_url_rule("/", "index", index, methods=["GET"])
    bp.add_url_rule("/orders", "place_order", place_order, methods=["POST"])
    return bp
