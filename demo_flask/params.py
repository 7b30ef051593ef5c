"""Validation of every value a client sends; bad input becomes a 400 naming it."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = (
    "MAX_BODY_BYTES",
    "MAX_DELAY_SECONDS",
    "MAX_FANOUT",
    "MAX_LATENCY_MS",
    "MAX_URL_LENGTH",
    "POSITION_STATUSES",
    "BadParameter",
    "bounded_float",
    "bounded_int",
    "fan_out",
    "latency",
    "order_id",
    "position",
)

MAX_LATENCY_MS = 10_000
MAX_DELAY_SECONDS = 30.0
MAX_FANOUT = 50
#: Largest request body (``POST /track``): a position is well under 200 bytes.
MAX_BODY_BYTES = 4096
#: Longest path plus query string; longer answers 414.
MAX_URL_LENGTH = 2048
POSITION_STATUSES = ("picked_up", "en_route", "delivered", "cancelled")
_ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class BadParameter(ValueError):
    """A request parameter is missing, malformed or out of bounds."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message

    def as_json(self) -> dict[str, str]:
        return {"error": f"invalid parameter {self.parameter!r}: {self.message}",
                "parameter": self.parameter}  # fmt: skip


def bounded_int(args: Mapping[str, str], name: str, low: int, high: int, default: int) -> int:
    """An integer query parameter in ``[low, high]``, ``default`` when absent."""
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(name, f"must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise BadParameter(name, f"must be an integer from {low} to {high}")
    return value


def bounded_float(
    args: Mapping[str, str], name: str, low: float, high: float, default: float
) -> float:
    """A finite number query parameter in ``[low, high]``, ``default`` when absent."""
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadParameter(name, f"must be a number from {low:g} to {high:g}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise BadParameter(name, f"must be a number from {low:g} to {high:g}")
    return value


def latency(args: Mapping[str, str]) -> int:
    """``/dog``'s ``latency``: milliseconds the upstream waits (0 to 10,000, default 0)."""
    return bounded_int(args, "latency", 0, MAX_LATENCY_MS, 0)


def fan_out(args: Mapping[str, str]) -> tuple[float, int]:
    """``/delay``'s ``seconds`` (0 to 30, default 1) and ``n`` calls (1 to 50, default 3)."""
    seconds = bounded_float(args, "seconds", 0, MAX_DELAY_SECONDS, 1.0)
    n = bounded_int(args, "n", 1, MAX_FANOUT, 3)
    return seconds, n


def order_id(value: str) -> str:
    """An order id: 1 to 64 characters from ``[A-Za-z0-9_-]``."""
    if not _ORDER_ID.fullmatch(value):
        raise BadParameter("order_id", "must be 1 to 64 characters from [A-Za-z0-9_-]")
    return value


def _coordinate(body: Mapping[str, Any], name: str, limit: float) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadParameter(name, f"must be a number from {-limit:g} to {limit:g}")
    if not (math.isfinite(value) and -limit <= value <= limit):
        raise BadParameter(name, f"must be a number from {-limit:g} to {limit:g}")
    return float(value)


def position(body: Any, order: str) -> dict[str, Any]:
    """A position update from a JSON body: ``lat``, ``lon`` and an optional ``status``."""
    if not isinstance(body, dict):
        raise BadParameter("body", 'must be a JSON object like {"lat": 48.85, "lon": 2.35}')
    status = body.get("status", "en_route")
    if status not in POSITION_STATUSES:
        raise BadParameter("status", f"must be one of {', '.join(POSITION_STATUSES)}")
    return {
        "order_id": order,
        "lat": _coordinate(body, "lat", 90),
        "lon": _coordinate(body, "lon", 180),
        "status": status,
    }
