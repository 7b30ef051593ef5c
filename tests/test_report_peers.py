"""The report's section on the real alternatives is phrased from the measured numbers."""

from __future__ import annotations

from typing import Any

from benchmarks.report import headline
from benchmarks.report_peers import best_label, choose, peer_section
from benchmarks.results import MODE_ORDER

#: req/s and CPU ms per answer of each label, the same at 32 and 64 clients.
MEASURED = {"sync": (400, 1.2), "gevent": (300, 2.0), "embedded": (200, 2.5),
            "embedded-thread": (600, 1.0), "flask-async": (150, 3.0),
            "flask-recipe": (350, 1.6), "quart": (1000, 0.8), "bridge": (500, 1.3),
            "bridge-loop": (1100, 0.72),
            "bridge@granian": (700, 0.9), "bridge@uvicorn": (450, 1.3)}  # fmt: skip


def _point(rps: float, cpu: float, concurrency: int, errors: int = 0) -> dict[str, Any]:
    return {"latency_ms": 20, "concurrency": concurrency, "rps": rps, "rps_rounds": [rps, rps],
            "p50_ms": 40.0, "p90_ms": 60.0, "p99_ms": 90.0, "max_ms": 100.0, "errors": errors,
            "errors_by_kind": {}, "ok": 1000, "requests": 1000, "worker_cpu_ms_per_request": cpu,
            "open_to_upstream_peak": 32, "redis_clients_peak": 8, "upstream_connections": 32,
            "redis_new_connections": 0}  # fmt: skip


def _document(measured: dict[str, tuple[float, float]], faults: list[dict[str, Any]]) -> Any:
    modes = [{"mode": label, "points": [_point(rps, cpu, c) for c in (32, 64)], "fanout": [],
              "canines": _point(rps, cpu, 30), "rss_end_mb": 60.0}
             for label, (rps, cpu) in measured.items()]  # fmt: skip
    load = {"result": {"modes": modes}, "params": {"target_point": {"concurrency": 32,
                                                                     "latency_ms": 20}}}
    return {"benchmarks": {"load_demo": load, "faults": {"rows": faults, "params": {}}},
            "targets": [], "machine": {}}  # fmt: skip


FAULTS = [
    {"scenario": "--preload fork", "mode": "bridge", "outcome": "200 in 0.1 s", "hang": False},
    {"scenario": "--preload fork", "mode": "flask-recipe", "outcome": "no answer in 8 s",
     "hang": True},
]  # fmt: skip


def test_the_best_deployment_is_the_fastest_bridge_without_errors() -> None:
    document = _document(MEASURED, FAULTS)
    assert best_label(document) == "bridge@granian"
    failing = dict(MEASURED)
    document = _document(failing, FAULTS)
    for entry in document["benchmarks"]["load_demo"]["result"]["modes"]:
        if entry["mode"] == "bridge@granian":
            entry["points"][0]["errors"] = 3
    assert best_label(document) == "bridge"


def test_choose_says_a_rewrite_pays_from_the_measured_cpu() -> None:
    text = choose(_document(MEASURED, FAULTS))
    assert "A rewrite in Quart pays" in text
    assert "1.12x the CPU it cost Quart" in text  # 0.9 / 0.8
    assert "about 12% more per worker" in text
    assert "served 0.70x Quart's requests/s" in text  # 700 / 1000
    assert "served 2.33x the requests/s (a gevent worker spent 2.22x" in text  # 300; 2.0/0.9
    assert "the recipe hung in 1 (--preload fork)" in text


def test_choose_says_the_bridge_is_enough_when_it_is_within_a_tenth() -> None:
    close = {**MEASURED, "quart": (740, 0.85)}
    text = choose(_document(close, FAULTS))
    assert "Keep Flask and add the bridge" in text
    assert "1.06x the CPU it cost Quart" in text
    assert "at most 6% more requests per worker" in text
    assert "0.95x Quart's requests/s" in text


def test_the_section_and_the_headline_show_every_mode() -> None:
    document = _document(MEASURED, FAULTS)
    section = "\n".join(peer_section(document))
    for mode in MODE_ORDER:
        assert f"| {mode} |" in section or f"| **{mode}** |" in section, mode
    assert "| **bridge@granian** | granian WSGI | 32 |" in section
    assert "| bridge-loop | uvicorn, on its loop (uvloop, httptools) | 32 |" in section
    assert "**no answer in 8 s**" in section  # a hang is bold in the fault table
    top = headline(document)
    for mode in MODE_ORDER:
        assert f"| {mode} |" in top or f"| **{mode}** |" in top, mode
    assert "best deployment" in top
    assert "Which should I choose" in top


def test_choose_states_the_on_loop_mode_from_its_ratios() -> None:
    text = choose(_document(MEASURED, FAULTS))
    assert "the bridge served 1.10x Quart's requests/s at 0.90x its worker CPU" in text
    assert "and 1.57x the requests/s of the bridge behind granian WSGI" in text  # 1100/700
    without = {label: v for label, v in MEASURED.items() if label != "bridge-loop"}
    assert "bridge-loop" not in choose(_document(without, FAULTS))
