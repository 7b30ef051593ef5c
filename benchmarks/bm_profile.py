"""Where a worker's CPU goes per answer: the Flask app on the loop against Quart (py-spy).

For each label (default ``bridge-loop``, the Flask app on uvicorn's own loop,
and ``quart``, the rewrite on uvicorn), :func:`benchmarks.profile_demo.profile`
starts the demo alone, warms it up and loads ``/dog`` at the peer point (64
clients, 20 ms upstream) while ``py-spy record`` samples the worker. Each
sample is put in the category of its innermost frame's package (who spends the
CPU itself: uvicorn's HTTP handling, the event loop, Flask and werkzeug,
aiobridge's greenlet driver and WSGI over ASGI, aiohttp, redis-py...), and a
category's share of the samples is turned into microseconds of worker CPU per
answer (its share of the worker's CPU time during the load, divided by the
answers). A few frames are also given inclusively (their callees counted):
the per-request disconnect watcher, the WSGI environ, Flask's WSGI dispatch,
werkzeug's routing.

The samples are taken only while the worker holds the GIL (``--gil``), so the
shares are shares of its Python work; a shared machine moves the absolute
figures, less so the split. Needs py-spy and the right to trace the worker
(root, or ptrace allowed); without it the benchmark records why and no rows.

Run: ``python -m benchmarks.bm_profile [--labels bridge-loop,quart] [--duration 8]``.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
from pathlib import Path
from typing import Any

from .load_plan import LABELS, PEER_CONCURRENCY, TARGET_LATENCY_MS
from .profile_demo import profile, py_spy, stacks
from .results import Progress, Rows, UsageError, cell, main_for, markdown_table

__all__ = ("CATEGORIES", "INCLUSIVE", "categorize", "findings", "main")

NAME = "profile"
LABELS_DEFAULT = ("bridge-loop", "quart")
#: (category, pattern of a frame's ``function (file:line)``), the first that matches wins.
CATEGORIES = (
    ("aiobridge on the loop: greenlet driver, switch, WSGI over ASGI",
     r"aiobridge/(_onloop/|onloop\.py|_core/switch\.py)"),
    ("aiobridge: bridge core, Flask extension", r"aiobridge/"),
    ("Flask and werkzeug: WSGI dispatch, routing, request, response", r"(flask|werkzeug)/"),
    ("Quart: ASGI dispatch, request, response", r"quart/"),
    ("uvicorn and httptools: the HTTP server", r"(uvicorn|httptools|h11)/"),
    ("aiohttp: the upstream call", r"aiohttp/"),
    ("redis-py: the Redis call", r"redis/"),
    ("asyncio and uvloop: the event loop, tasks, futures", r"(asyncio|uvloop)/"),
    ("the demo's own code", r"demo_flask/"),
)  # fmt: skip
OTHER = "other (the interpreter, libraries not listed)"
#: Frames counted inclusively (with what they call): what an on-loop request adds.
INCLUSIVE = (
    ("aiobridge: the disconnect watcher task of each request", r"Driver\.(watch|_watch) \("),
    ("aiobridge: the WSGI environ and response over ASGI",
     r"(build_environ|Responder\.\w+|RequestBody\.\w+) \(aiobridge"),
    ("Flask: WSGI dispatch (Flask.wsgi_app)", r"Flask\.wsgi_app \("),
    ("werkzeug: URL routing (MapAdapter.match)", r"MapAdapter\.match \("),
)  # fmt: skip


def categorize(collapsed: str) -> tuple[int, dict[str, int], dict[str, int]]:
    """Samples in all, per category (innermost frame), per inclusive frame of :data:`INCLUSIVE`."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, samples in stacks(collapsed):
        total += samples
        for frame in reversed(frames[1:]):  # frames[0] names the thread
            category = next((name for name, pattern in CATEGORIES
                             if re.search(pattern, frame)), None)  # fmt: skip
            if category is not None:
                own[category] += samples
                break
        else:
            own[OTHER] += samples
        for name, pattern in INCLUSIVE:
            if any(re.search(pattern, frame) for frame in frames):
                inclusive[name] += samples
    return total, dict(own), dict(inclusive)


def _rows_of(label: str, summary: dict[str, Any], worker_cpu: float, collapsed: str) -> Rows:
    total, own, inclusive = categorize(collapsed)
    per_answer_us = worker_cpu / max(summary["ok"], 1) * 1e6
    base = {"label": label, "rps": summary["rps"], "answers": summary["ok"],
            "errors": summary["errors"], "samples": total,
            "worker_cpu_us_per_answer": round(per_answer_us, 1)}  # fmt: skip
    rows = []
    for kind, counts, names in (("self", own, [n for n, _ in CATEGORIES] + [OTHER]),
                                ("inclusive", inclusive, [n for n, _ in INCLUSIVE])):
        for name in names:
            share = counts.get(name, 0) / total if total else 0.0
            rows.append({**base, "kind": kind, "category": name, "share": round(share, 4),
                         "us_per_answer": round(share * per_answer_us, 1)})  # fmt: skip
    return rows


