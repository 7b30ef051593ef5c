"""``report.md`` from a run's ``results.json``: tables, targets and findings.

Every number in the report, including the sentences of "Where the bridge
wins, and where it does not", is taken from the run's measurements: a
sentence is only written when the numbers say it, and phrased from them.
The "headline" block (between ``HEADLINE_START`` and ``HEADLINE_END``) is
what :mod:`benchmarks.readme` pastes into the README.

Run ``python -m benchmarks.report results/results.json`` to re-render a report
from a saved run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .report_findings import findings
from .report_peers import best_label, choose, peer_section, served_by
from .report_run import (
    command_line,
    fanout_at,
    load_entry,
    load_modes,
    machine_line,
    point_at,
    ratio_text,
    run_line,
    target_point,
    target_value,
)
from .report_tables import load_tables, micro_tables, targets_table
from .results import MODE_ORDER, markdown_table, numeric_align

__all__ = ("HEADLINE_END", "HEADLINE_START", "findings", "headline", "render")

HEADLINE_START = "<!-- benchmarks:headline:start -->"
HEADLINE_END = "<!-- benchmarks:headline:end -->"


# -- headline ---------------------------------------------------------------------------


def headline(document: dict[str, Any], chart: str | None = "headline.png", *,
             machine: bool = True) -> str:  # fmt: skip
    """The block the README shows: the target point per mode, the machine, the command.

    ``machine=False`` leaves the machine and run lines out (the report states
    them once, at its top).
    """
    concurrency, latency = target_point(document)
    params = load_entry(document).get("params") or {}
    bridge = point_at(document, "bridge", concurrency, latency)
    rows = []
    for mode in MODE_ORDER:
        p = point_at(document, mode, concurrency, latency)
        if p is None:
            continue
        rss = next((m["rss_end_mb"] for m in load_modes(document) if m["mode"] == mode), None)
        rows.append([f"**{mode}**" if mode == "bridge" else mode, served_by(mode), p["rps"],
                     ratio_text(bridge, p), p["p50_ms"], p["p99_ms"],
                     p["errors"], p["upstream_connections"], p["redis_clients_peak"],
                     p["redis_new_connections"], rss])  # fmt: skip
    best = best_label(document)
    deployed = point_at(document, best, concurrency, latency) if best else None
    if best and best != "bridge" and deployed:
        rss = next((m["rss_end_mb"] for m in load_modes(document) if m["mode"] == best), None)
        rows.append([f"**{best}** (best deployment)", served_by(best), deployed["rps"],
                     ratio_text(bridge, deployed), deployed["p50_ms"], deployed["p99_ms"],
                     deployed["errors"], deployed["upstream_connections"],
                     deployed["redis_clients_peak"], deployed["redis_new_connections"], rss])
    if not rows:
        return f"{HEADLINE_START}\n(no load test in this run)\n{HEADLINE_END}"
    headers = ["mode", "served by", "req/s", "bridge ÷ mode (min-max over rounds)", "p50 ms",
               "p99 ms", "errors",
               "upstream conns opened", "Redis conns held", "Redis conns opened",
               "worker RSS MB"]  # fmt: skip
    lines = [
        HEADLINE_START,
        f"`GET /dog` with {concurrency} concurrent clients and a {latency} ms upstream, "
        f"{params.get('workers', 1)} worker process per mode (gunicorn's with "
        f"{params.get('threads', 32)} threads), {params.get('duration', '?')} s per load; each "
        f"row names its server:",
        "",
        markdown_table(headers, rows, numeric_align(headers, 2)),
        "",
    ]
    fanout = [(mode, fanout_at(document, mode)) for mode in MODE_ORDER]
    fanout_text = ", ".join(f"{mode} {p['p50_ms']:.0f} ms" for mode, p in fanout
                            if p and p["p50_ms"] is not None)  # fmt: skip
    if fanout_text:
        spec = params.get("fanout") or {}
        lines += [f"Fan-out of {spec.get('n', '?')} upstream calls of "
                  f"{spec.get('seconds', 0) * 1000:g} ms per request (p50, 1 client): "
                  f"{fanout_text}.", ""]  # fmt: skip
    if any(point_at(document, m, concurrency, latency)
           for m in ("quart", "gevent", "flask-recipe")):  # fmt: skip
        lines += [f"Which should I choose: {choose(document)}", ""]
    lines += _headline_targets(document)
    if chart:
        lines += [f"![requests/s per mode]({chart})", ""]
    if machine:
        lines += [f"Machine: {machine_line(document)}. Run: {run_line(document)}.", ""]
    lines += [f"Reproduce: `{command_line(document)}` (then `python -m benchmarks.readme "
              f"RESULTS_DIR` to put this block in the README).", HEADLINE_END]  # fmt: skip
    return "\n".join(lines)


def _headline_targets(document: dict[str, Any]) -> list[str]:
    """Each load-test target met or missed, in one paragraph: the claims the README may make."""
    targets = [t for t in document.get("targets", []) if t.get("benchmark") == "load_demo"]
    if not targets:
        return []
    met = [t for t in targets if t.get("met")]
    missed = [t for t in targets if not t.get("met")]
    text_ = f"Targets of the load test: {len(met)} of {len(targets)} met."
    if missed:
        text_ += " Missed: " + "; ".join(
            f"{t['label']}: measured {target_value(t)}" for t in missed) + "."
    return [text_, ""]


def render(document: dict[str, Any], charts: list[str],
           headline_chart: str | None = "headline.png") -> str:  # fmt: skip
    """The whole report as markdown (``charts``: PNG file names beside it)."""
    machine = document.get("machine", {})
    load_before = machine.get("load_average")
    load_after = document.get("load_average_after")
    lines = [
        "# aiobridge benchmarks",
        "",
        f"Run: {run_line(document)}{' (--quick)' if document.get('quick') else ''}"
        f"{' (--tiny: a smoke test, not a measurement)' if document.get('tiny') else ''}.",
        f"Machine: {machine_line(document)}. Load average (1/5/15 min) before: "
        f"{load_before}, after: {load_after}: other work on the machine during the run "
        f"makes the figures noisier, not the ratios taken within one run.",
        "",
        *([f"**Stopped early**: {document['watchdog']}.", ""] if document.get("watchdog")
          else []),
        "## Headline",
        "",
        headline(document, headline_chart, machine=False),
        "",
        "## Targets",
        "",
        targets_table(document),
        "",
        "## Where the bridge wins, and where it does not",
        "",
        *[f"- {sentence}" for sentence in findings(document)],
        "",
        *peer_section(document),
    ]
    lines += load_tables(document)
    lines += micro_tables(document)
    if charts:
        lines += ["", "## Charts", ""] + [f"![{name}]({name})" for name in charts]
    versions = document.get("packages") or {}
    lines += ["", "## Versions", "",
              ", ".join(f"{k} {v}" for k, v in versions.items() if v) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "results/results.json")
    data = json.loads(source.read_text(encoding="utf-8"))
    names = sorted(path.name for path in source.parent.glob("*.png"))
    (source.parent / "report.md").write_text(render(data, names), encoding="utf-8")
    print(source.parent / "report.md")
