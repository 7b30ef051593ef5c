"""The contracts that once had limits inside a request greenlet (aiobridge.onloop), held there.

Each test serves a Flask app through ``on_loop`` on a real uvicorn server
(``tests.test_onloop.Served``: 127.0.0.1, a free port, its own thread) and
sends real HTTP requests, concurrent ones from a thread pool. Views report
through ``threading.Event``s; every wait is bounded; nothing sleeps to order
events.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import janus
import pytest
from flask import Flask, current_app, request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from aiobridge import AioThread, BridgeTimeoutError
from aiobridge.flask import AioBridge
from aiobridge.onloop import in_request_greenlet
from aiobridge.pytest_plugin import no_loop_blocking
from demo_flask.services import HOST
from tests.test_onloop import DEADLINE, Served, make_app, request_id


@pytest.fixture
def app_ext(request: pytest.FixtureRequest) -> tuple[Flask, AioBridge]:
    """The app and its extension; ``AIOBRIDGE_*`` settings from an indirect parameter."""
    return make_app(**getattr(request, "param", {}))


def wait_until(condition: Any, what: str) -> None:
    """Wait (bounded) for a condition another thread makes true."""
    pause = threading.Event()
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.005)


@pytest.fixture
def serve(app_ext: tuple[Flask, AioBridge]) -> Iterator[Any]:
    """``serve()`` starts the server once the test added its routes; stopped after the test."""
    app, ext = app_ext
    servers: list[Served] = []

    def start() -> Served:
        servers.append(Served(app))
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
    assert not ext.get_bridge(app).running


def in_thread(pool: concurrent.futures.ThreadPoolExecutor, server: Served,
              path: str) -> concurrent.futures.Future[tuple[int, Any]]:
    return pool.submit(server.get, path)


# -- fairness: a request looping over calls that never suspend -------------------------
def test_a_request_looping_over_cheap_calls_does_not_starve_another(
        app_ext: tuple[Flask, AioBridge], serve: Any) -> None:
    app, ext = app_ext
    spinning, stop = threading.Event(), threading.Event()

    async def cheap() -> int:
        return 1  # finishes without suspending: the await never gives the loop a turn

    @app.get("/spin")
    def spin() -> dict[str, Any]:
        calls = 0
        spinning.set()
        deadline = time.monotonic() + DEADLINE / 2
        while not stop.is_set() and time.monotonic() < deadline:
            calls += ext.run(cheap())
        return {"calls": calls, "stopped_by": "event" if stop.is_set() else "deadline"}

    @app.get("/ping")
    def ping() -> dict[str, Any]:
        return {"spinning": spinning.is_set() and not stop.is_set()}

    server = serve()
    with concurrent.futures.ThreadPoolExecutor(1) as pool, no_loop_blocking() as reports:
        spinner = in_thread(pool, server, "/spin")
        assert spinning.wait(DEADLINE)
        began = time.monotonic()
        try:
            answer = server.get("/ping", timeout=DEADLINE)
        finally:
            waited = time.monotonic() - began
            stop.set()
        status, body = spinner.result(DEADLINE)
    # The other request was answered while the loop still ran the spinning request.
    assert answer == (200, {"spinning": True})
    assert status == 200 and body["stopped_by"] == "event" and body["calls"] > 0
    assert waited < 1.0, f"a request waited {waited:.3f} s behind a loop of cheap calls"
    assert not reports


# -- a client that went away: every later call of its request fails fast ---------------
def test_after_a_disconnect_later_calls_of_the_request_fail_fast(
        app_ext: tuple[Flask, AioBridge], serve: Any) -> None:
    app, ext = app_ext
    started, finished = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    async def forever() -> None:
        started.set()
        await asyncio.sleep(DEADLINE * 2)

    async def later() -> None:
        seen["later ran"] = True

    @app.get("/two-calls")
    def two_calls() -> dict[str, Any]:
        try:
            for name, coro in (("first", forever()), ("second", later())):
                seen[f"{name} coroutine"] = coro
                try:
                    ext.run(coro)
                except concurrent.futures.CancelledError:
                    seen[name] = "cancelled"
            return {}
        finally:
            finished.set()

    server = serve()
    with socket.create_connection((HOST, server.port), timeout=DEADLINE) as sock:
        sock.sendall(f"GET /two-calls HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        assert started.wait(DEADLINE)
    assert finished.wait(DEADLINE)
    assert seen["first"] == seen["second"] == "cancelled"
    assert "later ran" not in seen
    assert inspect.getcoroutinestate(seen["second coroutine"]) == inspect.CORO_CLOSED
    assert server.get("/ping-after")[0] == 404  # the loop serves on


# -- max_in_flight: switched calls take slots and wait for them in order ------------------
@pytest.mark.parametrize("app_ext", [{"AIOBRIDGE_MAX_IN_FLIGHT": 2}], indirect=True)
def test_max_in_flight_bounds_calls_from_request_greenlets(
        app_ext: tuple[Flask, AioBridge], serve: Any) -> None:
    app, ext = app_ext
    bridge = ext.get_bridge(app)
    log: list[tuple[str, str]] = []
    running: list[str] = []
    peak: list[int] = [0]
    entered: dict[str, threading.Event] = {n: threading.Event() for n in "abcd"}
    release: list[asyncio.Event] = []
    never_ran = threading.Event()

    async def hold(name: str) -> str:
        if not release:
            release.append(asyncio.Event())
        log.append(("enter", name))
        request_id.set(f"id-{name}")  # seen by the view afterwards, queued or not
        running.append(name)
        peak[0] = max(peak[0], len(running))
        entered[name].set()
        try:
            await release[0].wait()
        finally:
            running.remove(name)
            log.append(("exit", name))
        return name

    async def must_not_run() -> None:
        never_ran.set()

    @app.get("/hold/<name>")
    def held(name: str) -> dict[str, Any]:
        return {"name": ext.run(hold(name)), "var": request_id.get()}

    @app.get("/late")
    def late() -> dict[str, Any]:
        coro = must_not_run()
        try:
            ext.run(coro, timeout=0.05)
        except BridgeTimeoutError:
            return {"timed_out": True,
                    "closed": inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED}
        return {"timed_out": False}

    server = serve()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = []
        for name in "ab":
            first.append(in_thread(pool, server, f"/hold/{name}"))
            assert entered[name].wait(DEADLINE)
        third = in_thread(pool, server, "/hold/c")
        wait_until(lambda: bridge.stats().queued == 1, "/hold/c to wait for a slot")
        fourth = in_thread(pool, server, "/hold/d")
        wait_until(lambda: bridge.stats().queued == 2, "/hold/d to wait for a slot")
        # A call beyond the limit times out while it waits: cancelled, never run.
        assert server.get("/late") == (200, {"timed_out": True, "closed": True})
        assert not entered["c"].is_set() and not entered["d"].is_set()
        bridge.call_soon(lambda: release[0].set())
        answers = [f.result(DEADLINE) for f in (*first, third, fourth)]
    assert [a[1] for a in answers] == [{"name": n, "var": f"id-{n}"} for n in "abcd"]
    assert peak[0] == 2 and not never_ran.is_set()
    enters = [name for kind, name in log if kind == "enter"]
    assert enters == ["a", "b", "c", "d"]
    assert log.index(("enter", "c")) > min(log.index(("exit", "a")), log.index(("exit", "b")))
    stats = bridge.stats()
    assert stats.timed_out == 1 and stats.in_flight == 0 and stats.queued == 0


# -- bridge queues: sync_q waits by switching in a request greenlet ----------------------
def test_queue_sync_side_waits_by_switching_in_request_greenlets(
        app_ext: tuple[Flask, AioBridge], serve: Any) -> None:
    app, ext = app_ext
    calling: dict[str, threading.Event] = {}
    queues: list[Any] = []

    def about_to_wait(name: str) -> Any:
        # Set just before the view waits: the greenlet runs on until it switches, so
        # once the test sees it, the next request the loop serves finds it waiting.
        calling.setdefault(name, threading.Event()).set()
        return queues[0].sync_q

    def limit() -> float | None:
        return float(request.args["timeout"]) if "timeout" in request.args else DEADLINE

    @app.get("/q/get/<name>")
    def get(name: str) -> dict[str, Any]:
        sync_q = about_to_wait(name)
        try:
            return {"item": sync_q.get(timeout=limit())}
        except janus.SyncQueueEmpty:
            return {"empty": True}

    @app.get("/q/put/<name>/<item>")
    def put(name: str, item: str) -> dict[str, Any]:
        sync_q = about_to_wait(name)
        try:
            sync_q.put(item, timeout=limit())
        except janus.SyncQueueFull:
            return {"full": True}
        return {"put": item}

    @app.get("/q/join")
    def join() -> dict[str, Any]:
        about_to_wait("join").join()
        return {"joined": True}

    @app.get("/q/done/<int:count>")
    def done(count: int) -> dict[str, Any]:
        for _ in range(count):
            queues[0].sync_q.task_done()
        return {"unfinished": queues[0].sync_q.unfinished_tasks}

    @app.get("/ping")
    def ping() -> dict[str, Any]:
        return {"ok": True}

    server = serve()
    bridge = ext.get_bridge(app)
    queues.append(bridge.queue(maxsize=1))
    sync_q = queues[0].sync_q

    def waiting(pool: concurrent.futures.ThreadPoolExecutor,
                path: str, name: str) -> concurrent.futures.Future[tuple[int, Any]]:
        future = in_thread(pool, server, path)
        assert calling.setdefault(name, threading.Event()).wait(DEADLINE)
        return future

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        # Empty queue: two requests wait to get; the loop serves on meanwhile.
        first = waiting(pool, "/q/get/a", "a")
        second = waiting(pool, "/q/get/b", "b")
        assert server.get("/ping") == (200, {"ok": True})
        assert not first.done() and not second.done()
        # An item put by another request goes to the first getter, one put by a thread
        # to the second.
        assert server.get("/q/put/c/x") == (200, {"put": "x"})
        assert first.result(DEADLINE) == (200, {"item": "x"})
        sync_q.put("y", timeout=DEADLINE)
        assert second.result(DEADLINE) == (200, {"item": "y"})
        # Full queue: a request waits to put; a getting request makes room.
        sync_q.put("z", timeout=DEADLINE)
        putter = waiting(pool, "/q/put/d/w", "d")
        assert server.get("/ping") == (200, {"ok": True})
        assert not putter.done()
        assert server.get("/q/get/e") == (200, {"item": "z"})
        assert putter.result(DEADLINE) == (200, {"put": "w"})
        assert sync_q.get(timeout=DEADLINE) == "w"  # a thread gets what a request put
        # Timeouts: janus's own errors, the loop never held.
        assert server.get("/q/get/f?timeout=0.05") == (200, {"empty": True})
        sync_q.put("v", timeout=DEADLINE)
        assert server.get("/q/put/g/u?timeout=0.05") == (200, {"full": True})
        assert sync_q.get(timeout=DEADLINE) == "v"
        # join() waits for task_done() of every item, made by another request.
        joiner = waiting(pool, "/q/join", "join")
        assert server.get("/ping") == (200, {"ok": True})
        assert not joiner.done()
        assert server.get("/q/done/5") == (200, {"unfinished": 0})
        assert joiner.result(DEADLINE) == (200, {"joined": True})


# -- as_completed: results as they finish, waited for by switching ----------------------
def test_as_completed_waits_by_switching_in_a_request_greenlet(
        app_ext: tuple[Flask, AioBridge], serve: Any) -> None:
    app, ext = app_ext
    bridge = ext.get_bridge(app)
    gate: list[asyncio.Event] = []
    waiting_for_gate = threading.Event()
    cancelled: dict[str, threading.Event] = {n: threading.Event() for n in ("timeout", "break")}

    async def value(v: int) -> int:
        await asyncio.sleep(0)
        return v

    async def gated() -> str:
        gate.append(asyncio.Event())
        waiting_for_gate.set()
        await gate[0].wait()
        return "opened"

    async def forever(name: str) -> None:
        try:
            await asyncio.sleep(DEADLINE * 2)
        except asyncio.CancelledError:
            cancelled[name].set()
            raise

    @app.get("/completed")
    def completed() -> dict[str, Any]:
        got = list(bridge.as_completed([gated(), value(2)]))
        try:
            list(bridge.as_completed([forever("timeout")], timeout=0.05))
        except BridgeTimeoutError:
            timed_out = cancelled["timeout"].is_set()
        with contextlib.closing(bridge.as_completed([value(1), forever("break")])) as results:
            first = next(results)  # closing the iterator cancels the rest, and waits for it
        return {"got": got, "timed_out": timed_out, "first": first,
                "break_cancelled": cancelled["break"].is_set()}

    @app.get("/open")
    def open_gate() -> dict[str, Any]:
        gate[0].set()
        return {"opened": True}

    server = serve()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = in_thread(pool, server, "/completed")
        assert waiting_for_gate.wait(DEADLINE)
        assert server.get("/open") == (200, {"opened": True})  # served while it waits
        assert answer.result(DEADLINE) == (200, {"got": [2, "opened"], "timed_out": True,
                                                 "first": 1, "break_cancelled": True})
    assert bridge.stats().in_flight == 0


# -- context under concurrency: OpenTelemetry spans and current_app ----------------------
@pytest.fixture
def tracing(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[Any, Any]]:
    """A tracer of a provider of our own, its exporter; no "Failed to detach context" error."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caplog.set_level(logging.ERROR, logger="opentelemetry")
    try:
        yield provider.get_tracer("aiobridge-onloop-tests"), exporter
    finally:
        provider.shutdown()
    errors = [r.getMessage() for r in caplog.records if "detach" in r.getMessage().lower()]
    assert not errors, errors


