"""The demo's routes in every mode, through Flask's test client.

Real Redis and the real upstream service run on 127.0.0.1 (fixtures from
``tests.servers``); every mode must give the same responses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from demo_flask import MODES, create_app
from demo_flask.catalog import BILLING_KEY, DOG_NAMES_KEY, DOGS, IMAGES_DIR, TRACK_CHANNEL_PREFIX
from demo_flask.errors import ERROR_FIELDS
from demo_flask.services import UpstreamServer
from demo_flask.upstream import seed_redis
from tests.demo_apps import DemoAppFactory, demo_app
from tests.helpers import wait_until

__all__ = ("demo_app",)  # the fixture

AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(upstream: UpstreamServer, clean_redis: str, demo_app: DemoAppFactory) -> AppFactory:
    """Build demo apps on the test servers (``demo_app``: checked and shut down after the test)."""

    def make(mode: str, **config: Any) -> Flask:
        return demo_app(
            {
                "CAAS_MODE": mode,
                "UPSTREAM_URL": upstream.url,
                "REDIS_URL": clean_redis,
                "CAAS_SSE_HEARTBEAT": 0.2,
                "CAAS_SSE_MAX_SECONDS": 20.0,
                "TESTING": True,
                **config,
            }
        )

    return make


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """Each of the demo's modes."""
    return str(request.param)


@pytest.fixture
def client(mode: str, make_app: AppFactory) -> FlaskClient:
    """A test client of the demo in each mode."""
    return make_app(mode).test_client()


def sse_events(chunks: Iterator[bytes]) -> Iterator[tuple[str, Any]]:
    """Parse SSE chunks into ``(event, data)``; heartbeats come as ``("heartbeat", None)``."""
    for chunk in chunks:
        for block in chunk.decode().split("\n\n"):
            if not block.strip():
                continue
            if block.startswith(":"):
                yield "heartbeat", None
                continue
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            yield fields["event"], json.loads(fields["data"])


def test_health(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json is not None
    assert response.json["status"] == "ok"


def test_dog_returns_the_picture_with_its_name(
    client: FlaskClient, redis_sync: redis.Redis
) -> None:
    response = client.get("/dog?latency=5")
    assert response.status_code == 200
    assert response.mimetype == "image/jpeg"
    filename = response.headers["X-Filename"]
    assert response.headers["X-Dog-Name"] == DOGS[filename]
    assert response.data == (IMAGES_DIR / filename).read_bytes()
    assert redis_sync.get(BILLING_KEY) == "1"


def test_every_dog_request_is_billed(client: FlaskClient, redis_sync: redis.Redis) -> None:
    names = {client.get("/dog").headers["X-Dog-Name"] for _ in range(len(DOGS))}
    assert names == set(DOGS.values())
    assert redis_sync.get(BILLING_KEY) == str(len(DOGS))
    stats = client.get("/stats")
    assert stats.status_code == 200
    assert stats.json is not None
    assert stats.json["billing"] == {"dog_requests": len(DOGS)}
    assert stats.json["worker_pid"] == os.getpid()  # the test client runs the app in-process


def test_delay_fans_out(client: FlaskClient) -> None:
    response = client.get("/delay?seconds=0.05&n=4")
    assert response.status_code == 200
    body = response.json
    assert body is not None
    assert (body["n"], body["seconds"]) == (4, 0.05)
    assert body["elapsed"] >= 0.05


BAD_REQUESTS = [
    ("GET", "/dog?latency=-1", "latency"),
    ("GET", "/dog?latency=10001", "latency"),
    ("GET", "/dog?latency=fast", "latency"),
    ("GET", "/dog?latency=1.5", "latency"),
    ("GET", "/delay?seconds=31", "seconds"),
    ("GET", "/delay?seconds=-0.1", "seconds"),
    ("GET", "/delay?seconds=nan", "seconds"),
    ("GET", "/delay?seconds=inf", "seconds"),
    ("GET", "/delay?n=0", "n"),
    ("GET", "/delay?n=51", "n"),
    ("GET", "/delay?n=two", "n"),
    ("GET", "/track/not%20valid", "order_id"),
    ("GET", "/track/" + "a" * 65, "order_id"),
    ("POST", "/track/bad.id", "order_id"),
]


@pytest.mark.parametrize(("method", "url", "parameter"), BAD_REQUESTS)
def test_bad_input_is_a_400_naming_the_parameter(
    client: FlaskClient, method: str, url: str, parameter: str
) -> None:
    response = client.open(url, method=method, json={"lat": 1, "lon": 2})
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["parameter"] == parameter
    assert parameter in response.json["error"]


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        (None, "body"),
        ([1, 2], "body"),
        ({"lat": 91, "lon": 0}, "lat"),
        ({"lat": "north", "lon": 0}, "lat"),
        ({"lat": True, "lon": 0}, "lat"),
        ({"lat": 0, "lon": -181}, "lon"),
        ({"lat": 0}, "lon"),
        ({"lat": 0, "lon": 0, "status": "lost"}, "status"),
    ],
)
def test_bad_position_is_a_400(client: FlaskClient, body: Any, parameter: str) -> None:
    response = client.post("/track/order-1", json=body)
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["parameter"] == parameter


