"""``python -m benchmarks``: the harness runs, and its outputs have the expected shape.

No timing is asserted: real numbers come from benchmark runs, not from tests.
The smoke test runs one micro-benchmark at its tiniest size in a subprocess;
the load test of the demo (gunicorn, Redis, the upstream) is ``slow``. The
report and the README block are also rendered from a synthetic result, which
checks that every sentence is built from the figures it is given.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import readme, report

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
    assert "800 req/s: 1.33x sync (600 req/s), 1.14x embedded-thread (700 req/s)" in text
    # sync wins with one client and no upstream latency: said, with the numbers and why
    assert "**The bridge loses to sync**" in text
    assert "sync 900 req/s vs bridge 700 (0.78x)" in text
    assert "only one request is in flight and there is no upstream wait" in text
    assert "embedded-thread: 3 errors" in text
    assert "3 timeout" in text
    assert "Targets missed in this run: x (load_demo)" in text
    # the Redis micro-benchmark: sync wins from one thread, the bridge from 16
    assert ("Sequential Redis GETs from 1 thread: redis-py sync wins**, 12,000 GET/s vs the "
            "bridge's 9,000 (0.75x)") in text
    assert "Redis GETs from 16 threads: the bridge 30,000 GET/s vs redis-py sync 15,000" in text


def test_headline_and_readme_block() -> None:
    document = _document()
    block = report.headline(document, chart="docs/x.png")
    assert block.startswith(report.HEADLINE_START)
    assert block.endswith(report.HEADLINE_END)
    assert "| **bridge** | 800.0 | 1.00x |" in block
    assert "| sync | 600.0 | 1.33x |" in block
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
    assert "| **bridge** | 800.0 | 1.00x |" in text
    assert "![" not in text
    assert (tmp_path / "docs" / "benchmark-headline.png").read_bytes() == b"\x89PNG chart"
