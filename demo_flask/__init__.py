"""Canines as a Service: the aiobridge demo, a Flask app served by gunicorn.

Per request it fetches a dog picture from the upstream dog service, looks the
dog's name up and bills the request in Redis. The same routes run in five
modes (``sync``, ``embedded``, ``embedded-thread``, ``flask-async``,
``bridge``), chosen by ``CAAS_MODE``; see :mod:`demo_flask.modes`.

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

__all__ = ("MODES", "begin_shutdown", "create_app", "shutdown")

#: Every mode's name, in the order the benchmarks show them.
MODES = ("sync", "embedded", "embedded-thread", "flask-async", "bridge")


def _defaults() -> dict[str, Any]:
    from .config import from_environ

    return {
        **from_environ(),
        # Never debug under gunicorn, even with FLASK_DEBUG=1 in the environment
        # (Flask reads it at construction); `flask run --debug` still sets it later.
        "DEBUG": False,
    }


def _settings(app: Flask) -> Settings:
    from .models import Settings

    upstream = str(app.config["UPSTREAM_URL"]).rstrip("/")
    if not upstream.startswith(("http://", "https://")):
        raise ValueError(f"UPSTREAM_URL must be an http(s) URL, got {upstream!r}")
    return Settings(
        upstream_url=upstream,
        redis_url=str(app.config["REDIS_URL"]),
        http_timeout=float(app.config["CAAS_HTTP_TIMEOUT"]),
        sse_max_seconds=float(app.config["CAAS_SSE_MAX_SECONDS"]),
        sse_heartbeat=float(app.config["CAAS_SSE_HEARTBEAT"]),
        redis_pool=int(app.config["CAAS_REDIS_POOL"]),
    )


def _make_mode(name: str, app: Flask, settings: Settings) -> Mode:
    from .embedded_thread import EmbeddedThreadMode
    from .modes import EmbeddedMode, FlaskAsyncMode, SyncMode

    if name == "bridge":
        from .bridge_mode import BridgeMode

        return BridgeMode(app, settings)
    blocking: dict[str, type[Mode]] = {
        "sync": SyncMode,
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
    mode = _make_mode(str(app.config["CAAS_MODE"]), app, _settings(app))
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