def both_inside(gate: dict[str, asyncio.Event], name: str, others: tuple[str, ...]) -> Any:
    """A coroutine that returns once every request of ``others`` reached it: the request
    greenlets interleave on the loop."""
    async def wait() -> None:
        gate.setdefault(name, asyncio.Event()).set()
        for other in others:
            await asyncio.wait_for(gate.setdefault(other, asyncio.Event()).wait(), DEADLINE)
    return wait()


def test_a_views_span_is_the_parent_of_its_coroutines_spans_per_concurrent_request(
        app_ext: tuple[Flask, AioBridge], serve: Any, tracing: tuple[Any, Any]) -> None:
    app, ext = app_ext
    tracer, exporter = tracing
    gate: dict[str, asyncio.Event] = {}

    async def step(label: str, name: str) -> str:
        with tracer.start_as_current_span(f"{label}-{name}"):
            await both_inside(gate, f"{label}-{name}", (f"{label}-a", f"{label}-b"))
            return label

    async def items(name: str) -> AsyncIterator[int]:
        for index in range(3):
            with tracer.start_as_current_span(f"item{index}-{name}"):
                await asyncio.sleep(0)
            yield index

    @app.get("/traced/<name>")
    def traced(name: str) -> dict[str, Any]:
        bridge = ext.bridge
        with tracer.start_as_current_span(f"view-{name}"):
            ran = ext.run(step("run", name))
            gathered = bridge.gather(step("gather", name), asyncio.sleep(0, "x"))
            completed = list(bridge.as_completed([step("completed", name)]))
            iterated = list(bridge.iterate(items(name)))
        return {"ran": ran, "gathered": gathered, "completed": completed, "iterated": iterated}

    server = serve()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = [in_thread(pool, server, f"/traced/{n}") for n in "ab"]
        assert [f.result(DEADLINE) for f in answers] == [(200, {
            "ran": "run", "gathered": ["gather", "x"], "completed": ["completed"],
            "iterated": [0, 1, 2]})] * 2
    spans = {span.name: span for span in exporter.get_finished_spans()}
    for name in "ab":
        view = spans[f"view-{name}"]
        for child in ("run", "gather", "completed", "item0", "item1", "item2"):
            span = spans[f"{child}-{name}"]
            assert span.parent is not None and span.parent.span_id == view.context.span_id, \
                f"{child}-{name}"
            assert span.context.trace_id == view.context.trace_id
    assert spans["view-a"].context.trace_id != spans["view-b"].context.trace_id