def format_table(rows: Rows) -> str:
    """One row per category, one column per label (µs of worker CPU per answer, share)."""
    labels = list(dict.fromkeys(row["label"] for row in rows))
    value = {(r["label"], r["kind"], r["category"]): r for r in rows}
    first = {label: next(r for r in rows if r["label"] == label) for label in labels}
    headers = ["where the worker's CPU goes (µs per answer, share)", *labels]
    lines = [["**worker CPU per answer** (req/s; samples)",
              *(f"{cell(first[label]['worker_cpu_us_per_answer'])} µs "
                f"({cell(first[label]['rps'])}; {first[label]['samples']:,})"
                for label in labels)]]  # fmt: skip
    for kind in ("self", "inclusive"):
        for category in dict.fromkeys(r["category"] for r in rows if r["kind"] == kind):
            cells = []
            for label in labels:
                row = value.get((label, kind, category))
                cells.append("-" if row is None else
                             f"{row['us_per_answer']:.1f} ({row['share']:.1%})")  # fmt: skip
            name = category if kind == "self" else f"{category} (inclusive)"
            lines.append([name, *cells])
    return markdown_table(headers, lines, "---|" + "---:|" * len(labels))


def findings(rows: Rows, mine: str = "bridge-loop", other: str = "quart") -> list[str]:
    """Where ``mine``'s extra worker CPU per answer over ``other``'s goes, phrased from ``rows``."""
    us = {(r["label"], r["kind"], r["category"]): r["us_per_answer"] for r in rows}
    total = {r["label"]: r["worker_cpu_us_per_answer"] for r in rows}
    if mine not in total or other not in total:
        return []
    framework = "the web framework (Flask or Quart, and werkzeug)"
    merged: dict[tuple[str, str], float] = collections.defaultdict(float)
    for (label, kind, name), value in us.items():
        if kind == "self":
            merged[(label, framework if name in (CATEGORIES[2][0], CATEGORIES[3][0])
                    else name)] += value  # fmt: skip
    gaps = sorted(((merged[(mine, name)] - merged[(other, name)], name)
                   for name in {n for _, n in merged}), reverse=True)  # fmt: skip
    biggest = "; ".join(f"{name} {gap:+.0f} µs" for gap, name in gaps[:3] if gap > 0)
    watcher = us.get((mine, "inclusive", INCLUSIVE[0][0]), 0.0)
    layer = us.get((mine, "self", CATEGORIES[0][0]), 0.0)
    return [f"Where the worker's CPU goes (py-spy, {mine} and {other} each loaded alone): "
            f"{mine} spent {total[mine]:.0f} µs per answer, {other} {total[other]:.0f} µs "
            f"({total[mine] - total[other]:+.0f} µs); the largest differences: {biggest}. "
            f"What aiobridge adds on the loop (the greenlet driver, the switch, the WSGI "
            f"environ and response over ASGI) is {layer:.0f} µs per answer, of which the "
            f"disconnect watcher task started for each request is {watcher:.0f} µs; "
            f"{framework} differs by {merged[(mine, framework)] - merged[(other, framework)]:+.0f}"
            f" µs."]  # fmt: skip


def _measure(args: argparse.Namespace, progress: Progress) -> tuple[dict[str, Any], Rows]:
    labels = tuple(args.labels.split(",")) if args.labels else LABELS_DEFAULT
    unknown = set(labels) - set(LABELS)
    if unknown:
        raise UsageError(f"unknown labels: {', '.join(sorted(unknown))}")
    duration = args.duration or (4 if args.quick else 8)
    concurrency = max(PEER_CONCURRENCY)
    params: dict[str, Any] = {"labels": list(labels), "concurrency": concurrency,
                              "latency_ms": TARGET_LATENCY_MS, "duration_s": duration,
                              "rate_hz": 200}  # fmt: skip
    spy = py_spy()
    if spy is None:
        params["skipped"] = "py-spy is not installed: python -m pip install py-spy"
        return params, []
    rows: Rows = []
    with tempfile.TemporaryDirectory(prefix="bm-profile-") as out:
        for label in labels:
            progress(f"{label}: py-spy, /dog, {concurrency} clients, {duration} s")
            summary, worker_cpu, collapsed = profile(
                label, concurrency=concurrency, latency=TARGET_LATENCY_MS, duration=duration,
                threads=32, rate=200, out=Path(out), spy=spy)  # fmt: skip
            if not collapsed.strip():
                params.setdefault("no_samples", []).append(label)
                continue
            rows += _rows_of(label, summary, worker_cpu, collapsed)
    return params, rows


def main(argv: list[str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Profile each label; returns ``{"name", "params", "rows"}``."""
    return main_for(
        NAME, __doc__, argv, progress, _measure, format_table,
        quick_help="4 s of sampling per label", show_targets=False,
        options=[("--labels", {"help": f"comma-separated labels (default "
                                       f"{','.join(LABELS_DEFAULT)})"}),
                 ("--duration", {"type": int, "help": "seconds of load and sampling (8)"})],
    )  # fmt: skip


if __name__ == "__main__":
    main()
