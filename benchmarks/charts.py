"""PNG charts of a benchmark run (matplotlib, Agg backend: no display needed).

* ``load_rps.png``: requests/s of each demo mode against concurrency, one
  panel per upstream latency;
* ``load_p99.png``: p99 latency of each mode against concurrency;
* ``headline.png``: the target point (32 clients, 20 ms upstream), requests/s
  per mode with the connections each holds; the chart the README shows;
* ``fanout.png``: fan-out p50 per mode against the one-call floor;
* ``call_overhead.png``: µs per call of each bridge, 1 and 32 caller threads.

A chart whose data was not measured in the run is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ("write_charts",)

#: One colour per mode, the same in every chart; the bridge stands out.
MODE_STYLE = {
    "sync": ("#7f7f7f", "o"),
    "embedded": ("#d62728", "v"),
    "embedded-thread": ("#ff7f0e", "s"),
    "flask-async": ("#9467bd", "^"),
    "bridge": ("#1f77b4", "D"),
}


def _modes(document: dict[str, Any]) -> list[dict[str, Any]]:
    load = document.get("benchmarks", {}).get("load_demo") or {}
    modes: list[dict[str, Any]] = (load.get("result") or {}).get("modes", [])
    return modes


def _target_point(document: dict[str, Any]) -> tuple[int, int]:
    load = document.get("benchmarks", {}).get("load_demo") or {}
    point = (load.get("params") or {}).get("target_point") or {}
    return int(point.get("concurrency", 32)), int(point.get("latency_ms", 20))


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _by_concurrency(document: dict[str, Any], out: Path, key: str, label: str,
                    filename: str, log: bool) -> Path | None:  # fmt: skip
    modes = _modes(document)
    latencies = sorted({p["latency_ms"] for m in modes for p in m["points"]})
    if not latencies:
        return None
    fig, axes = plt.subplots(1, len(latencies), figsize=(5.2 * len(latencies), 4), squeeze=False)
    for ax, latency in zip(axes[0], latencies, strict=True):
        for mode in modes:
            points = sorted((p for p in mode["points"] if p["latency_ms"] == latency
                             and p[key] is not None), key=lambda p: p["concurrency"])  # fmt: skip
            if not points:
                continue
            colour, marker = MODE_STYLE.get(mode["mode"], ("black", "."))
            ax.plot([p["concurrency"] for p in points], [p[key] for p in points],
                    marker=marker, color=colour, label=mode["mode"],
                    linewidth=2.5 if mode["mode"] == "bridge" else 1.5)  # fmt: skip
        ax.set_xscale("log", base=2)
        concurrencies = sorted({p["concurrency"] for m in modes for p in m["points"]})
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        if log:
            ax.set_yscale("log")
        ax.set_title(f"/dog, upstream latency {latency} ms")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, out / filename)


def _headline(document: dict[str, Any], out: Path) -> Path | None:
    concurrency, latency = _target_point(document)
    rows = []
    for mode in _modes(document):
        for p in mode["points"]:
            if p["concurrency"] == concurrency and p["latency_ms"] == latency:
                rows.append((mode["mode"], p))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    names = [name for name, _ in rows]
    values = [p["rps"] for _, p in rows]
    colours = [MODE_STYLE.get(name, ("black", "."))[0] for name in names]
    bars = ax.bar(names, values, color=colours)
    for bar, (_, p) in zip(bars, rows, strict=True):
        ax.annotate(f"{p['rps']:,.0f} req/s\nupstream conns: {p['upstream_connections']}\n"
                    f"Redis conns: {p['redis_clients_peak']} held, "
                    f"{p['redis_new_connections']} new",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=6.5)  # fmt: skip
    ax.set_ylim(0, max(values) * 1.35 if max(values) > 0 else 1)
    ax.set_ylabel("requests/s (higher is better)")
    load = document.get("benchmarks", {}).get("load_demo") or {}
    params = load.get("params") or {}
    ax.set_title(f"/dog, {concurrency} clients, {latency} ms upstream, "
                 f"{params.get('workers', 1)} gthread worker x {params.get('threads', 32)} "
                 f"threads", fontsize=9)  # fmt: skip
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out / "headline.png")


def _fanout(document: dict[str, Any], out: Path) -> Path | None:
    rows = []
    for mode in _modes(document):
        for p in mode["fanout"]:
            if p["concurrency"] == 1 and p["p50_ms"] is not None:
                rows.append((mode["mode"], p))
    if not rows:
        return None
    load = document["benchmarks"]["load_demo"]
    fanout = load["params"]["fanout"]
    floor = fanout["seconds"] * 1000
    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = [name for name, _ in rows]
    ax.bar(names, [p["p50_ms"] for _, p in rows],
           color=[MODE_STYLE.get(n, ("black", "."))[0] for n in names])  # fmt: skip
    ax.axhline(floor, color="black", linestyle="--", linewidth=1,
               label=f"floor: one call, {floor:g} ms")  # fmt: skip
    ax.set_yscale("log")
    ax.set_ylabel("p50 ms (log)")
    ax.set_title(f"fan-out: {fanout['n']} upstream calls of {floor:g} ms per request, 1 client")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out / "fanout.png")


def _call_overhead(document: dict[str, Any], out: Path) -> Path | None:
    bench = document.get("benchmarks", {}).get("call_overhead") or {}
    rows = bench.get("rows") or []
    if not rows:
        return None
    threads = sorted({r["threads"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(threads)
    for index, count in enumerate(threads):
        values = {r["variant"]: r["us_per_call"] for r in rows if r["threads"] == count}
        xs = [i + index * width for i in range(len(variants))]
        ax.bar(xs, [values.get(v, 0) for v in variants], width,
               label=f"{count} caller thread{'s' if count > 1 else ''}")  # fmt: skip
    ax.set_xticks([i + width * (len(threads) - 1) / 2 for i in range(len(variants))], variants,
                  rotation=20, fontsize=8)  # fmt: skip
    ax.set_yscale("log")
    ax.set_ylabel("µs per call (log, lower is better)")
    ax.set_title("per-call overhead of a trivial coroutine from sync code")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out / "call_overhead.png")


def write_charts(document: dict[str, Any], out: Path) -> list[Path]:
    """Write every chart the run has data for; return their paths."""
    made = [
        _by_concurrency(document, out, "rps", "requests/s", "load_rps.png", log=False),
        _by_concurrency(document, out, "p99_ms", "p99 latency, ms (log)", "load_p99.png", log=True),
        _headline(document, out),
        _fanout(document, out),
        _call_overhead(document, out),
    ]
    return [path for path in made if path is not None]
