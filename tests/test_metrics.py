"""aiobridge.metrics in one process: every figure matches what the bridge did."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from aiobridge import AioThread, BridgeTimeoutError, metrics
from aiobridge.pytest_plugin import FlaskAppFactory

from .helpers import run_in_fork, run_python, wait_until


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    metrics.uninstall()
    registry = CollectorRegistry()
    metrics.install(registry)
    try:
        yield registry
    finally:
        metrics.uninstall()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_calls_are_counted_by_outcome_with_their_duration(registry: CollectorRegistry) -> None:
    async def boom() -> None:
        raise KeyError("x")

    with AioThread(name="api") as bridge:
        for _ in range(3):
            bridge.run(asyncio.sleep(0.01))
        with pytest.raises(KeyError):
            bridge.run(boom())
        with pytest.raises(BridgeTimeoutError):
            bridge.run(asyncio.sleep(30), timeout=0.02)
        wait_until(lambda: value(registry, "aiobridge_calls_total", bridge="api",
                                 outcome="timed_out") == 1, "one call counted timed out")
        cancelled = bridge.submit(asyncio.sleep(30))
        wait_until(lambda: value(registry, "aiobridge_calls_in_flight", bridge="api") == 1,
                   "one call in flight")
        cancelled.cancel()
        wait_until(lambda: value(registry, "aiobridge_calls_total", bridge="api",
                                 outcome="cancelled") == 1, "one call counted cancelled")

    def calls(outcome: str) -> float:
        return value(registry, "aiobridge_calls_total", bridge="api", outcome=outcome)

    assert [calls(o) for o in ("completed", "failed", "timed_out", "cancelled")] == [3, 1, 1, 1]
    assert value(registry, "aiobridge_call_duration_seconds_count", bridge="api") == 6
    # three 10 ms sleeps, a 20 ms timeout and a cancelled call
    assert value(registry, "aiobridge_call_duration_seconds_sum", bridge="api") >= 0.05
    assert value(registry, "aiobridge_call_duration_seconds_bucket", bridge="api",
                 le="0.005") <= 2  # the failure and (maybe) nothing else was that quick
    assert value(registry, "aiobridge_calls_in_flight", bridge="api") == 0


def test_dropped_cancellations_are_counted(registry: CollectorRegistry) -> None:
    async def drops_once() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # dropped: aiobridge delivers it again at the next await
        await asyncio.sleep(30)

    async def swallows() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass
        return "went on"  # nothing left to cancel: the call is ignored-cancelled

    with AioThread(name="cancels") as bridge:
        for coroutine in (drops_once(), swallows()):
            with pytest.raises(BridgeTimeoutError):
                bridge.run(coroutine, timeout=0.05)
        wait_until(lambda: bridge.stats().in_flight == 0, "no call in flight")
        stats = bridge.stats()
    assert (stats.cancel_redelivered, stats.cancel_ignored) == (1, 1), stats
    assert value(registry, "aiobridge_cancel_redelivered_total", bridge="cancels") == 1
    assert value(registry, "aiobridge_cancel_ignored_total", bridge="cancels") == 1


def test_in_flight_and_queued_gauges_follow_the_calls(registry: CollectorRegistry) -> None:
    with AioThread(name="narrow", max_in_flight=2) as bridge:
        gate = bridge.run(_event())
        futures = [bridge.submit(gate.wait()) for _ in range(5)]
        wait_until(lambda: value(registry, "aiobridge_calls_queued", bridge="narrow") == 3,
                   "three calls queued")
        assert value(registry, "aiobridge_calls_in_flight", bridge="narrow") == 2
        bridge.call_soon(gate.set)
        for future in futures:
            future.result(10)
        assert value(registry, "aiobridge_calls_queued", bridge="narrow") == 0
        assert value(registry, "aiobridge_calls_in_flight", bridge="narrow") == 0
        assert value(registry, "aiobridge_calls_total", bridge="narrow",
                     outcome="completed") == 6


def test_lag_histogram_max_since_last_scrape_and_slow_callbacks(
    registry: CollectorRegistry,
) -> None:
    async def blocks_the_loop() -> None:
        time.sleep(0.3)  # the mistake the watchdog reports

    with AioThread(name="lagged", slow_callback_duration=0.05) as bridge:
        bridge.run(asyncio.sleep(0.1))
        metrics.generate()  # a scrape starts a new period
        bridge.run(blocks_the_loop())
        wait_until(lambda: value(registry, "aiobridge_loop_lag_max_seconds",
                                 bridge="lagged") >= 0.2, "a lag of 0.2 s or more measured")
        assert value(registry, "aiobridge_slow_callbacks_total", bridge="lagged") >= 1
        assert value(registry, "aiobridge_loop_lag_seconds_bucket", bridge="lagged",
                     le="+Inf") >= 2
        assert value(registry, "aiobridge_loop_lag_seconds_sum", bridge="lagged") >= 0.2
        body, _ = metrics.generate()
        scraped = _sample(body, "aiobridge_loop_lag_max_seconds", bridge="lagged")
        assert scraped >= 0.2
        # The next period holds only the lag seen after that scrape: small again.
        before = value(registry, "aiobridge_loop_lag_seconds_count", bridge="lagged")
        wait_until(lambda: value(registry, "aiobridge_loop_lag_seconds_count",
                                 bridge="lagged") >= before + 2, "two more lag samples")
        assert value(registry, "aiobridge_loop_lag_max_seconds", bridge="lagged") < scraped


def test_lag_max_rolls_over_without_scrapes(registry: CollectorRegistry) -> None:
    metrics.uninstall()
    rolling = CollectorRegistry()
    metrics.install(rolling, lag_window=0.2)

    async def blocks_the_loop() -> None:
        time.sleep(0.3)

    with AioThread(name="rolling", slow_callback_duration=0.05) as bridge:
        bridge.run(blocks_the_loop())
        wait_until(lambda: value(rolling, "aiobridge_loop_lag_max_seconds",
                                 bridge="rolling") >= 0.2, "a lag of 0.2 s or more measured")
        # Two windows later the stall has left the figure.
        wait_until(lambda: value(rolling, "aiobridge_loop_lag_max_seconds",
                                 bridge="rolling") < 0.2, "the stall rolled out of the lag max")


def test_queue_items_are_sampled(registry: CollectorRegistry) -> None:
    with AioThread(name="queues", slow_callback_duration=0.02) as bridge:
        first, second = bridge.queue(), bridge.queue()
        for item in range(3):
            first.sync_q.put(item)
        second.sync_q.put("x")
        wait_until(lambda: value(registry, "aiobridge_queue_items", bridge="queues") == 4,
                   "four queued items sampled")
        first.sync_q.get()
        wait_until(lambda: value(registry, "aiobridge_queue_items", bridge="queues") == 3,
                   "three queued items sampled")


def test_a_fork_counts_a_restart_in_the_child_only(registry: CollectorRegistry) -> None:
    with AioThread(name="forky") as bridge:
        bridge.run(asyncio.sleep(0))

        def child() -> str:
            bridge.run(asyncio.sleep(0))
            return repr((
                value(registry, "aiobridge_loop_restarts_total", bridge="forky"),
                value(registry, "aiobridge_calls_in_flight", bridge="forky"),
            ))

        in_flight = bridge.submit(asyncio.sleep(30))  # the child must not inherit it
        wait_until(lambda: value(registry, "aiobridge_calls_in_flight", bridge="forky") == 1,
                   "one call in flight")
        assert run_in_fork(child) == "(1.0, 0.0)"
        in_flight.cancel()
    assert value(registry, "aiobridge_loop_restarts_total", bridge="forky") == 0


def test_flask_metrics_endpoint_is_opt_in(
    registry: CollectorRegistry,
    aiobridge_flask_app: Flask,
    aiobridge_make_flask_app: FlaskAppFactory,
) -> None:
    assert aiobridge_flask_app.test_client().get("/metrics").status_code == 404

    app = aiobridge_make_flask_app("measured", AIOBRIDGE_METRICS_ENDPOINT="/internal/metrics",
                         AIOBRIDGE_THREAD_NAME="measured")  # fmt: skip

    @app.get("/hello")
    async def hello() -> str:
        await asyncio.sleep(0)
        return "hi"

    client = app.test_client()
    for _ in range(4):
        assert client.get("/hello").data == b"hi"
    response = client.get("/internal/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert _sample(response.data, "aiobridge_calls_total", bridge="measured",
                   outcome="completed") == 4


def _sample(body: bytes, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in:\n{body.decode()}")


async def _event() -> asyncio.Event:
    return asyncio.Event()


def test_install_again_on_the_same_registry_reuses_its_metrics() -> None:
    metrics.uninstall()
    registry = CollectorRegistry()
    try:
        first = metrics.install(registry)
        assert metrics.install(registry) is first
        with pytest.raises(RuntimeError, match="uninstall"):
            metrics.install(CollectorRegistry())  # would silently export nothing there
        metrics.uninstall()
        assert metrics.install(registry) is first  # no "Duplicated timeseries"
    finally:
        metrics.uninstall()


def test_multiprocess_mode_in_a_fresh_interpreter(tmp_path: Path) -> None:
    # prometheus_client picks multiprocess mode at import: a process of its own.
    result = run_python(f"""
        import asyncio, os, time
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
        from prometheus_client.parser import text_string_to_metric_families
        from aiobridge import AioThread, metrics

        def figures():
            body, _ = metrics.generate()
            return {{(s.name, s.labels.get("outcome")): s.value
                    for f in text_string_to_metric_families(body.decode())
                    for s in f.samples if s.labels.get("bridge") == "mp"}}

        async def block():
            time.sleep(0.3)

        assert metrics.install().lag_window == metrics.DEFAULT_LAG_WINDOW
        with AioThread(name="mp", slow_callback_duration=0.05) as bridge:
            bridge.run(block())
            bridge.run(asyncio.sleep(0.2))
            first, second = figures(), figures()
        print(first[("aiobridge_calls_total", "completed")],
              first[("aiobridge_calls_in_flight", None)],
              first[("aiobridge_loop_lag_max_seconds", None)] >= 0.2,
              second[("aiobridge_loop_lag_max_seconds", None)] >= 0.2)
    """)
    assert result.returncode == 0, result.stderr
    # A scrape resets no worker's lag maximum in this mode (it could not reset them all).
    assert result.stdout.split() == ["2.0", "0.0", "True", "True"]
    assert sorted(p.name.split("_")[0] for p in tmp_path.glob("*.db")) == [
        "counter", "gauge", "gauge", "histogram"]


def test_clearing_the_observer_factory_uninstalls_the_metrics(
    registry: CollectorRegistry, aiobridge_make_flask_app: FlaskAppFactory
) -> None:
    """One global says whether the metrics observe bridges: the observer factory."""
    from aiobridge import monitor

    assert metrics.installed() is not None
    monitor.set_observer_factory(None)
    assert metrics.installed() is None
    # So an app asking for the endpoint installs them again and its calls are counted.
    app = aiobridge_make_flask_app("reinstalled", AIOBRIDGE_METRICS_ENDPOINT="/metrics",
                         AIOBRIDGE_THREAD_NAME="reinstalled")  # fmt: skip

    @app.get("/hello")
    async def hello() -> str:
        return "hi"

    assert metrics.installed() is not None
    client = app.test_client()
    assert client.get("/hello").data == b"hi"
    response = client.get("/metrics")
    assert _sample(response.data, "aiobridge_calls_total", bridge="reinstalled",
                   outcome="completed") == 1


def test_multiprocess_scrape_skips_a_worker_file_not_sized_yet(tmp_path: Path) -> None:
    # A worker creates its file, then sizes it; one killed in between leaves it
    # empty for good. The scrape still shows every other worker's figures.
    result = run_python(f"""
        import asyncio, os
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
        from prometheus_client.parser import text_string_to_metric_families
        from aiobridge import AioThread, metrics

        metrics.install()
        with AioThread(name="mp") as bridge:
            bridge.run(asyncio.sleep(0))
        open(os.path.join({str(tmp_path)!r}, "counter_999999.db"), "wb").close()
        body, _ = metrics.generate()
        print([s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples
               if s.name == "aiobridge_calls_total" and s.labels["outcome"] == "completed"])
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[1.0]"]