def test_current_app_is_each_requests_own_under_concurrency() -> None:
    shared = AioThread(name="two-apps")
    apps = {}
    gate: dict[str, asyncio.Event] = {}
    for name in ("one", "two"):
        app = Flask(f"app-{name}")
        ext = AioBridge(app, bridge=shared)

        async def seen_in_coroutine(name: str = name) -> str:
            await both_inside(gate, name, ("one", "two"))
            return current_app.name

        @app.get("/who")
        def who(ext: AioBridge = ext, seen_in_coroutine: Any = seen_in_coroutine) -> Any:
            inside = ext.run(seen_in_coroutine())
            return {"coroutine": inside, "view": current_app.name,
                    "greenlet": in_request_greenlet()}

        apps[name] = app
    both = DispatcherMiddleware(apps["one"], {"/two": apps["two"]})
    server = Served(both, bridge=shared)  # type: ignore[arg-type]
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            one, two = in_thread(pool, server, "/who"), in_thread(pool, server, "/two/who")
            assert one.result(DEADLINE) == (200, {"coroutine": "app-one", "view": "app-one",
                                                  "greenlet": True})
            assert two.result(DEADLINE) == (200, {"coroutine": "app-two", "view": "app-two",
                                                  "greenlet": True})
    finally:
        server.stop()
    assert not shared.running
