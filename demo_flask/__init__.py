"""Canines as a Service: the aiobridge demo, a Flask app served by gunicorn.

Per request it fetches a dog picture from the upstream dog service, looks the
dog's name up and bills the request in Redis. The same routes run in eight
Flask modes (``sync``, ``gevent``, ``embedded``, ``embedded-thread``,
``flask-async``, ``flask-recipe``, ``bridge``, ``bridge-loop``), chosen by
``CAAS_MODE`` (see :mod:`demo_flask.modes`), and in a ninth, ``quart``, a
rewrite of the routes in Quart (:mod:`demo_flask.quart_app`, its own app served
by uvicorn). ``bridge-loop`` is the ``bridge`` mode's app served on the ASGI
server's own loop, one greenlet per request (:mod:`demo_flask.onloop_app`).

Configuration: every setting, its default and its environment variable are
in one table, :data:`demo_flask.config.SETTINGS` (shown in ``docs/demo.md``);
``create_app(config)`` wins over the environment, which wins over the defaults.

Importing this package is cheap (no Flask, no clients): ``python -m
demo_flask`` installs its Ctrl-C handling and checks the mode's packages
before anything heavy is imported; ``create_app`` imports the app's modules.

Example::

    app = create_app({"CAAS_MODE": "bridge", "REDIS_URL": "redis://127.0.0.1:6379/0"})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from .models import Settings
    from .modes import Mode

__all__ = ("ALL_MODES", "MODES", "begin_shutdown", "create_app", "default_config", "settings_of",
           "shutdown")  # fmt: skip

#: The modes of the Flask app (``create_app``), in the order the benchmarks show them.
MODES = ("sync", "gevent", "embedded", "embedded-thread", "flask-async", "flask-recipe",
         "bridge", "bridge-loop")  # fmt: skip
#: Every mode the demo runs: the Flask ones and the Quart rewrite.
ALL_MODES = (*MODES, "quart")


def default_config() -> dict[str, Any]:
    """Every setting of :data:`demo_flask.config.SETTINGS`, from the environment or defaults."""
    return _defaults()


def _defaults() -> dict[str, Any]:
    from .config import from_environ

    settings = from_environ()
    return {
        **settings,
        "MAX_CONTENT_LENGTH": settings["CAAS_MAX_BODY_BYTES"],
        # Never debug under gunicorn, even with FLASK_DEBUG=1 in the environment
        # (Flask reads it at construction); `flask run --debug` still sets it later.
        "DEBUG": False,
    }


def settings_of(config: Mapping[str, Any]) -> Settings:
    """What the modes need from an app's config.

    Raises:
        ValueError: ``UPSTREAM_URL`` is not an http(s) URL.
    """
    from .models import Settings

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
    from .embedded_thread import EmbeddedThreadMode
    from .modes import EmbeddedMode, FlaskAsyncMode, GeventMode, SyncMode

    if name in ("bridge", "bridge-loop"):
        from .bridge_mode import BridgeLoopMode, BridgeMode

        return (BridgeMode if name == "bridge" else BridgeLoopMode)(app, settings)
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
    from flask import Flask

    from .errors import register_error_handlers
    from .page import create_page_blueprint
    from .views import EXTENSION_KEY, create_blueprint

    app = Flask(__name__)
    app.config.from_mapping(_defaults())
    if config:
        app.config.from_mapping(config)
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["CAAS_MAX_BODY_BYTES"])
    mode = _make_mode(str(app.config["CAAS_MODE"]), app, settings_of(app.config))
    app.extensions[EXTENSION_KEY] = mode
    register_error_handlers(app)
    app.register_blueprint(create_blueprint(mode.is_async))
    app.register_blueprint(create_page_blueprint())
    return app


def shutdown(app: Flask) -> None:
    """Release what the app's mode holds (clients, loops, the bridge). Idempotent."""
    from .views import EXTENSION_KEY

    mode: Mode | None = app.extensions.get(EXTENSION_KEY)
    if mode is not None:
        mode.close()


def begin_shutdown(app: Flask) -> None:
    """Ask open ``/track`` streams to end now (the server is about to stop)."""
    from .views import EXTENSION_KEY

    mode: Mode | None = app.extensions.get(EXTENSION_KEY)
    if mode is not None:
        mode.begin_shutdown()
