"""The Flask-suite gate's plugin (tests/flask_gate/plugin.py) on a small suite of its own.

CI runs Flask's own test suite through this plugin (``python -m tests.flask_gate``);
here, without a download: a test file written like Flask's, whose apps never
mention aiobridge, passes with the plugin, and fails when the extension is
bypassed (``--aiobridge-bypass``: Flask's own ``async_to_sync`` runs).
"""

from __future__ import annotations

import pytest

from tests.helpers import ROOT

FLASK_STYLE_TESTS = """
import asyncio
import threading

from flask import Flask


def make_app():
    app = Flask(__name__)

    @app.before_request
    async def before():
        await asyncio.sleep(0)

    @app.get("/")
    async def index():
        await asyncio.sleep(0)
        return threading.current_thread().name

    return app


def test_async_view():
    assert make_app().test_client().get("/").status_code == 200


def test_sync_only():
    app = Flask(__name__)
    app.add_url_rule("/", "index", lambda: "sync")
    assert app.test_client().get("/").get_data() == b"sync"


class Sub(Flask):
    pass


def test_subclass_gets_the_extension_too():
    app = Sub(__name__)
    assert "aiobridge" in app.extensions
"""


@pytest.fixture
def flask_style(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makepyfile(test_flask_style=FLASK_STYLE_TESTS)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    monkeypatch.setenv("PYTHONPATH", ROOT)  # the child pytest imports tests.flask_gate.plugin
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "tests.flask_gate.plugin", "-p", "no:randomly", "-p", "no:cacheprovider", *args,
        timeout=120,
    )


def test_the_gate_passes_when_the_bridge_runs_the_async_code(
    flask_style: pytest.Pytester,
) -> None:
    result = _run(flask_style)
    result.assert_outcomes(passed=3)


def test_the_gate_fails_when_the_extension_is_bypassed(flask_style: pytest.Pytester) -> None:
    result = _run(flask_style, "--aiobridge-bypass")
    result.assert_outcomes(passed=3, errors=1)  # the async test errors at its teardown
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_async_view*",
        "aiobridge was bypassed: Flask's own async_to_sync ran 2 time(s); 2 async "
        "view/hook/handler call(s), only 0 handed to a bridge",
    ])
