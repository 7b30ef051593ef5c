"""JSON error responses for bad input and for failing dependencies.

The handlers return plain ``(dict, status)`` pairs, which Flask and Quart both
answer as JSON, so the Flask modes and the Quart rewrite give identical errors.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import aiohttp
import redis.exceptions
import requests

from .params import BadParameter

__all__ = ("register_error_handlers",)

log = logging.getLogger(__name__)

ErrorAnswer = tuple[dict[str, Any], int]


class _HandlesErrors(Protocol):
    def register_error_handler(self, code_or_exception: Any, f: Any) -> None: ...


def _bad_parameter(error: BadParameter) -> ErrorAnswer:
    return error.as_json(), 400


def _upstream_failed(error: Exception) -> ErrorAnswer:
    log.warning("upstream call failed: %r", error)
    return {"error": "the upstream dog service failed", "detail": str(error)}, 502


def _upstream_timed_out(error: Exception) -> ErrorAnswer:
    log.warning("timed out: %r", error)
    return {"error": "timed out waiting for a dependency"}, 504


def _redis_failed(error: Exception) -> ErrorAnswer:
    log.warning("redis call failed: %r", error)
    return {"error": "redis is unavailable", "detail": str(error)}, 503


def register_error_handlers(app: _HandlesErrors) -> None:
    """400 for bad input, 502/504 for the upstream, 503 for Redis, all JSON."""
    app.register_error_handler(BadParameter, _bad_parameter)
    app.register_error_handler(aiohttp.ClientError, _upstream_failed)
    app.register_error_handler(requests.RequestException, _upstream_failed)
    app.register_error_handler(requests.Timeout, _upstream_timed_out)
    app.register_error_handler(TimeoutError, _upstream_timed_out)
    app.register_error_handler(redis.exceptions.ConnectionError, _redis_failed)
    app.register_error_handler(redis.exceptions.TimeoutError, _redis_failed)
