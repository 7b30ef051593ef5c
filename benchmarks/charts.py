"""PNG charts of a benchmark run (matplotlib, Agg backend: no display needed).

* ``load_rps.png``: requests/s of each demo mode against concurrency, one
  panel per upstream latency, the panels on one shared y scale;
* ``load_p99.png``: p99 latency of each mode against concurrency (log scale,
  plain millisecond ticks);
* ``headline.png``: the target point (32 clients, 20 ms upstream), requests/s
  per mode with the connections each holds; the chart the README shows;
* ``fanout.png``: fan-out p50 per mode against the one-call floor;
* ``call_overhead.png``: µs per call of each bridge, 1 and 32 caller threads.

Every chart says on it which way is better, keeps its legend clear of the
data (one legend for all panels, outside them), labels its bars with their
values, and explains on the chart any bar that is missing. A chart whose data
was not measured in the run is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

__all__ = ("write_charts",)

#: One colour per mode, the same in every chart; the bridge stands out.
MODE_STYLE = {
    "sync": ("#7f7f7f", "o"),
    "embedded": ("#d62728", "v"),
    "embedded-thread": ("#ff7f0e", "s"),
    "flask-async": ("#9467bd", "^"),
    "bridge": ("#1f77b4", "D"),
}
#: Colours and markers for modes without a style of their own (new modes, deployments).
SPARE_STYLES = (("#2ca02c", "P"), ("#8c564b", "X"), ("#e377c2", "*"), ("#17becf", "h"),
                ("#bcbd22", "p"), ("#393b79", "<"), ("#637939", ">"), ("#843c39", "d"))  # fmt: skip


def _style(mode: str, modes: list[str]) -> tuple[str, str]:
    """A mode's colour and marker: its own, else a spare one by its place in ``modes``."""
    if mode in MODE_STYLE:
        return MODE_STYLE[mode]
    others = [m for m in modes if m not in MODE_STYLE]
    return SPARE_STYLES[others.index(mode) % len(SPARE_STYLES)] if mode in others else ("k", ".")


def _plain_ms(ax: Axes) -> None:
    """Log-scale y ticks written as plain numbers (5, 10, 20, 50 ...), not 10^1."""
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _label_bars(ax: Axes, bars: BarContainer, texts: list[str], fontsize: float = 8) -> None:
    """Write each bar's value above it."""
    for bar, label in zip(bars, texts, strict=True):
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                    fontsize=fontsize)  # fmt: skip


def _modes(document: dict[str, Any]) -> list[dict[str, Any]]:
    load = document.get("benchmarks", {}).get("load_demo") or {}
    modes: list[dict[str, Any]] = (load.get("result") or {}).get("modes", [])
    return modes


def _target_point(document: dict[str, Any]) -> tuple[int, int]:
    load = document.get("benchmarks", {}).get("load_demo") or {}
    point = (load.get("params") or {}).get("target_point") or {}
    return int(point.get("concurrency", 32)), int(point.get("latency_ms", 20))


