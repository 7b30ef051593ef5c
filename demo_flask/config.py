"""Every setting of the demo in one table, with its default, read from the environment too.

:data:`SETTINGS` is the one list: ``create_app()`` starts from
:func:`from_environ` (each setting's default, replaced by the environment
variable of the same name when it is set) and ``create_app(config)`` wins over
both. ``docs/demo.md`` shows the same table (a test keeps the two equal).

Standard library only, like the launcher's checks.

Example::

    os.environ["CAAS_SSE_HEARTBEAT"] = "5"
    assert from_environ()["CAAS_SSE_HEARTBEAT"] == 5.0
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ("SETTINGS", "Setting", "SettingError", "from_environ")


class SettingError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (1/0, true/false, yes/no, on/off)")


def _optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none") else int(text)


def _optional_str(text: str) -> str | None:
    return None if text.strip().lower() in ("", "none") else text


@dataclass(frozen=True)
class Setting:
    """One setting: its name (config key and environment variable), default, parser, meaning."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str


#: Every setting of the demo app (the launcher's own options are its flags).
SETTINGS: tuple[Setting, ...] = (
    Setting("CAAS_MODE", "bridge", str,
            "how the app reaches the upstream and Redis: one of the modes"),
    Setting("UPSTREAM_URL", "http://127.0.0.1:8081", str,
            "the dog service (http or https); never taken from a request"),
    Setting("REDIS_URL", "redis://127.0.0.1:6379/0", str, "the Redis for names, billing, tracking"),
    Setting("CAAS_HTTP_TIMEOUT", 35.0, float, "seconds one upstream call may take"),
    Setting("CAAS_SSE_MAX_SECONDS", 300.0, float, "longest a /track stream stays open, seconds"),
    Setting("CAAS_SSE_HEARTBEAT", 15.0, float,
            "seconds of silence before a /track keep-alive comment (how a gone client is noticed)"),
    Setting("CAAS_REDIS_POOL", 8, int,
            "bridge mode: connections of the shared Redis pool for commands"),
    Setting("CAAS_MAX_BODY_BYTES", 4096, int,
            "largest request body (POST /track); larger answers 413"),
    Setting("AIOBRIDGE_TIMEOUT", 40.0, float,
            "bridge mode: seconds a request may run on the loop before a 504 (above the "
            "longest /delay, so the upstream's own timeout answers first)"),
    Setting("AIOBRIDGE_MAX_IN_FLIGHT", None, _optional_int,
            "bridge mode: most requests on the loop at once (none: no limit)"),
    Setting("AIOBRIDGE_STOP_TIMEOUT", 5.0, float,
            "bridge mode: seconds in-flight calls get when a worker stops"),
    Setting("AIOBRIDGE_UVLOOP", False, _bool, "bridge mode: run the worker's loop on uvloop"),
    Setting("AIOBRIDGE_METRICS_ENDPOINT", "/metrics", _optional_str,
            "bridge mode: Prometheus metrics route, summed over workers (none: off)"),
)  # fmt: skip


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Each setting's default, or its environment variable's value when set.

    Raises:
        SettingError: a variable's value does not parse; the message names it.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.name)
        if raw is None:
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise SettingError(f"environment variable {setting.name}={raw!r}: {exc}") from None
    return values
