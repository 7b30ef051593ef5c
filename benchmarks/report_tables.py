"""The report's detail tables: the targets, the load test's points, each micro-benchmark."""

from __future__ import annotations

import importlib
from typing import Any

from .report_run import load_entry, load_modes, target_value
from .results import cell, markdown_table, numeric_align

__all__ = ("load_tables", "micro_tables", "targets_table")


def targets_table(document: dict[str, Any]) -> str:
    """Every target of the run: measured, bound, met or missed."""
    rows = [[t["benchmark"], t["label"], target_value(t), t["target"],
             "met" if t["met"] else "**missed**"] for t in document.get("targets", [])]  # fmt: skip
    if not rows:
        return "No benchmark of this run declares targets."
    return ("A ratio is the median of its per-round ratios, with the lowest and highest "
            "round: a target met by the median but not by every round is within this "
            "machine's noise.\n\n"
            + markdown_table(["benchmark", "target", "measured (min-max over rounds)", "bound",
                      "result"], rows))


def load_tables(document: dict[str, Any]) -> list[str]:
    """The load test's sections: /dog per upstream latency, fan-out, Canines, memory."""
    modes = load_modes(document)
    if not modes:
        return []
    out = ["## Load test: the demo under gunicorn", ""]
    params = load_entry(document).get("params") or {}
    out.append(f"{params.get('workers')} gthread worker(s) x {params.get('threads')} threads "
               f"per mode, all modes up side by side and loaded in turn; closed-loop aiohttp "
               f"clients, {params.get('duration')} s or {params.get('max_requests'):,} "
               f"requests per point and round, whichever ends first; "
               f"{params.get('rounds', 1)} round(s) per point, interleaved across modes: "
               f"the figures are the median round's (by req/s), errors are summed over all "
               f"rounds; "
               f"request timeout {params.get('request_timeout')} s. \"Held\": peak open "
               f"connections of the worker while loaded (psutil on the worker's sockets). "
               f"\"Opened\": distinct upstream client connections "
               f"(upstream's /connections) and Redis total_connections_received during the "
               f"point.")  # fmt: skip
    latencies = sorted({p["latency_ms"] for m in modes for p in m["points"]})
    headers = ["mode", "clients", "req/s", "req/s per round", "p50 ms", "p99 ms", "max ms",
               "errors",
               "upstream held", "upstream opened", "Redis held", "Redis opened",
               "worker CPU ms/answer", "machine CPU %", "RSS MB before → after"]  # fmt: skip
    for latency in latencies:
        rows = []
        for entry in modes:
            for p in entry["points"]:
                if p["latency_ms"] == latency:
                    errors = ", ".join(f"{c} {k}" for k, c in p["errors_by_kind"].items()) or 0
                    per_round = " / ".join(f"{r:,.0f}" for r in p.get("rps_rounds", []))
                    rows.append([entry["mode"], p["concurrency"], p["rps"], per_round, p["p50_ms"],
                                 p["p99_ms"], p["max_ms"], errors, p["open_to_upstream_peak"],
                                 p["upstream_connections"], p["redis_clients_peak"],
                                 p["redis_new_connections"],
                                 cell(p.get("worker_cpu_ms_per_request"), 2),
                                 p.get("machine_cpu_percent"),
                                 f"{p['rss_before_mb']:.1f} → {p['rss_after_mb']:.1f}"])
        out += ["", f"### /dog, upstream latency {latency} ms", "",
                markdown_table(headers, rows, numeric_align(headers, 1))]
    spec = params.get("fanout") or {}
    floor = spec.get("seconds", 0.05) * 1000
    rows = [[entry["mode"], p["concurrency"], p["ok"], p["p50_ms"], p["p99_ms"], p["max_ms"],
             None if p["p50_ms"] is None else f"{p['p50_ms'] / floor:.2f}x", p["errors"]]
            for entry in modes for p in entry["fanout"]]  # fmt: skip
    direct = (load_entry(document).get("result") or {}).get("fanout_direct")
    if direct:
        rows.append(["(load client, no app)", 1, direct["requests"], direct["p50_ms"], None,
                     direct["max_ms"], f"{direct['p50_ms'] / floor:.2f}x", 0])  # fmt: skip
    headers = ["mode", "clients", "answers", "p50 ms", "p99 ms", "max ms", "p50 ÷ floor",
               "errors"]  # fmt: skip
    out += ["", f"### Fan-out: /delay?seconds={spec.get('seconds')}&n={spec.get('n')} "
            f"(floor {floor:g} ms)", "", markdown_table(headers, rows, numeric_align(headers, 1))]
    rows = [[entry["mode"], entry["canines"]["requests"], entry["canines"]["ok"],
             f"{entry['canines']['seconds']:.3f}", entry["canines"]["p50_ms"],
             entry["canines"]["mean_ms"], entry["canines"]["stdev_ms"],
             entry["canines"]["errors"]] for entry in modes]  # fmt: skip
    headers = ["mode", "total requests", "ok", "total s", "median ms", "mean ms", "stdev ms",
               "errors"]  # fmt: skip
    out += ["", f"### Canines as a Service: {params.get('canines_requests')} requests of "
            f"/dog?latency={params.get('canines_latency_ms')} from "
            f"{params.get('canines_concurrency')} clients", "",
            markdown_table(headers, rows, numeric_align(headers, 1))]  # fmt: skip
    rows = [[entry["mode"], entry["rss_start_mb"], entry["rss_end_mb"], entry["rss_growth_mb"],
             entry["gunicorn_exit_code"], entry["gunicorn_log_problems"] or "none"]
            for entry in modes]  # fmt: skip
    headers = ["mode", "RSS after warm-up MB", "RSS at end MB", "growth MB",
               "gunicorn exit code", "log problems"]  # fmt: skip
    out += ["", "### Worker memory over the whole run of each mode", "",
            markdown_table(headers, rows, numeric_align(headers, 1))]
    return out


def _generic_rows(rows: list[dict[str, Any]]) -> str:
    headers = list(dict.fromkeys(key for row in rows for key in row))
    return markdown_table(headers, ([row.get(h) for h in headers] for row in rows))


def micro_tables(document: dict[str, Any]) -> list[str]:
    """A section per micro-benchmark: its parameters and its own table (or a failure)."""
    out = []
    for name, result in document.get("benchmarks", {}).items():
        if name in ("load_demo", "faults"):  # faults: in the section on the real alternatives
            continue
        out += ["", f"## {name}", ""]
        if "error" in result:
            out += ["Failed:", "", "```", str(result["error"]).strip()[-2000:], "```"]
            continue
        params = result.get("params") or {}
        out.append("Parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()) + ".")
        rows = result.get("rows") or []
        if not rows:
            continue
        try:
            module = importlib.import_module(f"{__package__}.bm_{name}")
            table = module.format_table(rows) if hasattr(module, "format_table") else None
        except Exception:  # a table is not worth failing the report
            table = None
        out += ["", table or _generic_rows(rows)]
    return out
