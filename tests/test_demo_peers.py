"""The real alternatives, served for real: every route answers as the Flask modes do.

Each case starts the demo on its own server, as ``python -m demo_flask`` and the
benchmarks do: the Quart rewrite on uvicorn, the ``sync`` code under gunicorn's
gevent workers, Flask's documented loop-thread recipe under gunicorn gthread,
the bridge mode behind granian's WSGI interface and behind uvicorn through
a2wsgi, and the bridge-loop mode (the Flask app on the server's own loop) on
uvicorn, gunicorn's uvicorn workers and granian's ASGI interface. Every route
is checked over HTTP against the contract of the Flask app (the ``sync`` mode
through Flask's test client is the reference), and the server's log must be
free of tracebacks and asyncio warnings after a graceful stop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from benchmarks.bm_faults import Scenarios
from demo_flask.catalog import BILLING_KEY, DOGS, IMAGES_DIR, TRACK_CHANNEL_PREFIX
from demo_flask.launcher import server_command_for
from demo_flask.services import AppServer, GranianServer, UpstreamServer
from tests.demo_apps import guarded_demo_app
from tests.helpers import wait_until
from tests.test_demo import BAD_REQUESTS

#: (mode, server, the mode's name in /health and /stats)
SERVED = [
    ("quart", "uvicorn", "quart"),
    ("gevent", "gunicorn", "gevent"),
    ("flask-recipe", "gunicorn", "flask-recipe"),
    ("bridge", "granian", "bridge"),
    ("bridge", "uvicorn", "bridge"),
    # The Flask app on the server's own loop, on the three ASGI servers.
    ("bridge-loop", "uvicorn", "bridge-loop"),
    ("bridge-loop", "gunicorn", "bridge-loop"),
    ("bridge-loop", "granian", "bridge-loop"),
]
#: What a server may log that is not the app's (see tests/test_onloop_servers.py).
ALLOWED_IN_LOG = {("bridge-loop", "gunicorn"): ("Error while closing socket",)}
LOG_PROBLEMS = ("Traceback", "Unclosed", "Task was destroyed", "never awaited")
BAD_POSITIONS = [(None, "body"), ({"lat": 91, "lon": 0}, "lat"), ({"lat": 0}, "lon"),
                 ({"lat": 0, "lon": 0, "status": "lost"}, "status")]  # fmt: skip
SHAPE_URLS = ["/dog?latency=1", "/delay?seconds=0&n=2", "/dog?latency=-5", "/delay?n=99"]
TIMEOUT = 20.0


class Served:
    """A running server of the demo and the name its mode answers with."""

    def __init__(self, server: AppServer, name: str) -> None:
        self.server = server
        self.name = name
        self.url = server.url

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=TIMEOUT, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=TIMEOUT, **kw)


@pytest.fixture(scope="module", params=SERVED, ids=[f"{m}@{s}" for m, s, _ in SERVED])
def served(
    request: pytest.FixtureRequest, upstream: UpstreamServer, redis_url: str
) -> Iterator[Served]:
    mode, server_kind, name = request.param
    server = AppServer(mode, redis_url=redis_url, upstream_url=upstream.url,
                       server=server_kind, threads=8, dev_mode=True)  # fmt: skip
    with server:
        yield Served(server, name)
        stopped = server.terminate(timeout=30)
        log = server.output()
    assert stopped, f"{mode} on {server_kind} did not stop within 30 s:\n{log[-3000:]}"
    allowed = ALLOWED_IN_LOG.get((mode, server_kind), ())
    lines = [line for line in log.splitlines() if not any(ok in line for ok in allowed)]
    for problem in LOG_PROBLEMS:
        assert not any(problem in line for line in lines), log[-5000:]


@pytest.fixture(scope="module")
def reference_shapes(upstream: UpstreamServer, redis_url: str) -> list[tuple[Any, ...]]:
    """The shapes the Flask app answers with (sync mode, Flask's test client)."""
    config = {"CAAS_MODE": "sync", "UPSTREAM_URL": upstream.url, "REDIS_URL": redis_url}
    with guarded_demo_app(config) as app:
        client = app.test_client()
        answers = [client.get(url) for url in SHAPE_URLS]
        answers.append(client.post("/track/o-1", json={"lat": 1, "lon": 1}))
        return [_shape(answer.status_code, answer.mimetype, dict(answer.headers),
                       answer.get_json(silent=True)) for answer in answers]  # fmt: skip


def _shape(status: int, mimetype: str, headers: dict[str, str], body: Any) -> tuple[Any, ...]:
    keys = sorted(body) if isinstance(body, dict) else None
    own = sorted(h.lower() for h in headers if h.lower().startswith("x-"))
    return status, mimetype, own, keys


def _http_shape(response: requests.Response) -> tuple[Any, ...]:
    mimetype = response.headers.get("Content-Type", "").split(";")[0]
    body = response.json() if mimetype == "application/json" else None
    return _shape(response.status_code, mimetype, dict(response.headers), body)


def test_health_names_the_mode(served: Served) -> None:
    response = served.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "mode": served.name}


