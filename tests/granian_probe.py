"""A granian factory for the tests: the demo's, noting in a file when the bridge was stopped."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from demo_flask import granian_app

_shutdown = granian_app.shutdown


def _noted_shutdown(app: Flask) -> None:
    _shutdown(app)
    Path(os.environ["PROBE_STOPPED_FILE"]).write_text("stopped", encoding="utf-8")


def create_app() -> Flask:
    """The demo under granian, with its exit shutdown noted in ``PROBE_STOPPED_FILE``."""
    granian_app.shutdown = _noted_shutdown
    return granian_app.create_app()
