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

Needs root (namespaces) and haproxy. Writes ``scaleout.json`` and
``scaleout.md`` (a markdown section the report can include) into ``--out``.

Run: ``python -m benchmarks.bm_scaleout [--quick] [--out results]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import psutil

from demo_flask.scaleout.drills import KINDS, redis_failover_drill
from demo_flask.scaleout.hosts import Deployment, hosts_drill
from demo_flask.scaleout.load import Load

from .results import markdown_table

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


def format_tables(result: dict[str, Any]) -> str:
    cores = result["params"]["cpu_count"]
    rows = [[r["hosts"], r["workers_per_host"], r["rps"], r["p99_ms"], r["errors"],
             r["cpu_ms_per_answer"]] for r in result["throughput"]]  # fmt: skip
    out = [f"### Scaling out: hosts behind HAProxy ({cores} cores shared by every host)", "",
           markdown_table(["hosts", "workers/host", "req/s", "p99 ms", "errors",
                           "CPU ms/answer"], rows), "",
           f"All hosts share this machine's {cores} cores: req/s is bounded by them, not "
           "by the design; the CPU per answer (the hosts' gunicorn processes) is the cost "
           "each more host adds to.", "",
           "### Failover under load", ""]  # fmt: skip
    fail_rows = []
    for drill in result["redis"]:
        for event in drill["events"]:
            fail_rows.append([drill["kind"], event["event"], event["promoted_s"],
                              event["window_s"], event["failed"], event["every_worker_s"],
                              f"{drill['billed']}/{drill['ok']}"])  # fmt: skip
    out.append(markdown_table(["drill", "event", "new master s", "503 window s", "failed",
                               "every worker writes s", "billed/200"], fail_rows))  # fmt: skip
    hosts = result["hosts"]
    host_rows = [[e["event"], e["host"], e["routed_around_s"],
                  json.dumps(e["errors"]), f"{e['in_flight_ok']}/{e['in_flight']}"]
                 for e in hosts["events"]]  # fmt: skip
    out += ["", f"### Hosts: {hosts['hosts']} hosts, HAProxy checks /health every "
            f"{hosts['check_interval_s']} s, fall {hosts['fall']}", "",
            markdown_table(["event", "host", "routed around s", "errors", "in flight ok"],
                           host_rows), "",
            f"Billing: {hosts['billed']} billed for {hosts['ok']} answers 200 "
            f"({json.dumps(hosts['by_kind'])}).", ""]  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 s a row instead of 15 s")
    parser.add_argument("--out", type=Path, default=Path("results"), help="default: results/")
    args = parser.parse_args(argv)
    seconds = 4.0 if args.quick else 15.0
    result: dict[str, Any] = {
        "name": NAME,
        "params": {"seconds_per_row": seconds, "cpu_count": os.cpu_count()},
        "throughput": [throughput(n, seconds) for n in (1, 2, 3)],
        "redis": [redis_failover_drill(kind).as_json() for kind in KINDS],
        "hosts": hosts_drill(3).as_json(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaleout.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = format_tables(result)
    (args.out / "scaleout.md").write_text(markdown)
    print(markdown)
    return result


if __name__ == "__main__":
    main()
