"""aiobridge.metrics under a real gunicorn with several workers (multiprocess mode).

The demo (bridge mode) serves ``/metrics``; the scrape is parsed with
prometheus_client's own parser. Known traffic is sent, and the figures summed
over both workers must match it; calls held in flight show in the gauge; a
worker killed with SIGKILL stops counting in it (gunicorn's ``child_exit``
marks it dead) while another worker's call still counts and the dead worker's
finished calls stay in the counters. The metrics directory is made and removed
by the launcher, or by the demo's config when none is given.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from demo_flask.services import HOST, GunicornServer, UpstreamServer
from tests.helpers import WAIT, wait_until

pytestmark = pytest.mark.slow

BRIDGE = "aiobridge"  # the demo's bridge name (AIOBRIDGE_THREAD_NAME default)
CLIENT_TIMEOUT = 30.0
FORBIDDEN_IN_LOG = ("Unclosed", "Task was destroyed", "never awaited", "Traceback")
BATCH = 16
MAX_BATCHES = 10
HOLD_SECONDS = 12.0  # long enough to see all of them in flight on a busy machine


class MetricsGunicorn(GunicornServer):
    """The demo in bridge mode, 2 workers, figures in our own multiprocess directory."""

    def __init__(self, metrics_dir: Path, *, one_at_a_time: bool = False, workers: int = 2,
                 **kwargs: str) -> None:  # fmt: skip
        super().__init__("bridge", workers=workers, threads=8, dev_mode=True,
                         startup_timeout=60.0, **kwargs)  # type: ignore[arg-type]
        self.metrics_dir = metrics_dir
        self.one_at_a_time = one_at_a_time

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        if self.one_at_a_time:
            # A worker with a connection open accepts no other: concurrent requests
            # spread over both workers (one worker would otherwise take them all).
            env["GUNICORN_CMD_ARGS"] = "--worker-connections 1"
        return env

    def workers_pids(self) -> list[int]:
        assert self.pid is not None
        return sorted(child.pid for child in psutil.Process(self.pid).children())


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=CLIENT_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body = get(port, "/metrics")
    assert status == 200, body
    return _samples(body.decode())


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return found


def figure(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:  # fmt: skip
    return samples.get((name, frozenset({"bridge": BRIDGE, **labels}.items())), 0.0)


def per_worker(metrics_dir: Path, pid: int, scratch: Path) -> dict[
        tuple[str, frozenset[tuple[str, str]]], float]:  # fmt: skip
    """The figures of one worker alone: its files collected on their own."""
    own = scratch / str(pid)
    own.mkdir(exist_ok=True)
    for stale in own.iterdir():
        stale.unlink()
    for path in glob.glob(str(metrics_dir / f"*_{pid}.db")):
        copy = Path(shutil.copy(path, own))
        if copy.stat().st_size < 8:  # created, not sized yet: no figure in it (as the scrape)
            copy.unlink()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(own))
    from prometheus_client import generate_latest

    return _samples(generate_latest(registry).decode())


@contextlib.contextmanager
def serving(
    metrics_dir: Path, redis_url: str, upstream: UpstreamServer, one_at_a_time: bool = False,
    workers: int = 2,
) -> Iterator[MetricsGunicorn]:
    metrics_dir.mkdir()
    with MetricsGunicorn(metrics_dir, one_at_a_time=one_at_a_time, workers=workers,
                         redis_url=redis_url, upstream_url=upstream.url) as server:  # fmt: skip
        yield server
        log = server.output()
    for forbidden in FORBIDDEN_IN_LOG:
        assert forbidden not in log, log


@pytest.fixture
def three_workers(
    tmp_path: Path, redis_url: str, upstream: UpstreamServer
) -> Iterator[MetricsGunicorn]:
    # One connection per worker: two held calls land on two workers, the third
    # worker stays free to answer the scrapes.
    with serving(tmp_path / "metrics", redis_url, upstream, one_at_a_time=True,
                 workers=3) as server:  # fmt: skip
        yield server


@pytest.fixture
def spreading_server(
    tmp_path: Path, redis_url: str, upstream: UpstreamServer
) -> Iterator[MetricsGunicorn]:
    with serving(tmp_path / "metrics", redis_url, upstream, one_at_a_time=True) as server:
        yield server


def test_scraped_figures_match_the_traffic_of_both_workers(
    spreading_server: MetricsGunicorn, tmp_path: Path
) -> None:
    server = spreading_server
    port = server.port
    workers = server.workers_pids()
    assert len(workers) == 2
    before = scrape(port)
    completed0 = figure(before, "aiobridge_calls_total", outcome="completed")
    failed0 = figure(before, "aiobridge_calls_total", outcome="failed")

    # /dog is one bridge call; a bad parameter fails inside the async view.
    sent = failed = 0
    with ThreadPoolExecutor(8) as pool:
        for _ in range(MAX_BATCHES):
            statuses = list(pool.map(lambda _i: get(port, "/dog")[0], range(BATCH)))
            assert statuses == [200] * BATCH
            sent += BATCH
            if all(figure(per_worker(server.metrics_dir, pid, tmp_path), "aiobridge_calls_total",
                          outcome="completed") > 0 for pid in workers):  # fmt: skip
                break
        else:
            pytest.fail(f"{sent} requests did not reach both workers")
        bad = list(pool.map(lambda _i: get(port, "/dog?latency=soon")[0], range(3)))
        assert bad == [400] * 3
        failed += 3

    after = scrape(port)
    assert figure(after, "aiobridge_calls_total", outcome="completed") - completed0 == sent
    assert figure(after, "aiobridge_calls_total", outcome="failed") - failed0 == failed
    assert figure(after, "aiobridge_call_duration_seconds_count") == figure(
        after, "aiobridge_calls_total", outcome="completed") + figure(
        after, "aiobridge_calls_total", outcome="failed")  # fmt: skip
    # The sum is over both workers, whichever of them answered the scrape.
    by_worker = [figure(per_worker(server.metrics_dir, pid, tmp_path), "aiobridge_calls_total",
                        outcome="completed") for pid in workers]  # fmt: skip
    assert sum(by_worker) == figure(after, "aiobridge_calls_total", outcome="completed")
    assert figure(after, "aiobridge_calls_in_flight") == 0
    assert figure(after, "aiobridge_calls_queued") == 0
    assert figure(after, "aiobridge_loop_lag_seconds_count") > 0
    assert figure(after, "aiobridge_loop_lag_max_seconds") >= 0


def test_calls_in_flight_and_a_killed_worker(
    three_workers: MetricsGunicorn, tmp_path: Path
) -> None:
    server = three_workers
    port = server.port
    workers = server.workers_pids()
    results: list[int | str] = []
    lock = threading.Lock()

    def slow_request() -> None:
        try:
            status, _ = get(port, f"/delay?seconds={HOLD_SECONDS}&n=1")
            outcome: int | str = status
        except (ConnectionError, http.client.HTTPException) as exc:
            outcome = type(exc).__name__  # its worker was killed
        with lock:
            results.append(outcome)

    holders = [threading.Thread(target=slow_request) for _ in range(2)]
    for holder in holders:
        holder.start()
    try:
        wait_until(lambda: figure(scrape(port), "aiobridge_calls_in_flight") == 2,
                   "2 calls in flight", 3 * WAIT, interval=0.05)  # fmt: skip
        held = {pid: figure(per_worker(server.metrics_dir, pid, tmp_path),
                            "aiobridge_calls_in_flight") for pid in workers}  # fmt: skip
        assert sorted(held.values()) == [0, 1, 1], held
        victim, survivor = (pid for pid in workers if held[pid] == 1)
        completed_before = figure(scrape(port), "aiobridge_calls_total", outcome="completed")
        os.kill(victim, signal.SIGKILL)
        # child_exit marks it dead: its call leaves the gauge, the survivor's stays.
        wait_until(lambda: figure(scrape(port), "aiobridge_calls_in_flight") == 1,
                   "the killed worker's call leaving the gauge", 3 * WAIT,
                   interval=0.05)  # fmt: skip
        assert not glob.glob(str(server.metrics_dir / f"gauge_livesum_{victim}.db"))
        assert figure(per_worker(server.metrics_dir, survivor, tmp_path),
                      "aiobridge_calls_in_flight") == 1  # fmt: skip
        # The dead worker's finished calls stay in the counters (they never go down).
        assert figure(scrape(port), "aiobridge_calls_total",
                      outcome="completed") == completed_before  # fmt: skip
    finally:
        for holder in holders:
            holder.join(CLIENT_TIMEOUT + HOLD_SECONDS)
    assert not any(holder.is_alive() for holder in holders)
    assert sorted(map(str, results)) == ["200", "RemoteDisconnected"], results
    final = scrape(port)
    assert figure(final, "aiobridge_calls_in_flight") == 0
    assert figure(final, "aiobridge_calls_total", outcome="completed") == completed_before + 1


def test_the_launcher_gives_each_server_a_metrics_directory_and_removes_it(
    redis_url: str, upstream: UpstreamServer
) -> None:
    with GunicornServer("bridge", redis_url=redis_url, upstream_url=upstream.url) as server:
        assert server._metrics_dir is not None
        metrics_dir = Path(server._metrics_dir)
        assert get(server.port, "/dog")[0] == 200
        assert figure(scrape(server.port), "aiobridge_calls_total", outcome="completed") >= 1
        assert list(metrics_dir.glob("counter_*.db"))
    assert not metrics_dir.exists()


class ConfigMadeDirectory(GunicornServer):
    """``gunicorn -c demo_flask/gunicorn.conf.py --preload`` alone: the config makes the dir."""

    def _env(self) -> dict[str, str]:
        env = super()._env()
        del env["PROMETHEUS_MULTIPROC_DIR"]
        return env


def test_the_config_makes_and_removes_a_directory_when_none_is_given(
    redis_url: str, upstream: UpstreamServer
) -> None:
    with ConfigMadeDirectory("bridge", redis_url=redis_url, upstream_url=upstream.url,
                             workers=2, preload=True, dev_mode=True) as server:  # fmt: skip
        assert server.pid is not None
        made = Path(tempfile.gettempdir()) / f"caas-metrics-{server.pid}"
        for _ in range(4):
            assert get(server.port, "/dog")[0] == 200
        assert figure(scrape(server.port), "aiobridge_calls_total", outcome="completed") == 4
        assert list(made.glob("counter_*.db"))
        assert server.terminate()
        log = server.output()
    assert not made.exists()
    for forbidden in FORBIDDEN_IN_LOG:
        assert forbidden not in log, log
