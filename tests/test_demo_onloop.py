"""Flask's own machinery on the server's loop, over real HTTP (the ``bridge-loop`` mode's ground).

uvicorn (uvloop, httptools) serves ``tests/demo_onloop_hooks_app.py`` through
``aiobridge.onloop.on_loop`` in development mode on 127.0.0.1, in a child
process: sync and async ``before_request`` hooks, ``after_request``,
``teardown_request``, sync and async error handlers, ``abort``, an unhandled
exception, the signed cookie session, a ``stream_with_context`` generator that
waits on the loop between chunks and ``ext.stream``, each answered from a
request greenlet; after a graceful stop the server's output is clean.
"""

from __future__ import annotations

import concurrent.futures
import sys
from collections.abc import Iterator

import pytest
import requests

from demo_flask.services import HOST, ChildService
from demo_flask.services.process import answers_health, env_with_repo, terminate

TIMEOUT = 20.0
BAD = ("Traceback", "Unclosed", "Task was destroyed", "never awaited", "Warning")


class HooksServer(ChildService):
    """uvicorn serving the hooks app on its own loop."""

    name = "uvicorn (on the loop)"

    def _command(self) -> list[str]:
        return [sys.executable, "-X", "dev", "-m", "uvicorn",
                "tests.demo_onloop_hooks_app:asgi_app", "--host", HOST, "--port",
                str(self.port), "--loop", "uvloop", "--http", "httptools",
                "--lifespan", "on", "--no-access-log"]  # fmt: skip

    def _env(self) -> dict[str, str]:
        return env_with_repo()

    def _ready(self) -> bool:
        return answers_health(self.url, timeout=1.0)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop_and_read(self, timeout: float) -> str:
        """SIGTERM, a bounded wait (then SIGKILL); what the server wrote until it exited."""
        if self._proc is not None:
            terminate(self._proc, timeout)
        return self.output()


@pytest.fixture(scope="module")
def server() -> Iterator[HooksServer]:
    service = HooksServer(port=None, startup_timeout=60.0)
    with service:
        yield service
        log = service.stop_and_read(timeout=20.0)
    # The one traceback expected: Flask's log of the deliberate bug (test below).
    start, end = log.find("Exception on /fail/bug"), log.find("RuntimeError: a bug")
    if 0 <= start < end:
        log = log[:start] + log[end + len("RuntimeError: a bug"):]
    assert not [line for line in log.splitlines() if any(b in line for b in BAD)], log
    assert "Application shutdown complete" in log, log


def test_hooks_run_in_order_in_the_request_greenlet(server: HooksServer) -> None:
    before = requests.get(server.url + "/teardowns", timeout=TIMEOUT).json()["teardowns"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda i: requests.get(server.url + "/hooks", headers={"X-Tag": f"t{i}"},
                                   timeout=TIMEOUT), range(16)))  # fmt: skip
    for index, answer in enumerate(answers):
        assert answer.status_code == 200
        assert answer.json() == {"tag": f"t{index}", "path": "/hooks", "greenlet": True}
        assert answer.headers["X-Tag"] == f"t{index}"  # after_request sees the hook's contextvar
        assert answer.headers["X-Path"] == "/hooks"
        assert answer.headers["X-Greenlet"] == "True"
    after = requests.get(server.url + "/teardowns", timeout=TIMEOUT).json()["teardowns"]
    assert after - before == 17  # the 16 requests and the first /teardowns


@pytest.mark.parametrize(("kind", "status", "body"), [
    ("refused", 418, {"error": "refused", "greenlet": True}),
    # An async handler runs as a coroutine on the loop (a task), not in the greenlet.
    ("later", 409, {"error": "later", "greenlet": False}),
    ("missing", 404, {"error": "not found", "path": "/fail/missing"}),
])  # fmt: skip
def test_error_handlers_sync_and_async(server: HooksServer, kind: str, status: int,
                                       body: dict[str, object]) -> None:  # fmt: skip
    answer = requests.get(f"{server.url}/fail/{kind}", timeout=TIMEOUT)
    assert answer.status_code == status
    assert answer.json() == body
    assert answer.headers["X-Greenlet"] == "True"


def test_an_unhandled_exception_is_a_500_and_the_server_goes_on(server: HooksServer) -> None:
    answer = requests.get(f"{server.url}/fail/bug", timeout=TIMEOUT)
    assert answer.status_code == 500
    assert "a bug" not in answer.text
    assert requests.get(f"{server.url}/hooks", timeout=TIMEOUT).status_code == 200
    assert "RuntimeError: a bug" in server.output()  # Flask logged it, with its traceback


def test_the_cookie_session_round_trips(server: HooksServer) -> None:
    with requests.Session() as client:
        assert client.post(f"{server.url}/login", json={"user": "ada"},
                           timeout=TIMEOUT).json() == {"ok": True}  # fmt: skip
        assert "session" in client.cookies
        assert client.get(f"{server.url}/me", timeout=TIMEOUT).json() == {
            "user": "ada", "greenlet": False}  # an async view: a coroutine on the loop
    assert requests.get(f"{server.url}/me", timeout=TIMEOUT).json()["user"] is None


def test_a_generator_with_the_request_context_streams(server: HooksServer) -> None:
    with requests.get(f"{server.url}/stream?n=4", stream=True, timeout=TIMEOUT) as answer:
        assert answer.status_code == 200
        lines = list(answer.iter_lines(decode_unicode=True))
    assert lines == [f"/stream {i} True" for i in range(4)]


def test_an_async_generator_streams_through_ext_stream(server: HooksServer) -> None:
    with requests.get(f"{server.url}/astream?n=3", stream=True, timeout=TIMEOUT) as answer:
        assert answer.status_code == 200
        assert answer.headers["X-Greenlet"] == "True"
        lines = list(answer.iter_lines(decode_unicode=True))
    assert lines == ["tick 0", "tick 1", "tick 2"]
