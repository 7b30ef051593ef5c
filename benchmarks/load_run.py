"""Running the load test: the services, every label's server, the interleaved points.

:func:`run` starts Redis and the upstream once, then :class:`Runner` starts
every label's server side by side and measures each point for all of them in
turn (:class:`~benchmarks.load_measure.Meter`), and stops everything on the
way out, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import aiohttp
import redis.asyncio as aredis

from demo_flask.services import RedisServer, UpstreamServer

from ._gunicorn import DemoServer, rss_of
from .load_client import run_load
from .load_measure import Meter, Probe, merge_rounds
from .load_plan import (
    CANINES_LATENCY_MS,
    FANOUT_CALLS,
    FANOUT_FLOOR_MS,
    FANOUT_SECONDS,
    MB,
    PROBE_TIMEOUT,
    Plan,
    Progress,
    server_of,
)

__all__ = ("Runner", "run")


class Runner:
    """Runs the plan: every mode's gunicorn side by side, the load points interleaved.

    All modes are started first and stay up (idle when not loaded), and each
    load point is measured for every mode in turn, in an order that rotates
    from point to point; so a burst of other work on the machine spreads over
    all modes instead of landing on one.
    """

    def __init__(self, plan: Plan, redis_url: str, upstream_url: str, meter: Meter) -> None:
        self.plan = plan
        self.redis_url = redis_url
        self.upstream_url = upstream_url
        self.meter = meter

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
                                await self.meter.point(servers[mode], f"/dog?latency={latency}",
                                                 concurrency, max_requests=plan.max_requests,
                                                 duration=plan.duration))  # fmt: skip
                        index += 1
            for (mode, latency, _), measured in rounds.items():
                entries[mode]["points"].append({"latency_ms": latency, **merge_rounds(measured)})
            for concurrency in plan.fanout_concurrency:
                for mode in self._rotations(index):
                    progress(f"{mode}: fan-out {FANOUT_CALLS} x {FANOUT_FLOOR_MS:g} ms, "
                             f"{concurrency} clients")  # fmt: skip
                    entries[mode]["fanout"].append(await self.meter.point(
                        servers[mode], f"/delay?seconds={FANOUT_SECONDS}&n={FANOUT_CALLS}",
                        concurrency, max_requests=plan.fanout_requests,
                        duration=plan.fanout_duration))  # fmt: skip
                index += 1
            for mode in self._rotations(index):
                progress(f"{mode}: canines, {plan.canines_requests} requests")
                entries[mode]["canines"] = await self.meter.point(
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



async def _run(plan: Plan, redis_url: str, redis_port: int, upstream_url: str,
               service_pids: dict[str, int], progress: Progress) -> dict[str, Any]:  # fmt: skip
    stats = aredis.Redis.from_url(redis_url, socket_timeout=PROBE_TIMEOUT)
    probe = Probe(redis_url, redis_port, int(upstream_url.rsplit(":", 1)[1]))
    try:
        server_info = await stats.info("server")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as control:
            meter = Meter(plan, upstream_url, probe, control, stats, service_pids)
            runner = Runner(plan, redis_url, upstream_url, meter)
            progress("fan-out floor: the load client calls the upstream itself")
            direct = await meter.direct_fanout(plan.fanout_requests)
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

