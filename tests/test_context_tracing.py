"""OpenTelemetry spans and structlog bindings cross the bridge with the caller's context.

A span started in a Flask view must be the parent of the spans made in
coroutines the view runs through the bridge: ``run``, ``gather``, every item
of ``iterate`` and every item of the extension's SSE stream (consumed after
the view has returned), with no "Failed to detach context" error. A
structlog-style contextvar binding must be seen the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog
from flask import Flask, Response
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiobridge import AioThread
from aiobridge.flask import EXTENSION_KEY
from aiobridge.pytest_plugin import FlaskAppFactory

ITEMS = 3


@pytest.fixture
def spans() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        # A provider of our own (not the global one, which can be set only once).
        yield provider.get_tracer("aiobridge-tests"), exporter
    finally:
        provider.shutdown()


@pytest.fixture
def detach_errors(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    caplog.set_level(logging.ERROR, logger="opentelemetry")
    found: list[str] = []
    yield found
    found.extend(r.getMessage() for r in caplog.records if "detach" in r.getMessage().lower())
    assert not found, found


def _request_id() -> str:
    return str(structlog.contextvars.get_contextvars().get("request_id"))


def _app(
    aiobridge_make_flask_app: FlaskAppFactory, tracer: trace.Tracer, seen: list[tuple[str, str]]
) -> Flask:
    app = aiobridge_make_flask_app("traced", AIOBRIDGE_THREAD_NAME="traced")
    ext = app.extensions[EXTENSION_KEY]

    async def step(name: str) -> str:
        with tracer.start_as_current_span(name):
            await asyncio.sleep(0)
            seen.append((name, _request_id()))
            return name

    async def items(prefix: str) -> AsyncIterator[str]:
        for index in range(ITEMS):
            with tracer.start_as_current_span(f"{prefix}-{index}"):
                await asyncio.sleep(0)
                seen.append((f"{prefix}-{index}", _request_id()))
            yield f"data: {index}\n\n"

    async def held_items() -> AsyncIterator[str]:
        # A span open across the yields: attached in one step, detached in a later one.
        with tracer.start_as_current_span("held"):
            for index in range(ITEMS):
                await asyncio.sleep(0)
                seen.append((f"held-{index}", _request_id()))
                yield f"data: {index}\n\n"

    @app.get("/calls")
    def calls() -> dict[str, object]:
        structlog.contextvars.bind_contextvars(request_id="calls-1")
        with tracer.start_as_current_span("view"):
            bridge = ext.bridge
            ran = ext.run(step("run"))
            gathered = bridge.gather(step("gather-a"), step("gather-b"))
            iterated = list(bridge.iterate(items("iterate")))
            held = list(bridge.iterate(held_items()))
        structlog.contextvars.clear_contextvars()
        return {"ran": ran, "gathered": gathered, "iterated": len(iterated), "held": len(held)}

    @app.get("/events")
    def events() -> Response:
        structlog.contextvars.bind_contextvars(request_id="events-1")
        try:
            with tracer.start_as_current_span("view"):
                return ext.stream(items("stream"), mimetype="text/event-stream")
        finally:
            structlog.contextvars.clear_contextvars()

    return app


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_spans_in_run_gather_and_every_item_of_iterate_have_the_view_as_parent(
    spans: tuple[trace.Tracer, InMemorySpanExporter],
    detach_errors: list[str],
    aiobridge_make_flask_app: FlaskAppFactory,  # last: its bridge stops before detach_errors checks
) -> None:
    tracer, exporter = spans
    seen: list[tuple[str, str]] = []
    app = _app(aiobridge_make_flask_app, tracer, seen)
    reply = app.test_client().get("/calls")
    assert reply.status_code == 200, reply.data
    found = _by_name(exporter)
    view = found["view"]
    children = ["run", "gather-a", "gather-b", *(f"iterate-{i}" for i in range(ITEMS)), "held"]
    for name in children:
        assert _parent_id(found[name]) == view.context.span_id, name
        assert found[name].context.trace_id == view.context.trace_id, name
    assert dict(seen) == {name: "calls-1" for name, _ in seen}
    assert len(seen) == 3 + 2 * ITEMS


def test_every_item_of_an_sse_stream_has_the_view_as_parent(
    spans: tuple[trace.Tracer, InMemorySpanExporter],
    detach_errors: list[str],
    aiobridge_make_flask_app: FlaskAppFactory,  # last: its bridge stops before detach_errors checks
) -> None:
    tracer, exporter = spans
    seen: list[tuple[str, str]] = []
    app = _app(aiobridge_make_flask_app, tracer, seen)
    reply = app.test_client().get("/events")
    body = reply.get_data(as_text=True)  # consumed after the view returned
    assert body == "".join(f"data: {i}\n\n" for i in range(ITEMS))
    found = _by_name(exporter)
    view = found["view"]
    for index in range(ITEMS):
        assert _parent_id(found[f"stream-{index}"]) == view.context.span_id, index
    assert seen == [(f"stream-{i}", "events-1") for i in range(ITEMS)]


def test_iterate_carries_the_context_of_the_call_into_every_item(
    spans: tuple[trace.Tracer, InMemorySpanExporter], detach_errors: list[str]
) -> None:
    tracer, _ = spans

    async def items() -> AsyncIterator[int]:
        for _ in range(ITEMS):
            yield trace.get_current_span().get_span_context().span_id

    with AioThread(name="iterating") as bridge:
        with tracer.start_as_current_span("caller") as caller:
            stream = bridge.iterate(items())  # made here, consumed after the span ended
        assert list(stream) == [caller.get_span_context().span_id] * ITEMS
