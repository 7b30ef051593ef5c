"""A closed-loop HTTP load client (aiohttp) with HdrHistogram latencies.

``concurrency`` clients each send one request, wait for the whole answer, and
send the next, until ``max_requests`` have been sent or ``duration`` seconds
have passed, whichever comes first; each request has its own ``timeout``.
Only 127.0.0.1 URLs are accepted. While the load runs, an optional probe
coroutine is called every ``probe_interval`` seconds (the load test samples
Redis's ``connected_clients`` with it).

Latencies of successful (HTTP 200) answers go into an HdrHistogram in
microseconds; failures are counted by kind: ``http_<status>``, ``timeout``,
``connection`` (refused, reset, closed early) and ``client_<ExceptionName>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from hdrh.histogram import HdrHistogram

__all__ = ("LoadResult", "run_load")

#: Histogram range: 1 µs to 120 s, 3 significant digits.
HIST_MAX_US = 120_000_000
#: Seconds the probe gets to end once the load is over.
STOP_TIMEOUT = 5.0
_RECANCEL_INTERVAL = 0.05


@dataclass
class LoadResult:
    """What one load run measured."""

    concurrency: int
    sent: int
    seconds: float
    histogram: HdrHistogram
    errors: Counter[str] = field(default_factory=Counter)
    probes: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> int:
        """Answers with HTTP 200."""
        return int(self.histogram.get_total_count())

    def summary(self) -> dict[str, Any]:
        """The figures as plain JSON values (latencies in milliseconds)."""
        hist = self.histogram
        ok = self.ok

        def ms(value_us: float) -> float:
            return round(value_us / 1000, 3)

        return {
            "concurrency": self.concurrency,
            "requests": self.sent,
            "ok": ok,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(sorted(self.errors.items())),
            "seconds": round(self.seconds, 3),
            "rps": round(ok / self.seconds, 1) if self.seconds > 0 else 0.0,
            "p50_ms": ms(hist.get_value_at_percentile(50)) if ok else None,
            "p90_ms": ms(hist.get_value_at_percentile(90)) if ok else None,
            "p99_ms": ms(hist.get_value_at_percentile(99)) if ok else None,
            "max_ms": ms(hist.get_max_value()) if ok else None,
            "mean_ms": ms(hist.get_mean_value()) if ok else None,
            "stdev_ms": ms(hist.get_stddev()) if ok else None,
        }


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` until it ends, for at most :data:`STOP_TIMEOUT` seconds.

    A library inside the probe may drop a cancellation (redis-py's
    ``asyncio.wait_for`` on Python 3.11): one ``cancel()`` is not enough.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_TIMEOUT
    while not task.done():
        if loop.time() > deadline:
            raise RuntimeError(f"the probe ignored its cancellation for {STOP_TIMEOUT} s")
        task.cancel()
        await asyncio.wait([task], timeout=_RECANCEL_INTERVAL)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()


def _check_loopback(url: str) -> None:
    if urlsplit(url).hostname != "127.0.0.1":
        raise ValueError(f"the load client only talks to 127.0.0.1, not {url!r}")


async def run_load(
    url: str,
    *,
    concurrency: int,
    max_requests: int,
    duration: float,
    timeout: float = 10.0,
    probe: Callable[[], Awaitable[Any]] | None = None,
    probe_interval: float = 0.1,
) -> LoadResult:
    """Load ``url`` with ``concurrency`` closed-loop clients; bounded in count and time.

    Args:
        url: a ``http://127.0.0.1:PORT/...`` URL.
        concurrency: clients sending at once (one connection each, kept alive).
        max_requests: no more requests than this are sent in total.
        duration: no request is started after this many seconds.
        timeout: seconds one request may take (connect + answer).
        probe: awaited every ``probe_interval`` seconds during the load; its
            results are kept in :attr:`LoadResult.probes`.
    """
    _check_loopback(url)
    if concurrency < 1 or max_requests < 1 or duration <= 0:
        raise ValueError("concurrency, max_requests and duration must be positive")
    histogram = HdrHistogram(1, HIST_MAX_US, 3)
    errors: Counter[str] = Counter()
    probes: list[Any] = []
    budget = max_requests
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=concurrency, enable_cleanup_closed=True)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        started = loop.time()
        deadline = started + duration

        async def client() -> None:
            nonlocal budget
            clock = time.perf_counter
            while budget > 0 and loop.time() < deadline:
                budget -= 1
                begin = clock()
                try:
                    async with session.get(url) as response:
                        await response.read()
                        status = response.status
                except TimeoutError:
                    errors["timeout"] += 1
                    continue
                except aiohttp.ClientConnectionError:
                    errors["connection"] += 1
                    continue
                except aiohttp.ClientError as exc:
                    errors[f"client_{type(exc).__name__}"] += 1
                    continue
                if status == 200:
                    histogram.record_value(max(1, int((clock() - begin) * 1e6)))
                else:
                    errors[f"http_{status}"] += 1

        async def prober() -> None:
            assert probe is not None
            while True:
                with contextlib.suppress(Exception):
                    probes.append(await probe())
                await asyncio.sleep(probe_interval)

        probe_task = asyncio.create_task(prober()) if probe is not None else None
        try:
            await asyncio.gather(*(client() for _ in range(concurrency)))
        finally:
            if probe_task is not None:
                await _stop(probe_task)
        seconds = loop.time() - started
    return LoadResult(concurrency, max_requests - budget, seconds, histogram, errors, probes)
