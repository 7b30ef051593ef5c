"""Scaling out, measured: 1, 2 and 3 hosts behind HAProxy, and the failover drills.

Hosts are network namespaces on this machine (``demo_flask.scaleout``): each
runs the demo's gunicorn (bridge mode, 2 workers x 8 threads); HAProxy on
127.0.0.1 balances them and health-checks ``/health``; Redis is a Sentinel
group (1 master, 2 replicas, 3 sentinels). ``/dog?latency=0`` is loaded through
HAProxy by closed-loop clients for a fixed time: requests/s, p99, errors, and
the CPU the hosts' gunicorn processes spent per answer. Every host shares the
machine's cores (``os.cpu_count()`` is in the results), so the scaling
figure is bounded by the cores, not by the design: read it with the CPU per
answer beside it.

Then the failover drills of the test suite, with their figures: Sentinel with
its master SIGKILLed, Sentinel switched by ``SENTINEL FAILOVER``, Cluster with
the master of the demo's slot SIGKILLed, and the host drill (one host's
gunicorn SIGKILLed, another's SIGTERMed, under load).

Needs root (namespaces) and haproxy; without them it records why and no rows.
``python -m benchmarks`` runs it with the others and puts its tables in the report.

Run: ``python -m benchmarks.bm_scaleout [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from typing import Any

import psutil

from demo_flask.scaleout.drills import KINDS, redis_failover_drill
from demo_flask.scaleout.hosts import Deployment, hosts_drill
from demo_flask.scaleout.load import Load

from .results import Progress, Rows, cell, main_for, markdown_table

NAME = "scaleout"


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            master = psutil.Process(pid)
            for proc in [master, *master.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def throughput(hosts: int, seconds: float, threads: int = 16) -> dict[str, Any]:
    """One row: ``hosts`` hosts loaded through HAProxy for ``seconds``."""
    with Deployment(hosts) as deployment:
        assert deployment.balancer is not None
        pids = [s.pid for s in deployment.servers if s.pid is not None]
        with Load("127.0.0.1", deployment.balancer.port, "/dog?latency=0", threads=threads,
                  max_requests=500, max_seconds=30) as warm:  # fmt: skip
            warm.wait_for(lambda a: len(a) >= 500, "warm-up", 30)
        cpu_before = _cpu_seconds(pids)
        load = Load("127.0.0.1", deployment.balancer.port, "/dog?latency=0", threads=threads,
                    max_requests=1_000_000, max_seconds=seconds)  # fmt: skip
        began = time.monotonic()
        with load:
            load.wait_for(lambda a: time.monotonic() - began >= seconds, "the load's time",
                          seconds + 30)  # fmt: skip
        elapsed = time.monotonic() - began
        cpu = _cpu_seconds(pids) - cpu_before
    ok = [a.end - a.start for a in load.answers if a.ok]
    ok.sort()
    p99 = ok[min(len(ok) - 1, int(len(ok) * 0.99))] if ok else None
    return {"hosts": hosts, "workers_per_host": deployment.workers, "requests": len(load.answers),
            "ok": len(ok), "errors": len(load.answers) - len(ok),
            "rps": round(len(ok) / elapsed, 1),
            "p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
            "cpu_ms_per_answer": round(cpu * 1000 / len(ok), 3) if ok else None}  # fmt: skip


def _rows(throughput_rows: Rows, drills: list[dict[str, Any]], hosts: dict[str, Any]) -> Rows:
    """One flat list: a row per host count, per failover event, per host event."""
    rows: Rows = [{"table": "throughput", **row} for row in throughput_rows]
    for drill in drills:
        for event in drill["events"]:
            rows.append({"table": "failover", "drill": drill["kind"], **event,
                         "billed": drill["billed"], "ok_total": drill["ok"],
                         "billing_exact": drill["billed"] == drill["ok"]})  # fmt: skip
    for event in hosts["events"]:
        rows.append({"table": "hosts", **event, "hosts": hosts["hosts"],
                     "check_interval_s": hosts["check_interval_s"], "fall": hosts["fall"],
                     "billed": hosts["billed"], "ok_total": hosts["ok"]})  # fmt: skip
    return rows


def format_table(rows: Rows) -> str:
    """The three tables of a run: hosts behind HAProxy, Redis failovers, hosts taken away."""
    of = {name: [r for r in rows if r.get("table") == name]
          for name in ("throughput", "failover", "hosts")}  # fmt: skip
    out = ["Scaling out: hosts behind HAProxy, `/dog?latency=0` (every host shares this "
           "machine's cores: req/s is bounded by them, not by the design; the CPU per answer "
           "of the hosts' gunicorn processes is the figure to carry over).", "",
           markdown_table(["hosts", "workers/host", "req/s", "p99 ms", "errors",
                           "CPU ms/answer"],
                          [[r["hosts"], r["workers_per_host"], r["rps"], r["p99_ms"],
                            r["errors"], cell(r["cpu_ms_per_answer"], 2)]
                           for r in of["throughput"]]),
           "", "Redis failover under load (a connection per request):", "",
           markdown_table(["drill", "event", "new master s", "503 window s", "failed",
                           "every worker writes s", "billed/200"],
                          [[r["drill"], r["event"], cell(r["promoted_s"], 2),
                            cell(r["window_s"], 2), r["failed"], cell(r["every_worker_s"], 2),
                            f"{r['billed']}/{r['ok_total']}"]
                           for r in of["failover"]])]  # fmt: skip
    if of["hosts"]:
        first = of["hosts"][0]
        out += ["", f"Hosts taken away under load ({first['hosts']} hosts, HAProxy checks "
                f"/health every {first['check_interval_s']} s, fall {first['fall']}; "
                f"{first['billed']} billed for {first['ok_total']} answers 200):", "",
                markdown_table(["event", "host", "routed around s", "errors",
                                "in flight ok"],
                               [[r["event"], r["host"], cell(r["routed_around_s"], 2),
                                 json.dumps(r["errors"]), f"{r['in_flight_ok']}/{r['in_flight']}"]
                                for r in of["hosts"]])]  # fmt: skip
    return "\n".join(out)


def _measure(args: argparse.Namespace, progress: Progress) -> tuple[dict[str, Any], Rows]:
    seconds = 4.0 if args.quick else 15.0
    params: dict[str, Any] = {"seconds_per_row": seconds, "cpu_count": os.cpu_count(),
                              "clients": 16}  # fmt: skip
    missing = [why for why, ok in (("root (network namespaces)", os.geteuid() == 0),
                                   ("haproxy", shutil.which("haproxy") is not None)) if not ok]
    if missing:
        params["skipped"] = "needs " + " and ".join(missing)
        return params, []
    measured = []
    for hosts in (1, 2, 3):
        progress(f"{hosts} host(s) behind HAProxy, {seconds:.0f} s")
        measured.append(throughput(hosts, seconds))
    drills = []
    for kind in KINDS:
        progress(f"failover drill: {kind}")
        drills.append(redis_failover_drill(kind).as_json())
    progress("hosts drill: SIGKILL one host, SIGTERM another")
    return params, _rows(measured, drills, hosts_drill(3).as_json())


def main(argv: list[str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Measure the rows and drills; returns ``{"name", "params", "rows"}``."""
    return main_for(NAME, __doc__, argv, progress, _measure, format_table,
                    quick_help="4 s a row instead of 15 s", show_targets=False)


if __name__ == "__main__":
    main()
