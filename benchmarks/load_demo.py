"""End-to-end load test of the demo ("Canines as a Service") under gunicorn.

One embedded Redis and one upstream dog service are started once
(:mod:`demo_flask.services`); then the demo is started in each of the eight
modes (``sync``, ``gevent``, ``embedded``, ``embedded-thread``,
``flask-async``, ``flask-recipe``, ``bridge`` under gunicorn, 1 worker, 32
gthread threads by default, gevent workers for ``gevent``; ``quart`` on
uvicorn, one process), and in the bridge's other deployments
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
import asyncio
import contextlib
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any

import aiohttp
import psutil
import redis
import redis.asyncio as aredis

from demo_flask import ALL_MODES
from demo_flask.services import RedisServer, UpstreamServer

from ._gunicorn import DemoServer, rss_of
from ._spread import ratio_rounds, spread
from .load_client import run_load

NAME = "load_demo"
TARGET_CONCURRENCY = 32
TARGET_LATENCY_MS = 20
FANOUT_SECONDS = 0.05
FANOUT_CALLS = 10
FANOUT_FLOOR_MS = FANOUT_SECONDS * 1000
CANINES_LATENCY_MS = 15
MB = 1024 * 1024
#: The bridge mode on other servers, measured beside the modes by default: ``mode@server``.
DEPLOYMENTS = ("bridge@granian", "bridge@uvicorn", "bridge@gevent")
#: Every label a run may measure (``+uvloop``: the bridge's loop on uvloop).
LABELS = (*ALL_MODES, *DEPLOYMENTS, "bridge+uvloop", "bridge@granian+uvloop")
#: The points of the targets against the real alternatives (clients; 20 ms upstream).
PEER_CONCURRENCY = (32, 64)


def server_of(label: str) -> dict[str, Any]:
    """How to serve a label such as ``bridge@gevent`` or ``bridge@granian+uvloop``.

    Returns the keyword arguments of :class:`~benchmarks._gunicorn.DemoServer`
    besides the URLs: ``mode``, ``server``, ``worker_class`` and ``env``
    (``+uvloop`` runs the bridge's loop on uvloop: ``AIOBRIDGE_UVLOOP=1``).
    """
    base, _, option = label.partition("+")
    mode, _, where = base.partition("@")
    env = {"AIOBRIDGE_UVLOOP": "1"} if option == "uvloop" else {}
    if where == "gevent":
        return {"mode": mode, "server": "gunicorn", "worker_class": "gevent", "env": env}
    return {"mode": mode, "server": where or None, "worker_class": None, "env": env}


#: Seconds any one Redis call of the benchmark itself may take.
PROBE_TIMEOUT = 5.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What one run of the load test does; every load is bounded by count and time."""

    modes: tuple[str, ...] = (*ALL_MODES, *DEPLOYMENTS)
    concurrency: tuple[int, ...] = (1, 8, TARGET_CONCURRENCY, 64)
    latencies_ms: tuple[int, ...] = (0, TARGET_LATENCY_MS)
    rounds: int = 3
    duration: float = 3.0
    max_requests: int = 50_000
    warmup_requests: int = 200
    fanout_concurrency: tuple[int, ...] = (1, 8)
    fanout_requests: int = 40
    fanout_duration: float = 6.0
    canines_requests: int = 90
    canines_concurrency: int = 30
    workers: int = 1
    threads: int = 32
    request_timeout: float = 10.0

    @classmethod
    def quick(cls, **changes: Any) -> Plan:
        """About a minute, so ``python -m benchmarks --quick`` stays within 180 s on 2 cores.

        Every mode (not the bridge's other deployments) at the points the
        targets read (32 and 64 clients, a 20 ms upstream), two short rounds
        each so every ratio still shows how far its rounds disagree.
        """
        base = {"modes": ALL_MODES, "concurrency": PEER_CONCURRENCY,
                "latencies_ms": (TARGET_LATENCY_MS,), "rounds": 2, "duration": 0.8,
                "warmup_requests": 50, "fanout_concurrency": (1,), "fanout_requests": 8,
                "fanout_duration": 3.0}  # fmt: skip
        return cls(**{**base, **changes})


class Probe:
    """Samples, during a load, what the worker holds: open connections and Redis clients.

    Called from the load client's probe thread (blocking calls, each with a
    timeout), so no probe is ever a task that has to be cancelled.
    """

    def __init__(self, redis_url: str, redis_port: int, upstream_port: int) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=PROBE_TIMEOUT,
                                          socket_connect_timeout=PROBE_TIMEOUT)  # fmt: skip
        self.redis_port = redis_port
        self.upstream_port = upstream_port
        self.pids: list[int] = []

    def _open_connections(self) -> tuple[int, int]:
        to_redis = to_upstream = 0
        for pid in self.pids:
            try:
                connections = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                continue
            for conn in connections:
                if conn.status != psutil.CONN_ESTABLISHED or not conn.raddr:
                    continue
                if conn.raddr.port == self.redis_port:
                    to_redis += 1
                elif conn.raddr.port == self.upstream_port:
                    to_upstream += 1
        return to_redis, to_upstream

    def __call__(self) -> dict[str, int]:
        info = self.redis.info("clients")
        to_redis, to_upstream = self._open_connections()
        return {
            "connected_clients": int(info["connected_clients"]),
            "open_to_redis": to_redis,
            "open_to_upstream": to_upstream,
        }

    def close(self) -> None:
        self.redis.close()


