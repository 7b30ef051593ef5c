"""The demo's settings: one table, every setting read from the environment, documented.

``demo_flask.config.SETTINGS`` is the one list; these tests check that each
setting reaches the app from its environment variable, that a bad value names
its variable, and that ``docs/demo.md`` shows the same names and defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from demo_flask.config import SETTINGS, SettingError, from_environ
from tests.demo_apps import DemoAppFactory, demo_app

__all__ = ("demo_app",)  # the fixture

DOCS = Path(__file__).resolve().parent.parent / "docs" / "demo.md"

#: A value other than the default for each setting, as the environment spells it.
FROM_ENV: dict[str, tuple[str, Any]] = {
    "CAAS_MODE": ("sync", "sync"),
    "UPSTREAM_URL": ("http://127.0.0.1:9", "http://127.0.0.1:9"),
    "REDIS_URL": ("redis://127.0.0.1:9/1", "redis://127.0.0.1:9/1"),
    "CAAS_HTTP_TIMEOUT": ("12.5", 12.5),
    "CAAS_SSE_MAX_SECONDS": ("60", 60.0),
    "CAAS_SSE_HEARTBEAT": ("2.5", 2.5),
    "CAAS_REDIS_POOL": ("3", 3),
    "CAAS_MAX_BODY_BYTES": ("1024", 1024),
    "AIOBRIDGE_TIMEOUT": ("7", 7.0),
    "AIOBRIDGE_MAX_IN_FLIGHT": ("16", 16),
    "AIOBRIDGE_STOP_TIMEOUT": ("2", 2.0),
    "AIOBRIDGE_UVLOOP": ("yes", True),
    "AIOBRIDGE_METRICS_ENDPOINT": ("none", None),
}


def test_every_setting_has_a_value_to_try() -> None:
    assert set(FROM_ENV) == {s.name for s in SETTINGS}


def test_every_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, demo_app: DemoAppFactory
) -> None:
    for name, (raw, _) in FROM_ENV.items():
        monkeypatch.setenv(name, raw)
    app = demo_app({"TESTING": True})
    for name, (_, value) in FROM_ENV.items():
        assert app.config[name] == value, name
    assert app.config["MAX_CONTENT_LENGTH"] == 1024
    settings = app.extensions["caas"].settings
    assert (settings.http_timeout, settings.sse_heartbeat, settings.sse_max_seconds,
            settings.redis_pool) == (12.5, 2.5, 60.0, 3)  # fmt: skip


def test_create_app_config_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, demo_app: DemoAppFactory
) -> None:
    monkeypatch.setenv("CAAS_SSE_HEARTBEAT", "2.5")
    app = demo_app({"CAAS_MODE": "sync", "CAAS_SSE_HEARTBEAT": 9.0})
    assert app.config["CAAS_SSE_HEARTBEAT"] == 9.0


def test_a_bad_value_names_its_variable() -> None:
    with pytest.raises(SettingError, match="CAAS_SSE_HEARTBEAT='soon'"):
        from_environ({"CAAS_SSE_HEARTBEAT": "soon"})


def _documented() -> dict[str, str]:
    """``{name: default}`` from the settings table of docs/demo.md."""
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)` \|", DOCS.read_text(encoding="utf-8"), re.M)
    return dict(rows)


def test_the_docs_table_lists_every_setting_with_its_default() -> None:
    expected = {s.name: "none" if s.default is None else str(s.default).lower()
                if isinstance(s.default, bool) else str(s.default) for s in SETTINGS}  # fmt: skip
    assert _documented() == expected