def test_dog_is_the_picture_with_its_name_and_is_billed(
    served: Served, redis_sync: redis.Redis
) -> None:
    before = int(redis_sync.get(BILLING_KEY) or 0)
    response = served.get("/dog?latency=5")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    filename = response.headers["X-Filename"]
    assert response.headers["X-Dog-Name"] == DOGS[filename]
    assert response.content == (IMAGES_DIR / filename).read_bytes()
    assert int(redis_sync.get(BILLING_KEY) or 0) == before + 1
    stats = served.get("/stats")
    assert stats.status_code == 200
    assert stats.json()["mode"] == served.name
    assert stats.json()["billing"]["dog_requests"] >= before + 1
    assert stats.json()["worker_pid"] > 0


def test_delay_fans_out(served: Served) -> None:
    response = served.get("/delay?seconds=0.05&n=4")
    assert response.status_code == 200
    body = response.json()
    assert (body["n"], body["seconds"]) == (4, 0.05)
    assert body["elapsed"] >= 0.05


@pytest.mark.parametrize(("method", "url", "parameter"), BAD_REQUESTS)
def test_bad_input_is_the_same_400(served: Served, method: str, url: str, parameter: str) -> None:
    response = requests.request(method, served.url + url, json={"lat": 1, "lon": 2},
                                timeout=TIMEOUT)  # fmt: skip
    assert response.status_code == 400, response.text[:300]
    assert response.json()["parameter"] == parameter
    assert parameter in response.json()["error"]


@pytest.mark.parametrize(("body", "parameter"), BAD_POSITIONS)
def test_bad_position_is_the_same_400(served: Served, body: Any, parameter: str) -> None:
    response = served.post("/track/order-1", json=body)
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter


def test_answers_have_the_flask_apps_shapes(
    served: Served, reference_shapes: list[tuple[Any, ...]]
) -> None:
    shapes = [_http_shape(served.get(url)) for url in SHAPE_URLS]
    shapes.append(_http_shape(served.post("/track/o-1", json={"lat": 1, "lon": 1})))
    assert shapes == reference_shapes