class Runner:
    """Runs the plan: every mode's gunicorn side by side, the load points interleaved.

    All modes are started first and stay up (idle when not loaded), and each
    load point is measured for every mode in turn, in an order that rotates
    from point to point; so a burst of other work on the machine spreads over
    all modes instead of landing on one.
    """

    def __init__(self, plan: Plan, redis_url: str, upstream_url: str, probe: Probe,
                 control: aiohttp.ClientSession, stats: aredis.Redis,
                 service_pids: dict[str, int]) -> None:  # fmt: skip
        self.plan = plan
        self.stats = stats
        self.service_pids = service_pids
        self.redis_url = redis_url
        self.upstream_url = upstream_url
        self.probe = probe
        self.control = control

    async def _upstream_counters(self, reset: bool = False) -> dict[str, int]:
        method, path = ("POST", "/connections/reset") if reset else ("GET", "/connections")
        async with self.control.request(method, self.upstream_url + path) as response:
            response.raise_for_status()
            data: dict[str, int] = await response.json()
            return data

    async def _redis_received(self) -> int:
        info = await self.stats.info("stats")
        return int(info["total_connections_received"])

    async def point(self, server: DemoServer, path: str, concurrency: int, *,
                    max_requests: int, duration: float) -> dict[str, Any]:  # fmt: skip
        """One bounded load on ``path``, with the connections and memory around it."""
        pids = server.worker_pids()
        self.probe.pids = pids
        await self._upstream_counters(reset=True)
        received = await self._redis_received()
        rss_before = sum(rss_of(pids).values())
        cpu_pids = {"worker": pids, "client": [os.getpid()],
                    **{name: [pid] for name, pid in self.service_pids.items()}}  # fmt: skip
        cpu_before = {name: cpu_seconds(group) for name, group in cpu_pids.items()}
        psutil.cpu_percent()  # starts the machine-wide measurement
        result = await run_load(
            server.url + path, concurrency=concurrency, max_requests=max_requests,
            duration=duration, timeout=self.plan.request_timeout, probe=self.probe,
            probe_interval=0.2,
        )  # fmt: skip
        machine_cpu = psutil.cpu_percent()
        cpu = {name: cpu_seconds(group) - cpu_before[name] for name, group in cpu_pids.items()}
        rss_after = sum(rss_of(pids).values())
        upstream = await self._upstream_counters()
        probes = result.probes or [{"connected_clients": 0, "open_to_redis": 0,
                                    "open_to_upstream": 0}]  # fmt: skip
        return {
            "path": path,
            **result.summary(),
            "redis_clients_peak": max(p["open_to_redis"] for p in probes),
            "redis_connected_clients_all": max(p["connected_clients"] for p in probes),
            "open_to_upstream_peak": max(p["open_to_upstream"] for p in probes),
            "redis_new_connections": await self._redis_received() - received,
            "upstream_connections": upstream["connections"],
            "upstream_requests": upstream["requests"],
            "rss_before_mb": round(rss_before / MB, 2),
            "rss_after_mb": round(rss_after / MB, 2),
            "cpu_seconds": {name: round(value, 3) for name, value in cpu.items()},
            "worker_cpu_ms_per_request": round(cpu["worker"] / result.ok * 1000, 3)
            if result.ok else None,
            "machine_cpu_percent": machine_cpu,
        }

    async def direct_fanout(self, requests: int) -> dict[str, Any]:
        """The machine's own floor: the load client makes the fan-out calls itself."""
        url = f"{self.upstream_url}/delay?seconds={FANOUT_SECONDS}"
        latencies = []
        for _ in range(requests):
            begin = time.perf_counter()
            responses = await asyncio.gather(*(self.control.get(url)
                                               for _ in range(FANOUT_CALLS)))  # fmt: skip
            for response in responses:
                await response.read()
                response.release()
            latencies.append((time.perf_counter() - begin) * 1000)
        return {"requests": requests, "p50_ms": round(statistics.median(latencies), 3),
                "max_ms": round(max(latencies), 3)}  # fmt: skip

    def _rotations(self, index: int) -> list[str]:
        modes = list(self.plan.modes)
        shift = index % len(modes)
        return modes[shift:] + modes[:shift]

    async def run(self, progress: Progress) -> list[dict[str, Any]]:
        """Start every mode, measure every point in every mode, stop them all."""
        plan = self.plan
        servers: dict[str, DemoServer] = {}
        entries: dict[str, dict[str, Any]] = {
            mode: {"mode": mode, "points": [], "fanout": []} for mode in plan.modes}
        rss_start: dict[str, dict[int, int]] = {}
        try:
            for mode in plan.modes:
                server = DemoServer(
                    redis_url=self.redis_url, upstream_url=self.upstream_url,
                    workers=plan.workers, threads=plan.threads, **server_of(mode))  # fmt: skip
                servers[mode] = server
                progress(f"{mode}: starting {server.server}")
                await asyncio.to_thread(server.start)
                progress(f"{mode}: warm-up")
                await run_load(server.url + "/dog?latency=0", concurrency=plan.threads,
                               max_requests=plan.warmup_requests, duration=10.0)  # fmt: skip
                rss_start[mode] = rss_of(server.worker_pids())
            index = 0
            rounds: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
            for round_index in range(plan.rounds):
                for latency in plan.latencies_ms:
                    for concurrency in plan.concurrency:
                        for mode in self._rotations(index):
                            progress(f"round {round_index + 1}/{plan.rounds}, {mode}: /dog "
                                     f"latency {latency} ms, {concurrency} clients")  # fmt: skip
                            rounds.setdefault((mode, latency, concurrency), []).append(
                                await self.point(servers[mode], f"/dog?latency={latency}",
                                                 concurrency, max_requests=plan.max_requests,
                                                 duration=plan.duration))  # fmt: skip
                        index += 1
            for (mode, latency, _), measured in rounds.items():
                entries[mode]["points"].append({"latency_ms": latency, **merge_rounds(measured)})
            for concurrency in plan.fanout_concurrency:
                for mode in self._rotations(index):
                    progress(f"{mode}: fan-out {FANOUT_CALLS} x {FANOUT_FLOOR_MS:g} ms, "
                             f"{concurrency} clients")  # fmt: skip
                    entries[mode]["fanout"].append(await self.point(
                        servers[mode], f"/delay?seconds={FANOUT_SECONDS}&n={FANOUT_CALLS}",
                        concurrency, max_requests=plan.fanout_requests,
                        duration=plan.fanout_duration))  # fmt: skip
                index += 1
            for mode in self._rotations(index):
                progress(f"{mode}: canines, {plan.canines_requests} requests")
                entries[mode]["canines"] = await self.point(
                    servers[mode], f"/dog?latency={CANINES_LATENCY_MS}", plan.canines_concurrency,
                    max_requests=plan.canines_requests, duration=60.0)  # fmt: skip
            for mode in servers:
                start_mb = sum(rss_start[mode].values()) / MB
                end_mb = sum(rss_of(list(rss_start[mode])).values()) / MB
                entries[mode].update(rss_start_mb=round(start_mb, 2), rss_end_mb=round(end_mb, 2),
                                     rss_growth_mb=round(end_mb - start_mb, 2))  # fmt: skip
        finally:
            for mode, server in servers.items():
                progress(f"{mode}: stopping {server.server}")
                await asyncio.to_thread(server.terminate, 15.0)
                exit_code = server.returncode
                problems = server.log_problems()
                entries[mode].update(
                    gunicorn_exit_code=exit_code, gunicorn_log_problems=problems,
                    gunicorn_log_tail=server.log()[-3000:] if problems or exit_code else "")
                server.close()
        return [entries[mode] for mode in plan.modes]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One point from its rounds: the median round's figures, every round's errors.

    The round whose req/s is the median gives latencies, connections and
    memory (figures from one real run, not a blend); errors are summed over all
    rounds so that none is hidden; every round's req/s is kept in ``rps_rounds``.
    """
    ordered = sorted(rounds, key=lambda r: r["rps"])
    merged = dict(ordered[(len(ordered) - 1) // 2])
    errors: dict[str, int] = {}
    for measured in rounds:
        for kind, count in measured["errors_by_kind"].items():
            errors[kind] = errors.get(kind, 0) + count
    merged.update(
        rounds=len(rounds),
        rps_rounds=[r["rps"] for r in rounds],
        p99_rounds=[r["p99_ms"] for r in rounds],
        requests_all_rounds=sum(r["requests"] for r in rounds),
        errors=sum(errors.values()),
        errors_by_kind=dict(sorted(errors.items())),
    )
    return merged


async def _run(plan: Plan, redis_url: str, redis_port: int, upstream_url: str,
               service_pids: dict[str, int], progress: Progress) -> dict[str, Any]:  # fmt: skip
    stats = aredis.Redis.from_url(redis_url, socket_timeout=PROBE_TIMEOUT)
    probe = Probe(redis_url, redis_port, int(upstream_url.rsplit(":", 1)[1]))
    try:
        server_info = await stats.info("server")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as control:
            runner = Runner(plan, redis_url, upstream_url, probe, control, stats, service_pids)
            progress("fan-out floor: the load client calls the upstream itself")
            direct = await runner.direct_fanout(plan.fanout_requests)
            modes = await runner.run(progress)
    finally:
        probe.close()
        await stats.aclose()
    return {"redis_version": server_info.get("redis_version"), "fanout_direct": direct,
            "modes": modes}  # fmt: skip


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop for the load client when installed: less client CPU on a small machine."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupts_raise() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt, also while uvloop waits for I/O.

    asyncio.Runner's own Ctrl-C handler only cancels the main task, which
    uvloop does not see while it blocks; a raising handler always reaches us,
    and the Runner then cancels the task, whose ``finally`` stops the servers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _raise_interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(plan: Plan, progress: Progress) -> dict[str, Any]:
    """Start Redis and the upstream once, then measure every mode; stop everything."""
    with _interrupts_raise(), contextlib.ExitStack() as stack:
        progress("starting Redis and the upstream")
        redis = stack.enter_context(RedisServer())
        upstream = stack.enter_context(UpstreamServer(seed_redis=redis.url))
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            pids = {"redis": redis.pid or 0, "upstream": upstream.pid or 0}
            return runner.run(_run(plan, redis.url, redis.port, upstream.url, pids, progress))
    raise AssertionError("unreachable")  # pragma: no cover - for type checkers


# -- figures derived from the measurements ----------------------------------------------


def find_point(result: dict[str, Any], mode: str, concurrency: int,
               latency_ms: int) -> dict[str, Any] | None:  # fmt: skip
    """The ``/dog`` point of ``mode`` at this concurrency and latency, if measured."""
    for entry in result.get("modes", []):
        if entry["mode"] == mode:
            for point in entry["points"]:
                if point["concurrency"] == concurrency and point["latency_ms"] == latency_ms:
                    return dict(point)
    return None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def check_targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The end-to-end targets, as ratios measured in this run (missing data: not met)."""
    at = {m["mode"]: find_point(result, m["mode"], TARGET_CONCURRENCY, TARGET_LATENCY_MS)
          for m in result.get("modes", [])}  # fmt: skip
    bridge = at.get("bridge") or {}
    where = f"/dog, {TARGET_CONCURRENCY} clients, {TARGET_LATENCY_MS} ms upstream"

    spreads: dict[str, dict[str, Any] | None] = {}

    def rps_spec(mode: str, bound: float) -> tuple[str, float | None, str, float]:
        """bridge req/s over ``mode``'s, round by round (the rounds are interleaved)."""
        label = f"bridge req/s >= {bound:g}x {mode} ({where})"
        spreads[label] = rps_ratio(at.get("bridge"), at.get(mode))
        return label, spreads[label]["median"] if spreads[label] else None, ">=", bound

    def held(mode: str, key: str) -> float | None:
        point = at.get(mode)
        return float(point[key]) if point else None

    specs: list[tuple[str, float | None, str, float]] = [
        rps_spec("flask-async", 3.0),
        rps_spec("embedded", 2.0),
        rps_spec("sync", 1.2),
        rps_spec("embedded-thread", 0.9),
        ("bridge Redis connections held <= 1/8 of embedded-thread's",
         _ratio(held("bridge", "redis_clients_peak"),
                held("embedded-thread", "redis_clients_peak")), "<=", 0.125),
        ("bridge upstream connections held <= 1/8 of embedded-thread's",
         _ratio(held("bridge", "open_to_upstream_peak"),
                held("embedded-thread", "open_to_upstream_peak")), "<=", 0.125),
        ("bridge errors == 0 (every load of the run)",
         float(sum(p["errors"] for p in _bridge_loads(result))) if bridge else None, "<=", 0.0),
    ]  # fmt: skip
    fanout = _fanout_p50(result, "bridge")
    specs.append((f"bridge fan-out {FANOUT_CALLS} x {FANOUT_FLOOR_MS:g} ms p50 <= 55 ms",
                  fanout, "<=", 55.0))  # fmt: skip
    growth = next((m["rss_growth_mb"] for m in result.get("modes", [])
                   if m["mode"] == "bridge"), None)  # fmt: skip
    specs.append(("bridge worker RSS growth <= 10 MB over the run", growth, "<=", 10.0))
    specs += peer_specs(result, spreads)
    targets = {}
    for label, value, op, bound in specs:
        met = value is not None and (value <= bound if op == "<=" else value >= bound)
        targets[label] = {
            "value": None if value is None else round(value, 3),
            "target": f"{op} {bound:g}",
            "met": met,
            "spread": spreads.get(label),
        }
    return targets


