"""A closed-loop HTTP load client (aiohttp) with HdrHistogram latencies.

``concurrency`` clients each send one request, wait for the whole answer, and
send the next, until ``max_requests`` have been sent or ``duration`` seconds
have passed, whichever comes first; each request has its own ``timeout``.
Only 127.0.0.1 URLs are accepted. While the load runs, an optional probe
function is called every ``probe_interval`` seconds in a thread of its own (the
load test samples the worker's connections with it).

Nothing here waits without a bound: the clients are awaited with a deadline
(``duration`` plus one request's ``timeout`` plus a margin) and cancelled past
it; the probe thread is stopped with an event and joined with a timeout. A
probe is never a task that must be cancelled, so a library that loses a
cancellation (say, inside a Redis call) cannot hang the run; a probe that is
stuck is left behind (a daemon thread) and counted in ``errors["probe_stuck"]``.

Latencies of successful (HTTP 200) answers go into an HdrHistogram in
microseconds; failures are counted by kind: ``http_<status>``, ``timeout``,
``connection`` (refused, reset, closed early) and ``client_<ExceptionName>``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from hdrh.histogram import HdrHistogram

__all__ = ("LoadResult", "run_load")

#: Histogram range: 1 µs to 120 s, 3 significant digits.
HIST_MAX_US = 120_000_000
#: Seconds granted past a load's last possible answer before its clients are cancelled.
MARGIN = 5.0
#: Seconds a cancelled client, or the probe thread, has to finish before it is abandoned.
STOP_TIMEOUT = 5.0


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
    probe: Callable[[], Any] | None = None,
    probe_interval: float = 0.1,
) -> LoadResult:
    """Load ``url`` with ``concurrency`` closed-loop clients; bounded in count and time.

    Args:
        url: a ``http://127.0.0.1:PORT/...`` URL.
        concurrency: clients sending at once (one connection each, kept alive).
        max_requests: no more requests than this are sent in total.
        duration: no request is started after this many seconds.
        timeout: seconds one request may take (connect + answer).
        probe: called every ``probe_interval`` seconds during the load, in a
            thread (it may block, with its own timeouts); its results are kept
            in :attr:`LoadResult.probes`, its failures counted as ``probe_error``.
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

        with _Prober(probe, probe_interval, probes, errors):
            tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
            await _bounded_wait(tasks, duration + timeout + MARGIN, errors)
        seconds = loop.time() - started
    return LoadResult(concurrency, max_requests - budget, seconds, histogram, errors, probes)


async def _bounded_wait(tasks: list[asyncio.Task[None]], seconds: float,
                        errors: Counter[str]) -> None:  # fmt: skip
    """Wait for ``tasks`` at most ``seconds``; cancel the rest, and wait for that bounded too."""
    _, pending = await asyncio.wait(tasks, timeout=seconds)
    if pending:
        errors["client_overran"] += len(pending)
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_TIMEOUT)
        errors["client_stuck"] += len(pending)  # lost its cancellation: left behind
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            errors[f"client_{type(task.exception()).__name__}"] += 1


class _Prober:
    """Calls ``probe`` every ``interval`` seconds in a daemon thread until the block ends."""

    def __init__(self, probe: Callable[[], Any] | None, interval: float, into: list[Any],
                 errors: Counter[str]) -> None:  # fmt: skip
        self.probe = probe
        self.interval = interval
        self.into = into
        self.errors = errors
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="load-probe", daemon=True)

    def _run(self) -> None:
        assert self.probe is not None
        while not self.stop.is_set():
            try:
                self.into.append(self.probe())
            except Exception:
                self.errors["probe_error"] += 1
            self.stop.wait(self.interval)

    def __enter__(self) -> _Prober:
        if self.probe is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        if self.probe is not None:
            self.thread.join(STOP_TIMEOUT)
            if self.thread.is_alive():
                self.errors["probe_stuck"] += 1
