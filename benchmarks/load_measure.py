"""Measuring one load point of the demo: the load, the connections, the memory, the CPU.

:class:`Meter` runs one bounded load (:func:`benchmarks.load_client.run_load`)
against a server and gathers what it cost around it; :class:`Probe` samples
the worker's connections while it runs; :func:`merge_rounds` makes one point
of a point's rounds.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import aiohttp
import psutil
import redis
import redis.asyncio as aredis

from ._gunicorn import DemoServer, rss_of
from .load_client import run_load
from .load_plan import FANOUT_CALLS, FANOUT_SECONDS, MB, PROBE_TIMEOUT, Plan

__all__ = ("Meter", "Probe", "cpu_seconds", "merge_rounds")


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


class Meter:
    """Measures load points: the load itself and the counters and samples around it."""

    def __init__(self, plan: Plan, upstream_url: str, probe: Probe,
                 control: aiohttp.ClientSession, stats: aredis.Redis,
                 service_pids: dict[str, int]) -> None:  # fmt: skip
        self.plan = plan
        self.stats = stats
        self.service_pids = service_pids
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