def best_bridge(result: dict[str, Any]) -> str | None:
    """The bridge deployment with the most req/s over the peer points, without errors.

    Candidates are ``bridge`` (gunicorn gthread) and every ``bridge@server``
    measured; the score is the mean req/s at :data:`PEER_CONCURRENCY` clients
    with the target upstream latency.
    """
    scores: dict[str, float] = {}
    for entry in result.get("modes", []):
        label = entry["mode"]
        if server_of(label)["mode"] != "bridge":
            continue
        points = [find_point(result, label, c, TARGET_LATENCY_MS) for c in PEER_CONCURRENCY]
        if all(p is not None and not p["errors"] for p in points):
            scores[label] = statistics.fmean(float(p["rps"]) for p in points if p is not None)
    return max(scores, key=scores.__getitem__) if scores else None


def peer_specs(
    result: dict[str, Any], spreads: dict[str, dict[str, Any] | None]
) -> list[tuple[str, float | None, str, float]]:
    """The targets against the real alternatives (Quart, gevent, Flask's recipe).

    req/s ratios are the median of the round-by-round ratios; their spread goes
    into ``spreads`` under the target's label.
    """
    best = best_bridge(result)
    specs: list[tuple[str, float | None, str, float]] = []
    for concurrency in PEER_CONCURRENCY:
        def at(label: str | None, c: int = concurrency) -> dict[str, Any] | None:
            return find_point(result, label, c, TARGET_LATENCY_MS) if label else None

        where = f"/dog, {concurrency} clients, {TARGET_LATENCY_MS} ms upstream"
        bridge = at(best)
        p99 = None if bridge is None else bridge["p99_ms"]
        for peer, bound in (("quart", 0.9), ("gevent", 1.5), ("flask-recipe", 1.2)):
            label = f"best bridge deployment ({best}) req/s >= {bound:g}x {peer} ({where})"
            spreads[label] = rps_ratio(bridge, at(peer))
            specs.append((label, spreads[label]["median"] if spreads[label] else None,
                          ">=", bound))  # fmt: skip
        for peer in ("quart", "gevent"):
            other = at(peer)
            label = f"best bridge deployment ({best}) p99 <= {peer}'s ({where})"
            spreads[label] = _p99_ratio(bridge, other)
            plain = _ratio(p99, other["p99_ms"] if other else None)
            value = spreads[label]["median"] if spreads[label] else plain
            specs.append((label, value, "<=", 1.0))
    return specs


