"""``python -m benchmarks``: the harness runs, and its outputs have the expected shape.

No timing is asserted: real numbers come from benchmark runs, not from tests.
The smoke test runs one micro-benchmark at its tiniest size in a subprocess;
the load test of the demo (gunicorn, Redis, the upstream) is ``slow``. The
report and the README block are also rendered from a synthetic result, which
checks that every sentence is built from the figures it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks import charts, load_client, readme, report
from benchmarks._watchdog import EXIT_OVERRAN
from benchmarks.report_tables import micro_tables
from demo_flask.services import UpstreamServer
from tests.helpers import run_python

REPO_ROOT = Path(__file__).resolve().parent.parent


def _run_harness(out: Path, *args: str, timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--out", str(out), *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    document: dict[str, Any] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return document


def test_call_overhead_smoke(tmp_path: Path) -> None:
    document = _run_harness(tmp_path, "--only", "call_overhead", timeout=90)
    assert set(document) >= {"machine", "packages", "git", "benchmarks", "targets", "command"}
    machine = document["machine"]
    assert machine["logical_cores"] > 0
    assert machine["ram_gb"] > 0
    assert machine["cpu_model"]
    assert machine["python"].startswith("CPython") or machine["python"]
    assert document["packages"]["aiobridge"]
    assert list(document["benchmarks"]) == ["call_overhead"]
    bench = document["benchmarks"]["call_overhead"]
    assert "error" not in bench
    assert bench["params"]["rounds"] == 1
    variants = {row["variant"] for row in bench["rows"]}
    assert {"aiobridge", "raw-rct", "asgiref"} <= variants
    assert all(row["us_per_call"] > 0 and row["calls_per_s"] > 0 for row in bench["rows"])
    assert document["targets"]
    assert all({"benchmark", "label", "value", "target", "met"} <= set(t)
               for t in document["targets"])  # fmt: skip
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Targets" in text
    assert "## call_overhead" in text
    assert (tmp_path / "call_overhead.png").stat().st_size > 0


def test_unknown_benchmark_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nope", "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown benchmark" in done.stderr
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_load_demo_smoke(tmp_path: Path) -> None:
    document = _run_harness(tmp_path, "--only", "load_demo", timeout=110)
    bench = document["benchmarks"]["load_demo"]
    assert "error" not in bench, bench.get("error")
    (mode,) = bench["result"]["modes"]
    assert mode["mode"] == "bridge"
    assert mode["gunicorn_exit_code"] == 0
    point = mode["points"][0]
    assert point["ok"] > 0
    assert point["rps"] > 0
    assert point["p50_ms"] > 0
    assert point["errors"] == 0
    assert point["upstream_requests"] >= point["ok"]
    assert point["redis_clients_peak"] > 0
    assert mode["fanout"][0]["ok"] > 0
    assert mode["canines"]["ok"] > 0
    assert mode["rss_start_mb"] > 0
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "### Canines as a Service" in text


# -- rendering from a synthetic run ------------------------------------------------------


def _point(latency: int, concurrency: int, rps: float, **extra: Any) -> dict[str, Any]:
    point = {
        "latency_ms": latency, "concurrency": concurrency, "path": "/dog", "requests": 100,
        "ok": 100, "errors": 0, "errors_by_kind": {}, "seconds": 1.0, "rps": rps,
        "p50_ms": 10.0, "p90_ms": 12.0, "p99_ms": 20.0, "max_ms": 30.0, "mean_ms": 11.0,
        "stdev_ms": 2.0, "redis_clients_peak": 8, "open_to_redis_peak": 8,
        "open_to_upstream_peak": 32, "redis_new_connections": 0, "upstream_connections": 32,
        "upstream_requests": 100, "rss_before_mb": 50.0, "rss_after_mb": 50.0,
    }  # fmt: skip
    point.update(extra)
    return point


def _mode(name: str, rps_at_target: float, rps_single: float) -> dict[str, Any]:
    fanout = _point(0, 1, 10.0, p50_ms=52.0 if name != "sync" else 510.0)
    del fanout["latency_ms"]
    return {
        "mode": name,
        "points": [_point(0, 1, rps_single), _point(20, 32, rps_at_target)],
        "fanout": [fanout],
        "canines": _point(15, 30, 500.0),
        "rss_start_mb": 50.0, "rss_end_mb": 51.0, "rss_growth_mb": 1.0,
        "gunicorn_exit_code": 0, "gunicorn_log_problems": {}, "gunicorn_log_tail": "",
    }  # fmt: skip


def _document() -> dict[str, Any]:
    modes = [_mode("sync", 600.0, 900.0), _mode("embedded-thread", 700.0, 700.0),
             _mode("bridge", 800.0, 700.0)]  # fmt: skip
    modes[1]["points"][1]["errors"] = 3
    modes[1]["points"][1]["errors_by_kind"] = {"timeout": 3}
    return {
        "command": "python -m benchmarks", "started": "2026-01-01T00:00:00+00:00",
        "seconds": 1.0, "machine": {"cpu_model": "Test CPU", "logical_cores": 2,
                                    "ram_gb": 4.0, "os": "Linux", "python": "CPython 3.11"},
        "git": {"commit": "0" * 40, "modified": False}, "packages": {"aiobridge": "0"},
        "benchmarks": {"load_demo": {
            "params": {"workers": 1, "threads": 32, "duration": 1.0, "max_requests": 10,
                       "request_timeout": 5.0, "fanout": {"seconds": 0.05, "n": 10},
                       "canines_requests": 90, "canines_latency_ms": 15,
                       "canines_concurrency": 30,
                       "target_point": {"concurrency": 32, "latency_ms": 20}},
            "result": {"modes": modes},
        }, "redis": {"rows": [
            {"variant": "aiobridge", "threads": 1, "gets_per_s": 9000},
            {"variant": "redis-py sync", "threads": 1, "gets_per_s": 12000},
            {"variant": "aiobridge", "threads": 16, "gets_per_s": 30000},
            {"variant": "redis-py sync", "threads": 16, "gets_per_s": 15000},
        ]}},
        "targets": [{"benchmark": "load_demo", "label": "x", "value": 1.0, "target": ">= 2",
                     "met": False}],
    }  # fmt: skip


def test_findings_are_phrased_from_the_numbers() -> None:
    sentences = report.findings(_document())
    text = "\n".join(sentences)
    # bridge 800 vs sync 600 and embedded-thread 700 at the target point
    assert ("800 req/s: 1.33x (1 round: no spread) sync (600 req/s), 1.14x (1 round: no "
            "spread) embedded-thread (700 req/s)") in text
    # sync wins with one client and no upstream latency: said, with the numbers and why
    assert "**The bridge loses to sync**" in text
    assert "sync 900 req/s vs bridge 700 (0.78x (1 round: no spread))" in text
    assert "only one request is in flight and there is no upstream wait" in text
    assert "embedded-thread: 3 errors" in text
    assert "3 timeout" in text
    assert "Targets missed in this run: x (load_demo)" in text
    # the Redis micro-benchmark: sync wins from one thread, the bridge from 16
    assert ("Sequential Redis GETs from 1 thread: redis-py sync wins**, 12,000 GET/s vs the "
            "bridge's 9,000 (0.75x (1 round: no spread))") in text
    assert "Redis GETs from 16 threads: the bridge 30,000 GET/s vs redis-py sync 15,000" in text


def test_headline_and_readme_block() -> None:
    document = _document()
    block = report.headline(document, chart="docs/x.png")
    assert block.startswith(report.HEADLINE_START)
    assert block.endswith(report.HEADLINE_END)
    # each row names the server that ran it (Quart and gevent do not run on gthread)
    assert "| **bridge** | gunicorn gthread | 800.0 | 1.00x (1 round: no spread) |" in block
    assert "| sync | gunicorn gthread | 600.0 | 1.33x (1 round: no spread) |" in block
    assert "Test CPU, 2 logical cores, 4.0 GB RAM" in block
    assert "![requests/s per mode](docs/x.png)" in block
    before = f"# Title\n\nintro\n\n{report.HEADLINE_START}\nold\n{report.HEADLINE_END}\n\nrest\n"
    after = readme.replace_block(before, block)
    assert after.startswith("# Title\n\nintro\n\n")
    assert after.endswith("\n\nrest\n")
    assert "old" not in after
    assert block in after
    with pytest.raises(ValueError, match="markers"):
        readme.replace_block("# no markers\n", block)


def test_the_report_shows_the_scale_out_rows_and_drills() -> None:
    throughput = [{"table": "throughput", "hosts": n, "workers_per_host": 2, "requests": 0,
                   "ok": 0, "errors": 0, "rps": 300.5 + n, "p99_ms": 150.25,
                   "cpu_ms_per_answer": 1.6}
                  for n in (1, 2)]  # fmt: skip
    failover = {"table": "failover", "drill": "sentinel-kill", "event": "SIGKILL master",
                "promoted_s": 2.31, "window_s": 2.29, "failed": 512, "failed_by_kind": {"503": 512},
                "every_worker_s": 2.41, "served": 900, "billed": 900, "ok_total": 900,
                "billing_exact": True}  # fmt: skip
    host = {"table": "hosts", "event": "SIGKILL", "host": "h1", "routed_around_s": 0.81,
            "errors": {"502": 6}, "in_flight": 0, "in_flight_ok": 0, "hosts": 3,
            "check_interval_s": 0.5, "fall": 2, "billed": 700, "ok_total": 700}  # fmt: skip
    document = {"benchmarks": {"scaleout": {"name": "scaleout", "params": {"cpu_count": 2},
                                            "rows": [*throughput, failover, host]}}}
    text = "\n".join(micro_tables(document))
    assert "## scaleout" in text
    assert "| 2 | 2 | 302.5 | 150.2 | 0 | 1.60 |" in text
    assert "| sentinel-kill | SIGKILL master | 2.31 | 2.29 | 512 | 2.41 | 900/900 |" in text
    assert '| SIGKILL | h1 | 0.81 | {"502": 6} | 0/0 |' in text
    assert "700 billed for 700 answers 200" in text


def test_readme_update_copies_the_chart_but_links_no_image(tmp_path: Path) -> None:
    # README.md is also the package index page, where a relative image link breaks.
    results = tmp_path / "results"
    results.mkdir()
    (results / "results.json").write_text(json.dumps(_document()), encoding="utf-8")
    (results / "headline.png").write_bytes(b"\x89PNG chart")
    target = tmp_path / "README.md"
    target.write_text(f"# T\n\n{report.HEADLINE_START}\nold\n{report.HEADLINE_END}\n", "utf-8")
    assert readme.main([str(results), "--readme", str(target)]) == 0
    text = target.read_text(encoding="utf-8")
    assert "| **bridge** | gunicorn gthread | 800.0 | 1.00x" in text
    assert "![" not in text
    assert (tmp_path / "docs" / "benchmark-headline.png").read_bytes() == b"\x89PNG chart"
    # The run itself is committed beside its report: the one source of every figure.
    committed = json.loads((tmp_path / readme.RESULTS).read_text(encoding="utf-8"))
    assert committed == _document()
    assert (tmp_path / readme.REPORT).read_text(encoding="utf-8") == readme.published_report(
        committed, tmp_path)


def _with_rounds(document: dict[str, Any]) -> dict[str, Any]:
    """The synthetic run with three interleaved rounds of the target point."""
    rounds = {"sync": [600.0, 500.0, 700.0], "embedded-thread": [700.0, 700.0, 700.0],
              "bridge": [800.0, 550.0, 1050.0]}  # fmt: skip
    for mode in document["benchmarks"]["load_demo"]["result"]["modes"]:
        mode["points"][1]["rps_rounds"] = rounds[mode["mode"]]
    document["benchmarks"]["redis"]["rows"][0]["ratio_to_sync_spread"] = {
        "min": 0.7, "median": 0.75, "max": 1.1, "rounds": 3}
    return document


def test_every_ratio_shows_its_spread_across_rounds() -> None:
    document = _with_rounds(_document())
    block = report.headline(document)
    # bridge over sync round by round: 800/600, 550/500, 1050/700
    assert "| sync | gunicorn gthread | 600.0 | 1.33x (1.10-1.50, 3 rounds) |" in block
    text = "\n".join(report.findings(document))
    assert "1.33x (1.10-1.50, 3 rounds) sync (600 req/s)" in text
    # one round of three is faster for the bridge: no winner is declared
    assert "Redis GETs from 1 thread: no clear winner" in text
    assert "0.75x (0.70-1.10, 3 rounds)" in text


def test_load_targets_carry_their_spread() -> None:
    from benchmarks import load_demo

    document = _with_rounds(_document())
    targets = load_demo.check_targets(document["benchmarks"]["load_demo"]["result"])
    sync = targets["bridge req/s >= 1.2x sync (/dog, 32 clients, 20 ms upstream)"]
    assert sync["spread"] == {"min": 1.1, "median": 1.333, "max": 1.5, "rounds": 3}
    assert sync["value"] == 1.333 and sync["met"]


def test_report_reproduces_the_command_run_and_states_the_machine_once() -> None:
    document = _document()
    document["command"] = "python -m benchmarks --quick --out /tmp/run"
    document["targets"] = [
        {"benchmark": "load_demo", "label": "bridge fan-out 10 x 50 ms p50 <= 55 ms",
         "value": 57.0, "target": "<= 55", "met": False},
        {"benchmark": "load_demo", "label": "y", "value": 2.0, "target": ">= 1", "met": True},
    ]  # fmt: skip
    text = report.render(document, [])
    assert "Reproduce: `python -m benchmarks --quick --out /tmp/run`" in text
    assert text.count("Test CPU, 2 logical cores") == 1
    # the headline (the README's block) says which targets were missed, fan-out included
    block = report.headline(document)
    assert "Targets of the load test: 1 of 2 met. Missed: bridge fan-out 10 x 50 ms p50 " \
           "<= 55 ms: measured 57.000." in block


def test_a_stuck_probe_cannot_hang_the_load(upstream: UpstreamServer) -> None:
    """The prober hang: a probe that never returns is left behind, bounded, and counted."""
    release = threading.Event()
    calls: list[float] = []

    def stuck_probe() -> None:
        calls.append(time.monotonic())
        release.wait(60)  # as a call whose cancellation was lost would

    try:
        result = asyncio.run(load_client.run_load(
            f"{upstream.url}/health", concurrency=2, max_requests=20, duration=5.0,
            timeout=5.0, probe=stuck_probe, probe_interval=0.01))  # fmt: skip
    finally:
        release.set()
    assert calls, "the probe never ran"
    assert result.ok == 20
    assert result.errors["probe_stuck"] == 1


def test_the_watchdog_stops_an_overrunning_run_and_names_the_point(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--tiny", "--only", "load_demo", "--deadline", "1",
         "--out", str(tmp_path)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    seen: set[psutil.Process] = set()
    try:
        while proc.poll() is None:  # every process the run starts, while it runs
            with contextlib.suppress(psutil.Error):
                seen.update(psutil.Process(proc.pid).children(recursive=True))
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == EXIT_OVERRAN, stderr[-3000:]
    assert "watchdog: the run overran its 1 s budget at 'load_demo: " in stderr, stderr[-3000:]
    document = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert document["watchdog"].startswith("watchdog: the run overran")
    assert "Stopped early" in (tmp_path / "report.md").read_text(encoding="utf-8")
    alive = [p for p in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [p.cmdline() for p in alive]


def test_the_watchdog_kills_a_run_that_ignores_its_stop() -> None:
    code = """
        import signal, subprocess, sys, time
        from benchmarks._watchdog import Watchdog
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a run whose stop path is stuck
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(child.pid, flush=True)
        with Watchdog(0.5, grace=0.5):
            time.sleep(120)
    """
    done = run_python(code, timeout=60, dev=False)
    assert done.returncode == EXIT_OVERRAN, done.stderr
    assert "killing its children" in done.stderr
    child = int(done.stdout.split()[0])
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_readme_claims_are_the_committed_reports() -> None:
    """The README's benchmark block is cut from the committed report (one run)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(report.HEADLINE_START)
    block = text[start:text.index(report.HEADLINE_END) + len(report.HEADLINE_END)]
    committed = (REPO_ROOT / readme.REPORT).read_text(encoding="utf-8")
    hint = "publish the README block and the report from one run: python -m benchmarks.readme"
    assert block == readme.readme_block_from_report(committed), hint
    rows = [line for line in block.splitlines() if line.startswith("|")]
    assert rows and all(line in committed.splitlines() for line in rows), hint
    # The front page keeps no run log: the machine, the command and the tally are the report's.
    for log in ("Machine: ", "Targets of the load test", "Reproduce: ", "/tmp/"):
        assert log not in block, f"{log!r} belongs on the report page, not the README"