def test_track_streams_published_positions(client: FlaskClient) -> None:
    response = client.get("/track/order-7", buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = sse_events(response.response)  # type: ignore[arg-type]
    try:
        assert next(events) == ("subscribed", {"order_id": "order-7"})
        published = client.post("/track/order-7", json={"lat": 48.85, "lon": 2.35})
        assert published.status_code == 202
        assert published.json == {"published": True, "listeners": 1}
        position = {"order_id": "order-7", "lat": 48.85, "lon": 2.35, "status": "en_route"}
        assert next(e for e in events if e[0] != "heartbeat") == ("position", position)
        client.post("/track/order-7", json={"lat": 48.86, "lon": 2.36, "status": "delivered"})
        rest = [e for e in events if e[0] != "heartbeat"]
        assert rest == [
            ("position", {**position, "lat": 48.86, "lon": 2.36, "status": "delivered"}),
            ("end", {"order_id": "order-7", "reason": "delivered"}),
        ]
    finally:
        response.close()


def test_track_client_going_away_releases_the_subscription(
    client: FlaskClient, redis_sync: redis.Redis
) -> None:
    channel = TRACK_CHANNEL_PREFIX + "order-8"

    def subscribers() -> int:
        return int(dict(redis_sync.pubsub_numsub(channel))[channel])

    response = client.get("/track/order-8", buffered=False)
    events = sse_events(response.response)  # type: ignore[arg-type]
    assert next(events)[0] == "subscribed"
    assert subscribers() == 1
    response.close()
    wait_until(lambda: subscribers() == 0, "the closed stream's subscription released", 5.0)


def test_track_stream_has_a_maximum_duration(make_app: AppFactory) -> None:
    for mode in MODES:
        client = make_app(mode, CAAS_SSE_MAX_SECONDS=0.3, CAAS_SSE_HEARTBEAT=0.1).test_client()
        response = client.get("/track/order-9", buffered=False)
        with response:
            events = list(sse_events(response.response))  # type: ignore[arg-type]
        assert events[0][0] == "subscribed"
        assert events[-1] == ("end", {"order_id": "order-9", "reason": "max-duration"}), mode
        assert ("heartbeat", None) in events


def _shape(response: Any) -> tuple[Any, ...]:
    """What must not differ between modes: status, type, header names, JSON keys."""
    body = response.json if response.is_json else None
    keys = sorted(body) if isinstance(body, dict) else None
    own_headers = sorted(h for h, _ in response.headers.items() if h.startswith("X-"))
    return response.status_code, response.mimetype, own_headers, keys


def test_every_mode_gives_the_same_responses(make_app: AppFactory) -> None:
    urls = ["/dog?latency=1", "/delay?seconds=0&n=2", "/dog?latency=-5", "/delay?n=99"]
    shapes = {}
    for mode in MODES:
        client = make_app(mode).test_client()
        shapes[mode] = [_shape(client.get(url)) for url in urls]
        shapes[mode].append(_shape(client.post("/track/o-1", json={"lat": 1, "lon": 1})))
    assert all(shape == shapes["sync"] for shape in shapes.values()), shapes


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="CAAS_MODE must be one of"):
        create_app({"CAAS_MODE": "threads"})


def test_upstream_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="UPSTREAM_URL"):
        create_app({"CAAS_MODE": "sync", "UPSTREAM_URL": "file:///etc/passwd"})


def _json_error(response: Any, status: int) -> dict[str, Any]:
    """The response's JSON error body, checked against the demo's one error shape."""
    assert response.status_code == status, response.data[:300]
    assert response.mimetype == "application/json", response.data[:300]
    body = response.get_json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
    assert set(body) <= ERROR_FIELDS, body
    return body


def test_every_error_is_json_of_one_shape(make_app: AppFactory, mode: str) -> None:
    # Errors propagate under TESTING; a real server answers 500 instead.
    client = make_app(mode, PROPAGATE_EXCEPTIONS=False).test_client()
    position = {"lat": 1, "lon": 1}
    assert "not found" in _json_error(client.get("/no-such-route"), 404)["error"]
    refused = client.post("/dog")
    assert "method not allowed" in _json_error(refused, 405)["error"]
    assert "GET" in refused.headers["Allow"]
    huge = json.dumps({**position, "padding": "x" * 2_000_000})
    too_big = client.post("/track/o-1", data=huge, content_type="application/json")
    _json_error(too_big, 413)
    long_url = "/dog?latency=1&pad=" + "x" * 5000
    assert "longer than" in _json_error(client.get(long_url), 414)["error"]
    unlabelled = client.post("/track/o-1", data=json.dumps(position))
    assert "Content-Type: application/json" in _json_error(unlabelled, 415)["error"]
    assert client.post("/track/o-1", json=position).status_code == 202
    _json_error(client.get("/dog?latency=-1"), 400)


def test_a_request_is_billed_only_if_its_lookup_succeeded(
    make_app: AppFactory, mode: str, redis_sync: redis.Redis, clean_redis: str
) -> None:
    client = make_app(mode, PROPAGATE_EXCEPTIONS=False).test_client()
    try:
        # Break the lookup (HGET on a string is WRONGTYPE) while INCR would still work.
        redis_sync.delete(DOG_NAMES_KEY)
        redis_sync.set(DOG_NAMES_KEY, "not a hash")
        body = _json_error(client.get("/dog"), 500)
        assert "WRONGTYPE" not in body["error"]  # no internals leak to the client
        assert redis_sync.get(BILLING_KEY) is None
        redis_sync.delete(DOG_NAMES_KEY)
        assert client.get("/dog").status_code == 200  # an unknown name still bills
        assert redis_sync.get(BILLING_KEY) == "1"
    finally:
        redis_sync.delete(DOG_NAMES_KEY)
        seed_redis(clean_redis)  # the session's Redis is shared: put the names back
