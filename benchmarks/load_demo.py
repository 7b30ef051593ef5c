"""End-to-end load test of the demo ("Canines as a Service") under gunicorn.

One embedded Redis and one upstream dog service are started once
(:mod:`demo_flask.services`); then the demo is started in each of the nine
modes (``sync``, ``gevent``, ``embedded``, ``embedded-thread``,
``flask-async``, ``flask-recipe``, ``bridge`` under gunicorn, 1 worker, 32
gthread threads by default, gevent workers for ``gevent``; ``quart`` on
uvicorn, one process; ``bridge-loop``, the Flask app on uvicorn's own loop,
uvloop and httptools, one process), and in the bridge's other deployments
(:data:`DEPLOYMENTS`: ``bridge@granian``, ``bridge@uvicorn`` through a2wsgi,
``bridge@gevent`` workers), all side by side, and
each is loaded in turn from this process by an aiohttp closed-loop client
(:mod:`benchmarks.load_client`), point by point, so the modes share the
machine's conditions:

* ``/dog`` at concurrency 1, 8, 32, 64 with an upstream latency of 0 and
  20 ms: requests/s, p50/p90/p99/max latency, errors by kind; the connections
  the worker holds while loaded (peak open TCP connections to Redis and to the
  upstream, sampled with psutil on the worker's sockets; Redis's own
  ``INFO clients`` ``connected_clients``, which counts every mode's idle pools
  too, is kept beside), the connections it opens (distinct upstream client
  connections from the upstream's ``/connections``, Redis
  ``total_connections_received``), the worker's RSS before and after, and
  the CPU time used by the worker, the upstream, Redis and the load client
  (what bounds a point on a small machine);
* fan-out: ``/delay?seconds=0.05&n=10`` latency against the 50 ms floor (one
  upstream call's duration; doing the ten calls one after the other costs 500),
  and the same ten calls made by the load client itself (the floor this
  machine can reach without Flask in between);
* the classic "Canines as a Service" table: 90 requests of ``/dog?latency=15``
  from 30 clients, with the median, mean and standard deviation of their time;
* the worker's RSS over the whole run of each mode.

Everything binds and connects to 127.0.0.1 only; each load is bounded in
requests and in time; every process started here is stopped on the way out,
also on Ctrl-C.

Run: ``python -m benchmarks.load_demo [--quick] [--modes bridge,quart,bridge@granian]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import Any

from .load_analysis import best_bridge, check_targets, find_point
from .load_measure import cpu_seconds, merge_rounds
from .load_plan import (
    CANINES_LATENCY_MS,
    DEPLOYMENTS,
    FANOUT_CALLS,
    FANOUT_SECONDS,
    LABELS,
    PEER_CONCURRENCY,
    TARGET_CONCURRENCY,
    TARGET_LATENCY_MS,
    Plan,
    Progress,
    server_of,
)
from .load_run import run
from .results import markdown_table, numeric_align, show

__all__ = ("DEPLOYMENTS", "LABELS", "NAME", "PEER_CONCURRENCY", "Plan", "best_bridge",
           "check_targets", "cpu_seconds", "find_point", "format_table", "main",
           "merge_rounds", "rows_of", "run", "server_of")  # fmt: skip

NAME = "load_demo"


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (one per mode and load point) for tables and the JSON file."""
    rows = []
    for entry in result.get("modes", []):
        for point in entry["points"]:
            rows.append({"mode": entry["mode"], "kind": "dog", **point})
        for point in entry["fanout"]:
            rows.append({"mode": entry["mode"], "kind": "fanout", **point})
        rows.append({"mode": entry["mode"], "kind": "canines", **entry["canines"]})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A compact markdown table of the ``/dog`` rows."""
    headers = ["mode", "latency", "clients", "req/s", "p50 ms", "p99 ms", "errors"]
    return markdown_table(headers, ([row["mode"], str(row["latency_ms"]), str(row["concurrency"]),
                                     f"{row['rps']:,.0f}", str(row["p50_ms"]), str(row["p99_ms"]),
                                     str(row["errors"])] for row in rows if row["kind"] == "dog"),
                          numeric_align(headers, 1))  # fmt: skip


def _parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def main(argv: list[str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the load test; returns ``{"name", "params", "rows", "targets", "result"}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per load point")
    parser.add_argument("--modes", help=f"comma-separated subset of {','.join(LABELS)}")
    parser.add_argument("--concurrency", help="comma-separated client counts (default 1,8,32,64)")
    parser.add_argument("--latencies", help="comma-separated upstream latencies in ms (0,20)")
    parser.add_argument("--duration", type=float, help="seconds per load point and round")
    parser.add_argument("--rounds", type=int, help="rounds of every /dog point (3; quick: 1)")
    parser.add_argument("--threads", type=int, help="gunicorn threads per worker (32)")
    parser.add_argument("--workers", type=int, help="gunicorn workers (1)")
    parser.add_argument("--canines", type=int, help="requests of the canines table (90)")
    args = parser.parse_args(argv)
    changes: dict[str, Any] = {}
    if args.modes:
        unknown = set(args.modes.split(",")) - set(LABELS)
        if unknown:
            parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
        changes["modes"] = tuple(m for m in LABELS if m in args.modes.split(","))
    if args.concurrency:
        changes["concurrency"] = _parse_ints(args.concurrency)
    if args.latencies:
        changes["latencies_ms"] = _parse_ints(args.latencies)
    for name in ("duration", "rounds", "threads", "workers"):
        if getattr(args, name):
            changes[name] = getattr(args, name)
    if args.canines:
        changes["canines_requests"] = args.canines
    plan = Plan.quick(**changes) if args.quick else Plan(**changes)
    started = time.monotonic()
    result = run(plan, progress or (lambda message: print(message, flush=True)))
    rows = rows_of(result)
    targets = check_targets(result)
    output: dict[str, Any] = {
        "name": NAME,
        "params": {**asdict(plan), "fanout": {"seconds": FANOUT_SECONDS, "n": FANOUT_CALLS},
                   "canines_latency_ms": CANINES_LATENCY_MS,
                   "target_point": {"concurrency": TARGET_CONCURRENCY,
                                    "latency_ms": TARGET_LATENCY_MS}},
        "rows": rows,
        "targets": targets,
        "result": result,
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    if progress is None:
        show(output, format_table)
        print("canines median ms:", {r["mode"]: r["p50_ms"] for r in rows
                                     if r["kind"] == "canines"})  # fmt: skip
    return output


if __name__ == "__main__":
    main()