def test_track_streams_positions_until_delivered(
    served: Served, redis_sync: redis.Redis
) -> None:
    order = f"peers-{served.name}"
    with served.get(f"/track/{order}", stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = _sse(response.iter_lines(decode_unicode=True))
        assert next(events) == ("subscribed", {"order_id": order})
        published = served.post(f"/track/{order}", json={"lat": 48.85, "lon": 2.35})
        assert published.status_code == 202
        assert published.json() == {"published": True, "listeners": 1}
        position = {"order_id": order, "lat": 48.85, "lon": 2.35, "status": "en_route"}
        assert next(events) == ("position", position)
        served.post(f"/track/{order}", json={"lat": 1.0, "lon": 2.0, "status": "delivered"})
        assert list(events) == [
            ("position", {**position, "lat": 1.0, "lon": 2.0, "status": "delivered"}),
            ("end", {"order_id": order, "reason": "delivered"}),
        ]
    channel = TRACK_CHANNEL_PREFIX + order
    wait_until(lambda: int(dict(redis_sync.pubsub_numsub(channel))[channel]) == 0,
               "the stream's subscription released", 5.0)


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """``(event, data)`` of an SSE stream, heartbeats skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "event" in fields:
                yield fields["event"], json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


#: The recipe's loop thread dies of the SystemExit: that is the fault shown.
_LOOP_THREAD_DIES = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnhandledThreadExceptionWarning"
)


@pytest.mark.parametrize(("mode", "hangs"), [
    ("bridge", False), pytest.param("flask-recipe", True, marks=_LOOP_THREAD_DIES)])
def test_a_coroutine_raising_system_exit_kills_only_the_recipes_loop(
    mode: str, hangs: bool, upstream: UpstreamServer, clean_redis: str
) -> None:
    row = Scenarios(clean_redis, upstream, deadline=3.0).loop_killed(mode)
    assert row["hang"] is hangs, row
    if not hangs:
        assert row["outcome"] == f"/exit: SystemExit; then /stats: 200 in {row['seconds']:.1f} s"


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "hangs"), [("bridge", False), ("flask-recipe", True)])
def test_after_a_preload_fork_only_the_recipe_hangs(
    mode: str, hangs: bool, upstream: UpstreamServer, clean_redis: str
) -> None:
    row = Scenarios(clean_redis, upstream, deadline=3.0).preload_fork(mode)
    assert row["hang"] is hangs, row
    if not hangs:
        assert row["outcome"].startswith("200 in ")


@pytest.mark.parametrize(("argv", "expected"), [
    (["--mode", "quart"], ["-m", "demo_flask.uvicorn_server", "--app", "quart"]),
    (["--mode", "gevent"], ["--worker-class", "gevent"]),
    (["--mode", "flask-recipe"], ["--worker-class", "gthread"]),
    (["--server", "granian"], ["--interface", "wsgi"]),
    (["--server", "uvicorn"], ["-m", "demo_flask.uvicorn_server", "--app", "flask"]),
    (["--mode", "bridge-loop"], ["-m", "demo_flask.uvicorn_server", "--app", "onloop"]),
    (["--mode", "bridge-loop", "--server", "gunicorn"],
     ["--worker-class", "uvicorn_worker.UvicornWorker"]),
    (["--mode", "bridge-loop", "--server", "granian"], ["--interface", "asgi", "--loop", "uvloop"]),
])  # fmt: skip
def test_the_launcher_serves_each_mode_on_its_server(argv: list[str], expected: list[str]) -> None:
    command = server_command_for(argv)
    start = command.index(expected[0])
    assert command[start:start + len(expected)] == expected


@pytest.mark.parametrize("argv", [["--mode", "quart", "--preload"],
                                  ["--mode", "quart", "--workers", "2"],
                                  ["--mode", "quart", "--server", "gunicorn"],
                                  ["--server", "granian", "--preload"],
                                  ["--mode", "bridge-loop", "--workers", "2"],
                                  ["--mode", "bridge-loop", "--server", "gunicorn",
                                   "--worker-class", "gthread"]])  # fmt: skip
def test_the_launcher_refuses_what_a_server_cannot_do(argv: list[str]) -> None:
    with pytest.raises(ValueError, match=r"uvicorn|granian"):
        server_command_for(argv)


def test_a_granian_worker_stops_its_bridge_when_it_exits(
    upstream: UpstreamServer, redis_url: str, tmp_path: Path
) -> None:
    """granian's workers exit through multiprocessing, which skips atexit: the factory's
    finalizer must stop the bridge (drain, close the pools) all the same."""
    marker = tmp_path / "stopped"
    server = GranianServer("bridge", redis_url=redis_url, upstream_url=upstream.url,
                           env={"PROBE_STOPPED_FILE": str(marker)})  # fmt: skip
    server.granian_factory = "tests.granian_probe:create_app"
    with server:
        assert requests.get(f"{server.url}/dog?latency=1", timeout=TIMEOUT).status_code == 200
        assert server.terminate(timeout=30), server.output()
    assert marker.read_text(encoding="utf-8") == "stopped", server.output()
