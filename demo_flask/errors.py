"""JSON error responses for bad input and for failing dependencies."""

from __future__ import annotations

import logging

import aiohttp
import redis.exceptions
import requests
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

from .params import BadParameter

__all__ = ("register_error_handlers",)

log = logging.getLogger(__name__)


def _bad_parameter(error: BadParameter) -> ResponseReturnValue:
    return jsonify(error.as_json()), 400


def _upstream_failed(error: Exception) -> ResponseReturnValue:
    log.warning("upstream call failed: %r", error)
    return jsonify({"error": "the upstream dog service failed", "detail": str(error)}), 502


def _upstream_timed_out(error: Exception) -> ResponseReturnValue:
    log.warning("timed out: %r", error)
    return jsonify({"error": "timed out waiting for a dependency"}), 504


def _redis_failed(error: Exception) -> ResponseReturnValue:
    log.warning("redis call failed: %r", error)
    return jsonify({"error": "redis is unavailable", "detail": str(error)}), 503


def register_error_handlers(app: Flask) -> None:
    """400 for bad input, 502/504 for the upstream, 503 for Redis, all JSON."""
    app.register_error_handler(BadParameter, _bad_parameter)
    app.register_error_handler(aiohttp.ClientError, _upstream_failed)
    app.register_error_handler(requests.RequestException, _upstream_failed)
    app.register_error_handler(requests.Timeout, _upstream_timed_out)
    app.register_error_handler(TimeoutError, _upstream_timed_out)
    app.register_error_handler(redis.exceptions.ConnectionError, _redis_failed)
    app.register_error_handler(redis.exceptions.TimeoutError, _redis_failed)