def _save(fig: Figure, path: Path, *, layout: bool = True) -> Path:
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _by_concurrency(document: dict[str, Any], out: Path, key: str, label: str,
                    filename: str, log: bool) -> Path | None:  # fmt: skip
    modes = _modes(document)
    names = [m["mode"] for m in modes]
    latencies = sorted({p["latency_ms"] for m in modes for p in m["points"]})
    if not latencies:
        return None
    # One y scale for every panel, so panels compare at a glance.
    fig, axes = plt.subplots(1, len(latencies), figsize=(5.2 * len(latencies) + 1.8, 4.2),
                             squeeze=False, sharey=True)  # fmt: skip
    for ax, latency in zip(axes[0], latencies, strict=True):
        for mode in modes:
            points = sorted((p for p in mode["points"] if p["latency_ms"] == latency
                             and p[key] is not None), key=lambda p: p["concurrency"])  # fmt: skip
            if not points:
                continue
            colour, marker = _style(mode["mode"], names)
            ax.plot([p["concurrency"] for p in points], [p[key] for p in points],
                    marker=marker, color=colour, label=mode["mode"],
                    linewidth=2.5 if mode["mode"] == "bridge" else 1.5)  # fmt: skip
        ax.set_xscale("log", base=2)
        concurrencies = sorted({p["concurrency"] for m in modes for p in m["points"]})
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        if log:
            ax.set_yscale("log")
            _plain_ms(ax)
        ax.set_title(f"/dog, upstream latency {latency} ms")
        ax.set_xlabel("concurrent clients")
        ax.grid(True, alpha=0.3)
    if not log:
        # Once every panel is drawn: set_ylim on one shared axis freezes the top
        # at what that panel had, and would clip a higher line in a later panel.
        top = max((p[key] for m in modes for p in m["points"] if p[key] is not None),
                  default=1.0)  # fmt: skip
        axes[0][0].set_ylim(0, top * 1.05)
    axes[0][0].set_ylabel(label)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # a mode measured only in a later panel still gets its entry
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    fig.legend(handles, labels, loc="center right", fontsize=8, title="mode",
               title_fontsize=8, frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    return _save(fig, out / filename, layout=False)


def _headline(document: dict[str, Any], out: Path) -> Path | None:
    concurrency, latency = _target_point(document)
    rows = []
    for mode in _modes(document):
        for p in mode["points"]:
            if p["concurrency"] == concurrency and p["latency_ms"] == latency:
                rows.append((mode["mode"], p))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(8.5, 1.3 * len(rows) + 2), 4.4))
    names = [name for name, _ in rows]
    values = [p["rps"] for _, p in rows]
    colours = [_style(name, names)[0] for name in names]
    bars = ax.bar(names, values, color=colours)
    _label_bars(ax, bars, [f"{p['rps']:,.0f} req/s\nupstream conns: {p['upstream_connections']}"
                           f"\nRedis conns: {p['redis_clients_peak']} held, "
                           f"{p['redis_new_connections']} new" for _, p in rows],
                fontsize=6.5)  # fmt: skip
    ax.set_ylim(0, max(values) * 1.35 if max(values) > 0 else 1)
    ax.set_ylabel("requests/s (higher is better)")
    ax.tick_params(axis="x", labelsize=8)
    load = document.get("benchmarks", {}).get("load_demo") or {}
    params = load.get("params") or {}
    ax.set_title(f"/dog, {concurrency} clients, {latency} ms upstream, "
                 f"{params.get('workers', 1)} worker x {params.get('threads', 32)} "
                 f"threads; higher is better", fontsize=9)  # fmt: skip
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
    target = floor * 1.1
    fig, ax = plt.subplots(figsize=(max(7.5, 1.1 * len(rows) + 2), 4.2))
    names = [name for name, _ in rows]
    bars = ax.bar(names, [p["p50_ms"] for _, p in rows],
                  color=[_style(n, names)[0] for n in names])  # fmt: skip
    _label_bars(ax, bars, [f"{p['p50_ms']:.1f}" for _, p in rows])
    ax.axhline(floor, color="black", linestyle="--", linewidth=1,
               label=f"floor: one call, {floor:g} ms")  # fmt: skip
    ax.axhline(target, color="tab:green", linestyle=":", linewidth=1.2,
               label=f"bridge target: p50 <= {target:g} ms")  # fmt: skip
    ax.set_yscale("log")
    _plain_ms(ax)
    ax.set_ylabel("p50 ms (log scale; lower is better)")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(f"fan-out: {fanout['n']} upstream calls of {floor:g} ms per request, "
                 f"1 client; lower is better", fontsize=9)  # fmt: skip
    ax.set_ylim(top=max(p["p50_ms"] for _, p in rows) * 2.2)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)
    missing = [m["mode"] for m in _modes(document) if m["mode"] not in names]
    if missing:
        fig.text(0.01, 0.01, f"no bar: {', '.join(missing)} (no fan-out answer measured)",
                 fontsize=7)  # fmt: skip
    return _save(fig, out / "fanout.png")


def _call_overhead(document: dict[str, Any], out: Path) -> Path | None:
    bench = document.get("benchmarks", {}).get("call_overhead") or {}
    rows = bench.get("rows") or []
    if not rows:
        return None
    # One group of bars per (caller threads, placement), in the order measured.
    groups = list(dict.fromkeys((r["threads"], r.get("placement", "unpinned")) for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(groups)
    missing: list[str] = []
    for index, (count, placement) in enumerate(groups):
        values = {r["variant"]: r["us_per_call"] for r in rows
                  if (r["threads"], r.get("placement", "unpinned")) == (count, placement)}
        present = [(i, v) for i, v in enumerate(variants) if v in values]
        label = f"{count} caller thread{'s' if count > 1 else ''}, {placement}"
        bars = ax.bar([i + index * width for i, _ in present], [values[v] for _, v in present],
                      width, label=label)  # fmt: skip
        _label_bars(ax, bars, [f"{values[v]:.3g}" for _, v in present], fontsize=6)
        missing += [variant for variant in variants if variant not in values]
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(variants))], variants,
                  rotation=15, fontsize=8)  # fmt: skip
    ax.set_yscale("log")
    _plain_ms(ax)
    ax.set_ylabel("µs per call (log scale; lower is better)")
    ax.set_title("per-call overhead of a trivial coroutine from sync code; lower is better",
                 fontsize=9)  # fmt: skip
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)
    notes = ["raw-rct: asyncio.run_coroutine_threadsafe(coro, loop).result() on a loop "
             "thread started by hand (the baseline)."]
    if len(groups) > 2:
        notes.append("one CPU: every thread pinned to one CPU (the CPU work of a call); "
                     "two CPUs: caller and loop on different CPUs (each hand-off wakes the "
                     "other CPU);")  # fmt: skip
        notes.append("unpinned: where the scheduler puts them (a loop thread switches "
                     "between those two for seconds at a time).")  # fmt: skip
    if missing:
        notes.append(f"No {max(c for c, _ in groups)}-thread bar for "
                     f"{', '.join(sorted(set(missing)))}: "
                     f"a loop that cannot be shared between threads.")  # fmt: skip
    fig.text(0.01, 0.01, "\n".join(notes), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.01 + 0.03 * len(notes), 1, 1))
    return _save(fig, out / "call_overhead.png", layout=False)


def write_charts(document: dict[str, Any], out: Path) -> list[Path]:
    """Write every chart the run has data for; return their paths."""
    made = [
        _by_concurrency(document, out, "rps", "requests/s (higher is better)", "load_rps.png",
                        log=False),
        _by_concurrency(document, out, "p99_ms", "p99 latency, ms (log scale; lower is better)",
                        "load_p99.png", log=True),
        _headline(document, out),
        _fanout(document, out),
        _call_overhead(document, out),
    ]
    return [path for path in made if path is not None]