def _p99_ratio(point: dict[str, Any] | None,
               other: dict[str, Any] | None) -> dict[str, Any] | None:  # fmt: skip
    """``point``'s p99 over ``other``'s, round by round (None without per-round p99s)."""
    if not point or not other or not point.get("p99_rounds") or not other.get("p99_rounds"):
        return None
    return spread(ratio_rounds([v for v in point["p99_rounds"] if v is not None],
                               [v for v in other["p99_rounds"] if v is not None]))  # fmt: skip


def rps_ratio(point: dict[str, Any] | None, other: dict[str, Any] | None) -> dict[str, Any] | None:
    """``point``'s req/s over ``other``'s, round by round: min, median, max."""
    if not point or not other:
        return None
    return spread(ratio_rounds(point.get("rps_rounds") or [point["rps"]],
                               other.get("rps_rounds") or [other["rps"]]))  # fmt: skip


def _bridge_loads(result: dict[str, Any]) -> list[dict[str, Any]]:
    for entry in result.get("modes", []):
        if entry["mode"] == "bridge":
            return [*entry["points"], *entry["fanout"], entry["canines"]]
    return []


def _fanout_p50(result: dict[str, Any], mode: str, concurrency: int = 1) -> float | None:
    for entry in result.get("modes", []):
        if entry["mode"] == mode:
            for point in entry["fanout"]:
                if point["concurrency"] == concurrency and point["p50_ms"] is not None:
                    return float(point["p50_ms"])
    return None


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
    lines = ["| mode | latency | clients | req/s | p50 ms | p99 ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        if row["kind"] == "dog":
            lines.append(f"| {row['mode']} | {row['latency_ms']} | {row['concurrency']} | "
                         f"{row['rps']:,.0f} | {row['p50_ms']} | {row['p99_ms']} | "
                         f"{row['errors']} |")  # fmt: skip
    return "\n".join(lines)


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
        print(format_table(rows))
        for label, target in targets.items():
            status = "met" if target["met"] else "MISSED"
            print(f"{label}: {target['value']} ({target['target']}) {status}")
        print("canines median ms:", {r["mode"]: r["p50_ms"] for r in rows
                                     if r["kind"] == "canines"})  # fmt: skip
    return output


if __name__ == "__main__":
    main()
