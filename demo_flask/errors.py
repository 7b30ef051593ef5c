"""Every error the demo answers is JSON of one shape: ``{"error": "<what and why>"}``.

Some carry one more field that a client can act on: ``parameter`` (400, the
input to fix), ``detail`` (502/503, what the dependency said) or ``timeout``
(504 from the bridge, in seconds). Flask's own HTTP errors (404, 405, 413,
414, 415, 500) get the same shape instead of Werkzeug's HTML pages.

The handlers return plain ``(dict, status[, headers])`` answers, which Flask
and Quart both send as JSON: the Quart rewrite (:mod:`demo_flask.quart_app`)
registers the same ones with :func:`register_json_errors`.

Example: ``GET /nope`` answers 404 with
``{"error": "not found: the requested URL was not found on the server. ..."}``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import aiohttp
import redis.exceptions
import requests
from flask import Flask, request
from werkzeug.exceptions import HTTPException, InternalServerError, RequestURITooLarge

from .params import MAX_URL_LENGTH, BadParameter

__all__ = ("ERROR_FIELDS", "REDIS_FAILOVER_ERRORS", "register_error_handlers",
           "register_json_errors")

log = logging.getLogger(__name__)

ErrorAnswer = tuple[dict[str, Any], int] | tuple[dict[str, Any], int, list[tuple[str, str]]]


class _HandlesErrors(Protocol):
    def register_error_handler(self, code_or_exception: Any, f: Any) -> None: ...

#: Redis is down or changing masters: each is a 503 (a dead server, a pool that
#: waited too long, a demoted master's READONLY, a Cluster slot without a master,
#: a Cluster no node of which answers). Other Redis errors are bugs: a 500.
REDIS_FAILOVER_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
)

#: The keys an error body may have: ``error`` always, at most one of the others.
ERROR_FIELDS = frozenset({"error", "parameter", "detail", "timeout"})


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


def _http_error(error: HTTPException) -> ErrorAnswer:
    # Werkzeug's headers minus its HTML Content-Type; 405 keeps its Allow header.
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    name = error.name.lower()
    description = (error.description or "").rstrip(".")
    message = f"{name}: {description[0].lower()}{description[1:]}" if description else name
    return {"error": message}, error.code or 500, headers


def _internal_error(error: InternalServerError) -> ErrorAnswer:
    # Flask has already logged the original exception with its traceback.
    return {"error": "internal server error: the failure is in the server's log"}, 500


def _url_length_limit() -> None:
    if len(request.full_path) > MAX_URL_LENGTH:
        raise RequestURITooLarge(f"the URL is longer than {MAX_URL_LENGTH} characters")


def register_error_handlers(app: Flask) -> None:
    """400 for bad input, 502/504 for the upstream, 503 for Redis, HTTP errors: all JSON."""
    app.before_request(_url_length_limit)
    register_json_errors(app)


def register_json_errors(app: _HandlesErrors) -> None:
    """The JSON answers alone, for a Flask or a Quart app (no request hook)."""
    app.register_error_handler(BadParameter, _bad_parameter)
    app.register_error_handler(aiohttp.ClientError, _upstream_failed)
    app.register_error_handler(requests.RequestException, _upstream_failed)
    app.register_error_handler(requests.Timeout, _upstream_timed_out)
    app.register_error_handler(TimeoutError, _upstream_timed_out)
    for failure in REDIS_FAILOVER_ERRORS:
        app.register_error_handler(failure, _redis_failed)
    app.register_error_handler(InternalServerError, _internal_error)
    app.register_error_handler(HTTPException, _http_error)
