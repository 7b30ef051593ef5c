"""Bad input: the demo never answers 500, and bridge misuse names its fix.

1. Hypothesis throws query strings (text, raw bytes, out-of-range and
   non-numeric values, unknown and URL-looking parameters), order ids and JSON
   bodies at every demo route in all five modes through Flask's test client.
   Whatever comes in, the answer is a success, a 400 naming the parameter, a
   308/404/405 from routing, or a 504 when a valid but long latency outlives the
   (short) upstream timeout configured here: never a 500.
2. Every misuse of the bridge API raises the documented error with a message
   that says what to do, and a refused coroutine is closed (no "never
   awaited" warning).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import re
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiobridge import AioThread, BridgeClosedError, BridgeDeadlockError
from demo_flask import MODES
from demo_flask.services import UpstreamServer, free_port
from tests.demo_apps import DemoAppFactory, demo_app, guarded_demo_app

__all__ = ("demo_app",)  # the fixture

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: A valid request may ask the upstream for up to 10 s; the apps here give up sooner.
HTTP_TIMEOUT = 0.5
#: 308: Werkzeug merges a doubled slash in the path (``/track//0``) with a redirect.
# 413/414/415: a body too large, a URL too long, a body not labelled JSON.
ALLOWED = {200, 202, 308, 400, 404, 405, 413, 414, 415, 504}


# -- the demo under fuzzed input ------------------------------------------------------------
@pytest.fixture(scope="module")
def apps(upstream: UpstreamServer, redis_url: str) -> Iterator[dict[str, Flask]]:
    """One demo app per mode for the whole module, checked and shut down at its end."""
    with contextlib.ExitStack() as stack:
        yield {
            mode: stack.enter_context(guarded_demo_app({
                "CAAS_MODE": mode,
                "UPSTREAM_URL": upstream.url,
                "REDIS_URL": redis_url,
                "CAAS_HTTP_TIMEOUT": HTTP_TIMEOUT,
                "AIOBRIDGE_TIMEOUT": HTTP_TIMEOUT * 4,
                "CAAS_SSE_MAX_SECONDS": 2.0,
                "CAAS_SSE_HEARTBEAT": 0.5,
            }))
            for mode in MODES
        }  # fmt: skip


@pytest.fixture(params=MODES)
def client(request: pytest.FixtureRequest, apps: dict[str, Flask]) -> FlaskClient:
    return apps[request.param].test_client()


PARAMETER_NAMES = st.sampled_from(
    ["latency", "seconds", "n", "upstream", "url", "UPSTREAM_URL", "host", "callback", ""]
)
NUMBERISH = st.one_of(
    st.text(max_size=12),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "",
            " 1",
            "1_000",
            "0x10",
            "1e3",
            "-0",
            "+5",
            "١٢",
            "nan",
            "inf",
            "1e-300",
            "http://127.0.0.1:1/",
            "%00",
            "\x00",
            "9" * 5000,
        ]
    ),
)
QUERIES = st.one_of(
    st.dictionaries(PARAMETER_NAMES, NUMBERISH, max_size=4).map(urllib.parse.urlencode),
    st.binary(max_size=40).map(lambda raw: "".join(f"%{byte:02x}" for byte in raw)),
    st.text(max_size=40).map(lambda text: urllib.parse.quote(text, safe="=&")),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=10,
)
POSITIONS = st.fixed_dictionaries(
    {},
    optional={
        "lat": JSON | st.floats(-100, 100),
        "lon": JSON | st.floats(-200, 200),
        "status": st.sampled_from(["en_route", "delivered", "lost", ""]) | JSON,
    },
)
ORDER_IDS = st.one_of(st.text(max_size=70), st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))


def _checked(response: Any, what: str) -> int:
    status = int(response.status_code)
    assert status in ALLOWED, f"{what} -> {status}: {response.get_data(as_text=True)[:300]}"
    if status == 400:
        body = response.get_json()
        assert body["parameter"] and body["parameter"] in body["error"], body
    return status


@FUZZ
@given(path=st.sampled_from(["/dog", "/delay", "/health", "/stats"]), query=QUERIES)
def test_fuzzed_query_strings_never_500(client: FlaskClient, path: str, query: str) -> None:
    _checked(client.get(f"{path}?{query}"), f"GET {path}?{query}")


@FUZZ
@given(order_id=ORDER_IDS, body=POSITIONS | JSON)
def test_fuzzed_order_ids_and_positions_never_500(
    client: FlaskClient, order_id: str, body: Any
) -> None:
    path = "/track/" + urllib.parse.quote(order_id, safe="")
    _checked(client.post(path, json=body), f"POST {path} {body!r}")
    response = client.get(path, buffered=False)
    try:
        _checked(response, f"GET {path}")
    finally:
        response.close()  # a valid id opened a stream: closing it releases the subscription


@FUZZ
@given(raw=st.binary(max_size=200))
def test_fuzzed_request_bodies_never_500(client: FlaskClient, raw: bytes) -> None:
    response = client.post("/track/order-1", data=raw, content_type="application/json")
    _checked(response, f"POST body {raw!r}")


@pytest.mark.parametrize("mode", MODES)
def test_failed_fan_out_is_a_gateway_error_not_a_500(
    mode: str, upstream: UpstreamServer, redis_url: str, demo_app: DemoAppFactory
) -> None:
    """Found by the fuzzing above: a failed call inside ``/delay``'s TaskGroup was a 500."""
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    config = {"CAAS_MODE": mode, "REDIS_URL": redis_url, "CAAS_HTTP_TIMEOUT": 0.3}
    slow = demo_app({**config, "UPSTREAM_URL": upstream.url})
    down = demo_app({**config, "UPSTREAM_URL": nobody})
    timed_out = slow.test_client().get("/delay?seconds=2&n=3")
    refused = down.test_client().get("/delay?seconds=0&n=3")
    assert timed_out.status_code == 504, timed_out.get_data(as_text=True)[:300]
    assert refused.status_code == 502, refused.get_data(as_text=True)[:300]
    assert refused.get_json()["error"] == "the upstream dog service failed"


