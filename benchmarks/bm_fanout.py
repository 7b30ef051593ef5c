"""Latency of one synchronous call that fans out to 10 slow HTTP requests.

A small aiohttp.web server (in a child process, on 127.0.0.1) answers
``GET /slow?ms=50`` after 50 ms. One "operation" is 10 such requests made from
sync code, in five ways:

* ``single call``: one request through the bridge (the unit of latency);
* ``bridge.gather``: the 10 requests concurrently on the bridge, one hand-off;
* ``bridge.as_completed(limit=4)``: at most 4 in flight (three waves);
* ``requests sequential``: a keep-alive ``requests.Session``, one after another;
* ``requests thread pool``: 10 threads, one ``requests.Session`` per thread.

The bridge variants share one ``aiobridge.clients.http_session`` resource.
For ``bridge.gather`` every request also times itself, which gives the slowest
single call of each fan-out: the floor of its latency. Reported: p50, p90 and
max of the operation (ms) and p50 over the p50 of the slowest single call.
Target: ``bridge.gather`` p50 <= 1.1x the slowest single call.

Run: ``python -m benchmarks.bm_fanout [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from aiobridge import AioThread, Resource
from aiobridge.clients import http_session
from demo_flask.services import HOST, free_port, wait_for_port

from .results import (
    Progress,
    Rows,
    check,
    main_for,
    markdown_table,
    numeric_align,
    ratio_rounds,
    rounds_option,
    spread,
    text,
)

NAME = "fanout"
FAN_OUT = 10
DELAY_MS = 50
AS_COMPLETED_LIMIT = 4
TARGET_RATIO = 1.1
ROOT = Path(__file__).resolve().parent.parent


# -- the slow server (child process) --------------------------------------------------
def serve(port: int) -> None:
    from aiohttp import web

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.query.get("ms", DELAY_MS)) / 1000)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/slow", slow)
    web.run_app(app, host=HOST, port=port, print=None, access_log=None)


class SlowServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/slow?ms={DELAY_MS}"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SlowServer:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bm_fanout", "--serve", str(self.port)], cwd=ROOT
        )
        wait_for_port(self.port, timeout=15.0)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._proc is not None
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)


# -- the variants -------------------------------------------------------------------
async def timed_get(http: Resource[Any], url: str, durations: list[float] | None) -> str:
    started = time.perf_counter()
    session = await http.get()
    async with session.get(url) as response:
        text: str = await response.text()
    if durations is not None:
        durations.append(time.perf_counter() - started)
    return text


class Variants:
    def __init__(self, bridge: AioThread, url: str) -> None:
        self.bridge = bridge
        self.url = url
        self.http = bridge.resource(http_session())
        self.slowest: list[float] = []
        self.session = requests.Session()
        self.local = threading.local()
        self.sessions: list[requests.Session] = []
        self.pool = concurrent.futures.ThreadPoolExecutor(FAN_OUT, thread_name_prefix="bm-fanout")

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.session.close()
        for session in self.sessions:
            session.close()

    def single(self) -> None:
        self.bridge.run(timed_get(self.http, self.url, None), timeout=30)

    def gather(self) -> None:
        durations: list[float] = []
        results = self.bridge.gather(
            *(timed_get(self.http, self.url, durations) for _ in range(FAN_OUT)), timeout=30
        )
        assert results == ["ok"] * FAN_OUT
        self.slowest.append(max(durations))

    def as_completed(self) -> None:
        calls = [timed_get(self.http, self.url, None) for _ in range(FAN_OUT)]
        got = list(self.bridge.as_completed(calls, limit=AS_COMPLETED_LIMIT, timeout=30))
        assert got == ["ok"] * FAN_OUT

    def sequential(self) -> None:
        for _ in range(FAN_OUT):
            response = self.session.get(self.url, timeout=30)
            response.raise_for_status()

    def _thread_get(self) -> str:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            self.sessions.append(session)
        response = session.get(self.url, timeout=30)
        response.raise_for_status()
        return response.text

    def thread_pool(self) -> None:
        futures = [self.pool.submit(self._thread_get) for _ in range(FAN_OUT)]
        assert [f.result(30) for f in futures] == ["ok"] * FAN_OUT


def run_benchmark(rounds: int, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    samples: dict[str, list[float]] = {}
    with SlowServer() as server, AioThread(name="bm-fanout") as bridge:
        variants = Variants(bridge, server.url)
        try:
            cases: dict[str, Callable[[], None]] = {
                "single call": variants.single,
                "bridge.gather": variants.gather,
                f"bridge.as_completed(limit={AS_COMPLETED_LIMIT})": variants.as_completed,
                "requests sequential": variants.sequential,
                "requests thread pool": variants.thread_pool,
            }
            for case in cases.values():  # warm-up: connections, pools, threads
                case()
            variants.slowest.clear()
            for round_index in range(rounds):
                for name, case in cases.items():
                    progress(f"round {round_index + 1}/{rounds}: {name}")
                    started = time.perf_counter()
                    case()
                    samples.setdefault(name, []).append(time.perf_counter() - started)
            slowest_p50 = statistics.median(variants.slowest)
        finally:
            variants.close()
    rows: list[dict[str, Any]] = []
    for name, values in samples.items():
        ordered = sorted(values)
        p50 = statistics.median(ordered)
        # Round i of every variant against the slowest call of round i's gather.
        ratio = spread(ratio_rounds(values, variants.slowest))
        rows.append(
            {
                "variant": name,
                "requests": 1 if name == "single call" else FAN_OUT,
                "rounds": rounds,
                "p50_ms": round(p50 * 1000, 1),
                "p90_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))] * 1000, 1),
                "max_ms": round(ordered[-1] * 1000, 1),
                "ratio_to_slowest_call": ratio["median"] if ratio else None,
                "ratio_to_slowest_call_spread": ratio,
            }
        )
    rows.append(
        {
            "variant": "slowest single call in a gather",
            "requests": 1,
            "rounds": rounds,
            "p50_ms": round(slowest_p50 * 1000, 1),
            "p90_ms": None,
            "max_ms": round(max(variants.slowest) * 1000, 1),
            "ratio_to_slowest_call": 1.0,
            "ratio_to_slowest_call_spread": None,
        }
    )
    return rows


def check_targets(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    row = next(r for r in rows if r["variant"] == "bridge.gather")
    ratio = row["ratio_to_slowest_call"]
    return {
        f"gather p50 <= {TARGET_RATIO}x the slowest single call": check(
            ratio, "<=", TARGET_RATIO, row.get("ratio_to_slowest_call_spread"),
            bound_text=str(TARGET_RATIO)),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """One row per variant, the ratio to the slowest call with its spread over rounds."""
    headers = ["variant", "requests", "p50 ms", "p90 ms", "max ms",
               "÷ slowest call, median (min-max over rounds)"]  # fmt: skip
    return markdown_table(headers, ([
        row["variant"], str(row["requests"]), f"{row['p50_ms']:.1f}",
        "" if row["p90_ms"] is None else f"{row['p90_ms']:.1f}", f"{row['max_ms']:.1f}",
        text(row.get("ratio_to_slowest_call_spread")),
    ] for row in rows), numeric_align(headers, 1))  # fmt: skip


def _measure(args: argparse.Namespace, progress: Progress) -> tuple[dict[str, Any], Rows] | None:
    if args.serve:
        serve(args.serve)
        return None
    rounds = args.rounds or (5 if args.quick else 25)
    params = {
        "rounds": rounds,
        "fan_out": FAN_OUT,
        "delay_ms": DELAY_MS,
        "as_completed_limit": AS_COMPLETED_LIMIT,
    }
    return params, run_benchmark(rounds, progress)


def main(argv: list[str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the benchmark; returns ``{"name", "params", "rows", "targets"}``."""
    return main_for(NAME, __doc__, argv, progress, _measure, format_table,
                    quick_help="few rounds: a few seconds",
                    options=[rounds_option("operations per variant"),
                             ("--serve", {"type": int, "metavar": "PORT",
                                          "help": argparse.SUPPRESS})],
                    targets=check_targets)  # fmt: skip


if __name__ == "__main__":
    main()
