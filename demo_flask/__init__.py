"""Canines as a Service: the aiobridge demo, a Flask app served by gunicorn.

Per request it fetches a dog picture from the upstream dog service, looks the
dog's name up and bills the request in Redis. The same routes run in seven
Flask modes (``sync``, ``gevent``, ``embedded``, ``embedded-thread``,
``flask-async``, ``flask-recipe``, ``bridge``), chosen by ``CAAS_MODE`` (see
:mod:`demo_flask.modes`), and in an eighth, ``quart``, a rewrite of the routes
in Quart (:mod:`demo_flask.quart_app`, its own app served by uvicorn).

Configuration (``create_app(config)`` wins over the environment):

- ``CAAS_MODE``: one of :data:`MODES` (env ``CAAS_MODE``, default ``bridge``).
- ``UPSTREAM_URL``: the dog service (env ``UPSTREAM_URL``, default
  ``http://127.0.0.1:8081``). Never taken from a request.
- ``REDIS_URL``: env ``REDIS_URL``, default ``redis://127.0.0.1:6379/0``.
- ``CAAS_HTTP_TIMEOUT``: seconds for one upstream call (env ``CAAS_HTTP_TIMEOUT``,
  default 35).
- ``CAAS_SSE_MAX_SECONDS``: longest a ``/track`` stream stays open (default 300).
- ``CAAS_SSE_HEARTBEAT``: seconds of silence before a keep-alive comment,
  which is also how a gone client is noticed (default 15).
- ``CAAS_REDIS_POOL``: connections of the bridge mode's shared Redis pool for
  commands (default 8; pub/sub streams use a client of their own).
- ``AIOBRIDGE_*``: the bridge mode's extension settings; ``AIOBRIDGE_TIMEOUT``
  (default 40) and ``AIOBRIDGE_UVLOOP`` (``1`` runs the bridge's loop on
  uvloop) are also read from the environment
  (see :class:`aiobridge.flask.AioBridge`).

Example::

    app = create_app({"CAAS_MODE": "bridge", "REDIS_URL": "redis://127.0.0.1:6379/0"})
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from .embedded_thread import EmbeddedThreadMode
from .errors import register_error_handlers
from .models import Settings
from .modes import EmbeddedMode, FlaskAsyncMode, GeventMode, Mode, SyncMode
from .page import create_page_blueprint
from .params import MAX_BODY_BYTES
from .views import EXTENSION_KEY, create_blueprint

__all__ = ("ALL_MODES", "MODES", "begin_shutdown", "create_app", "default_config", "settings_of",
           "shutdown")  # fmt: skip

#: The modes of the Flask app (``create_app``), in the order the benchmarks show them.
MODES = ("sync", "gevent", "embedded", "embedded-thread", "flask-async", "flask-recipe",
         "bridge")  # fmt: skip
#: Every mode the demo runs: the Flask ones and the Quart rewrite.
ALL_MODES = (*MODES, "quart")


def default_config() -> dict[str, Any]:
    """The settings listed in this module's docstring, from the environment or defaults."""
    return _defaults()


def _defaults() -> dict[str, Any]:
    return {
        "CAAS_MODE": os.environ.get("CAAS_MODE", "bridge"),
        "UPSTREAM_URL": os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081"),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "CAAS_HTTP_TIMEOUT": float(os.environ.get("CAAS_HTTP_TIMEOUT", "35")),
        "CAAS_SSE_MAX_SECONDS": 300.0,
        "CAAS_SSE_HEARTBEAT": 15.0,
        "CAAS_REDIS_POOL": int(os.environ.get("CAAS_REDIS_POOL", "8")),
        # Above the longest /delay (30 s) so the upstream's own timeout answers first.
        "AIOBRIDGE_TIMEOUT": float(os.environ.get("AIOBRIDGE_TIMEOUT", "40")),
        "AIOBRIDGE_UVLOOP": os.environ.get("AIOBRIDGE_UVLOOP", "").lower() in ("1", "true", "yes"),
        # Prometheus metrics of the worker's bridge (bridge mode), summed over workers.
        "AIOBRIDGE_METRICS_ENDPOINT": "/metrics",
        "MAX_CONTENT_LENGTH": MAX_BODY_BYTES,
        # Never debug under gunicorn, even with FLASK_DEBUG=1 in the environment
        # (Flask reads it at construction); `flask run --debug` still sets it later.
        "DEBUG": False,
    }


def settings_of(config: Mapping[str, Any]) -> Settings:
    """What the modes need from an app's config.

    Raises:
        ValueError: ``UPSTREAM_URL`` is not an http(s) URL.
    """
    upstream = str(config["UPSTREAM_URL"]).rstrip("/")
    if not upstream.startswith(("http://", "https://")):
        raise ValueError(f"UPSTREAM_URL must be an http(s) URL, got {upstream!r}")
    return Settings(
        upstream_url=upstream,
        redis_url=str(config["REDIS_URL"]),
        http_timeout=float(config["CAAS_HTTP_TIMEOUT"]),
        sse_max_seconds=float(config["CAAS_SSE_MAX_SECONDS"]),
        sse_heartbeat=float(config["CAAS_SSE_HEARTBEAT"]),
        redis_pool=int(config["CAAS_REDIS_POOL"]),
    )


def _make_mode(name: str, app: Flask, settings: Settings) -> Mode:
    if name == "bridge":
        from .bridge_mode import BridgeMode

        return BridgeMode(app, settings)
    if name == "flask-recipe":
        from .recipe_mode import FlaskRecipeMode

        return FlaskRecipeMode(app, settings)
    if name == "quart":
        raise ValueError("CAAS_MODE quart is a Quart app: see demo_flask.quart_app")
    blocking: dict[str, type[Mode]] = {
        "sync": SyncMode,
        "gevent": GeventMode,
        "embedded": EmbeddedMode,
        "embedded-thread": EmbeddedThreadMode,
        "flask-async": FlaskAsyncMode,
    }
    if name not in blocking:
        raise ValueError(f"CAAS_MODE must be one of {', '.join(MODES)}, got {name!r}")
    return blocking[name](settings)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the demo app; nothing connects or starts a loop until a request.

    Args:
        config: overrides of the settings listed in this module's docstring.

    Raises:
        ValueError: an unknown mode or a malformed ``UPSTREAM_URL``.
    """
    app = Flask(__name__)
    app.config.from_mapping(_defaults())
    if config:
        app.config.from_mapping(config)
    mode = _make_mode(str(app.config["CAAS_MODE"]), app, settings_of(app.config))
    app.extensions[EXTENSION_KEY] = mode
    register_error_handlers(app)
    app.register_blueprint(create_blueprint(mode.is_async))
    app.register_blueprint(create_page_blueprint())
    return app


def shutdown(app: Flask) -> None:
    """Release what the app's mode holds (clients, loops, the bridge). Idempotent."""
    mode: Mode | None = app.extensions.get(EXTENSION_KEY)
    if mode is not None:
        mode.close()


def begin_shutdown(app: Flask) -> None:
    """Ask open ``/track`` streams to end now (the server is about to stop)."""
    mode: Mode | None = app.extensions.get(EXTENSION_KEY)
    if mode is not None:
        mode.begin_shutdown()