def test_committed_report_is_what_the_committed_results_render() -> None:
    """docs/benchmark-report.md is the rendering of docs/results/benchmark-results.json."""
    results = REPO_ROOT / readme.RESULTS
    if not results.exists():
        pytest.skip(f"{readme.RESULTS} is not committed yet: publish a run with "
                    "python -m benchmarks.readme")  # fmt: skip
    document = json.loads(results.read_text(encoding="utf-8"))
    committed = (REPO_ROOT / readme.REPORT).read_text(encoding="utf-8")
    assert committed == readme.published_report(document), (
        "the report was edited by hand or rendered from another run: python -m benchmarks.readme")


def test_report_prose_is_wrapped() -> None:
    text = readme.wrap_prose("- " + "word " * 40 + "\n| a | " + "b " * 60 + "|\n")
    lines = text.splitlines()
    assert all(len(line) <= readme.WIDTH for line in lines if not line.startswith("|"))
    assert lines[1].startswith("  word")  # a bullet's continuation is indented
    assert lines[-1].startswith("| a |") and len(lines[-1]) > readme.WIDTH  # tables stay


def test_requests_chart_shows_every_point_of_every_panel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The panels share one y scale; the highest point of a later panel must fit in it.
    figures: list[Any] = []

    def keep(fig: Any, path: Path, *, layout: bool = True) -> Path:
        figures.append(fig)
        return path

    monkeypatch.setattr(charts, "_save", keep)

    def point(latency: int, concurrency: int, rps: float) -> dict[str, Any]:
        return {"latency_ms": latency, "concurrency": concurrency, "rps": rps, "p99_ms": 5.0}

    modes = [
        {"mode": "bridge", "points": [point(0, 1, 300.0), point(20, 64, 600.0)]},
        {"mode": "quart", "points": [point(0, 1, 200.0), point(20, 64, 1000.0)]},
    ]
    document = {"benchmarks": {"load_demo": {"result": {"modes": modes}}}}
    charts._by_concurrency(document, tmp_path, "rps", "requests/s", "rps.png", log=False)
    (figure,) = figures
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert len(panels) == 2
    for ax in panels:
        bottom, top = ax.get_ylim()
        assert bottom == 0 and top >= 1000.0, (ax.get_title(), bottom, top)
    charts.plt.close(figure)