# -- bridge API misuse ------------------------------------------------------------------------
async def work() -> int:
    return 1


async def numbers() -> Any:
    yield 1


Misuse = Callable[[AioThread, Any], object]
#: Wrong on purpose: typed Any so the checker lets the mistakes through.
FUNCTION: Any = work
NOTHING: Any = None
NUMBER: Any = 42
TEXT: Any = "1"
REGULAR: Any = len

MISUSES: list[tuple[str, Misuse, type[BaseException], str, bool]] = [
    ("run(coroutine function)", lambda b, c: b.run(FUNCTION), TypeError, "call it first", False),
    ("run(None)", lambda b, c: b.run(NOTHING), TypeError, "regular function instead", False),
    ("run(42)", lambda b, c: b.run(NUMBER), TypeError, "not awaitable", False),
    ("submit(function)", lambda b, c: b.submit(FUNCTION), TypeError, "call it first", False),
    ("spawn(None)", lambda b, c: b.spawn(NOTHING), TypeError, "regular function instead", False),
    ("gather(ok, function)", lambda b, c: b.gather(c, FUNCTION), TypeError, "call it first", True),
    ("run(async generator)", lambda b, c: b.run(numbers()), TypeError, "bridge.iterate()", False),
    ("iterate(coroutine)", lambda b, c: b.iterate(c), TypeError, "use bridge.run()", True),
    ("enter(coroutine)", lambda b, c: b.enter(c), TypeError, "use bridge.run()", True),
    ("call_soon(function)", lambda b, c: b.call_soon(work), TypeError, "bridge.spawn", False),
    ("resource(coroutine)", lambda b, c: b.resource(c), TypeError, "the function itself", True),
    ("run(timeout=-1)", lambda b, c: b.run(c, timeout=-1), ValueError, ">= 0 seconds", True),
    ("submit(timeout=-1)", lambda b, c: b.submit(c, timeout=-1), ValueError, ">= 0 seconds", True),
    ("run(timeout=nan)", lambda b, c: b.run(c, timeout=math.nan), ValueError, ">= 0 seconds", True),
    ("run(timeout='1')", lambda b, c: b.run(c, timeout=TEXT), TypeError, "of seconds", True),
    ("gather(timeout=-1)", lambda b, c: b.gather(c, timeout=-1), ValueError, ">= 0 seconds", True),
    ("wrap(timeout=-1)", lambda b, c: b.wrap(work, timeout=-1), ValueError, ">= 0 seconds", False),
    ("wrap(regular function)", lambda b, c: b.wrap(REGULAR), TypeError, "call it directly", False),
    ("as_completed(limit=0)", lambda b, c: b.as_completed([c], limit=0), ValueError, ">= 1", True),
]


@pytest.mark.parametrize(
    ("name", "misuse", "error", "fix", "hands_over"), MISUSES, ids=[m[0] for m in MISUSES]
)
def test_api_misuse_raises_the_documented_error_naming_the_fix(
    bridge: AioThread,
    name: str,
    misuse: Misuse,
    error: type[BaseException],
    fix: str,
    hands_over: bool,
) -> None:
    coro = work()
    with pytest.raises(error, match=re.escape(fix)):
        misuse(bridge, coro)
    if not hands_over:
        coro.close()
    # A coroutine handed over was closed, never left to warn "never awaited".
    if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        coro.close()
        pytest.fail(f"{name}: the refused coroutine was left unawaited and open")
    assert bridge.run(work(), timeout=5) == 1  # and the bridge is unharmed


BLOCKING_FROM_LOOP: list[tuple[str, Callable[[AioThread], object]]] = [
    ("run", lambda b: b.run(work())),
    ("gather", lambda b: b.gather(work())),
    ("first", lambda b: b.first(work())),
    ("as_completed", lambda b: b.as_completed([work()])),
    ("iterate", lambda b: b.iterate(numbers())),
    ("enter", lambda b: b.enter(asyncio.Lock()).__enter__()),
    ("stop", lambda b: b.stop()),
]


@pytest.mark.parametrize(
    ("name", "call"), BLOCKING_FROM_LOOP, ids=[c[0] for c in BLOCKING_FROM_LOOP]
)
def test_blocking_call_from_the_loop_thread_is_a_deadlock_error_naming_the_fix(
    bridge: AioThread, name: str, call: Callable[[AioThread], object]
) -> None:
    async def on_loop() -> BaseException | None:
        try:
            result = call(bridge)
        except BaseException as exc:
            return exc
        if inspect.isgenerator(result):
            result.close()
        return None

    error = bridge.run(on_loop(), timeout=10)
    assert isinstance(error, BridgeDeadlockError), (name, error)
    assert "loop thread" in str(error) and ("await" in str(error) or "another thread" in str(error))


def _closing(coro: Coroutine[Any, Any, int], fn: Callable[..., None], *args: Any) -> None:
    coro.close()
    fn(*args)


CLOSED_CALLS: list[tuple[str, Callable[[AioThread, Coroutine[Any, Any, int]], object]]] = [
    ("run", lambda b, c: b.run(c)),
    ("submit", lambda b, c: b.submit(c)),
    ("spawn", lambda b, c: b.spawn(c)),
    ("gather", lambda b, c: b.gather(c)),
    ("first", lambda b, c: b.first(c)),
    ("wrap", lambda b, c: (c.close(), b.wrap(work)())),
    ("call_soon", lambda b, c: _closing(c, b.call_soon, print)),
    ("queue", lambda b, c: (c.close(), b.queue())),
    ("iterate", lambda b, c: (c.close(), list(b.iterate(numbers())))),
    ("start", lambda b, c: (c.close(), b.start())),
]


@pytest.mark.parametrize(("name", "call"), CLOSED_CALLS, ids=[c[0] for c in CLOSED_CALLS])
def test_calls_on_a_stopped_bridge_say_to_create_a_new_one(
    name: str, call: Callable[[AioThread, Coroutine[Any, Any, int]], object]
) -> None:
    stopped = AioThread(name="stopped").start()
    stopped.stop()
    coro = work()
    with pytest.raises(BridgeClosedError, match="create a new AioThread"):
        call(stopped, coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


NOT_AWAITABLE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers()),
    st.sampled_from([work, numbers, len, object(), object, iter([]), range(3)]),
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=NOT_AWAITABLE)
def test_anything_not_awaitable_is_a_type_error_naming_the_method(
    bridge: AioThread, value: Any
) -> None:
    for method in (bridge.run, bridge.submit, bridge.spawn):
        with pytest.raises(TypeError, match=r"AioThread\.\w+\(\) expects a coroutine"):
            method(value)
