"""A bridge call made from a request greenlet, for :mod:`benchmarks.bm_call_overhead`.

What ``aiobridge.onloop`` does for each request, with its real parts: a loop
runs in a thread of its own (the server's), an :class:`~aiobridge.AioThread`
*adopts* it from a coroutine on that loop (as the lifespan startup does), and
the calls are made by a request greenlet (``aiobridge._onloop``'s
:class:`RequestGreenlet`) driven by its :class:`Driver` in a task of that loop,
as :class:`aiobridge.onloop.OnLoop` drives a request. Each ``bridge.run()``
then switches to the driver and back instead of crossing between two threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import greenlet

from aiobridge import AioThread
from aiobridge._onloop.greenlets import Driver, RequestGreenlet

__all__ = ("OnLoopCaller", "on_loop_caller")

#: Seconds any one batch of calls may take (a bound, not an expectation).
BATCH_TIMEOUT = 600.0


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()  # the driver watches ``receive`` only once a body is read
    raise AssertionError("unreachable")


class OnLoopCaller:
    """Calls ``bridge.run(make())`` from a request greenlet on an adopted loop.

    Calling the object makes one call (for a warm-up); :meth:`measure` makes
    ``calls`` calls in one request greenlet and returns the wall time, each
    call's latency and the loop thread's CPU time; :attr:`native_id` is the
    thread the calls run on (for pinning).
    """

    on_loop = True

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 make: Callable[[], Coroutine[Any, Any, Any]]) -> None:  # fmt: skip
        self.loop = loop
        self.make = make
        self.native_id = 0
        self.thread = threading.Thread(target=loop.run_forever, name="bm-onloop", daemon=True)
        self.thread.start()
        self.bridge: AioThread = self._on_loop(self._adopt())

    def _on_loop(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(BATCH_TIMEOUT)

    async def _adopt(self) -> AioThread:
        self.native_id = threading.get_native_id()
        return AioThread(name="bm-onloop").adopt()

    async def _request(self, work: Callable[[], None]) -> None:
        context = greenlet.getcurrent().gr_context  # the task's own context, as OnLoop does
        driver = Driver(context, _never)
        glet = RequestGreenlet(work, driver, {"REQUEST_METHOD": "GET", "PATH_INFO": "/bm"})
        glet.gr_context = context
        await driver.drive(glet)

    def __call__(self) -> None:
        self.measure(1)

    def measure(self, calls: int) -> tuple[float, list[float], float]:
        """``calls`` calls in one request greenlet: (wall s, latencies s, loop thread CPU s)."""
        latencies: list[float] = []
        totals: list[float] = []

        def work() -> None:
            run, make, record = self.bridge.run, self.make, latencies.append
            clock = time.perf_counter
            cpu, started = time.thread_time(), clock()
            for _ in range(calls):
                begun = clock()
                run(make())
                record(clock() - begun)
            totals.extend((clock() - started, time.thread_time() - cpu))

        self._on_loop(self._request(work))
        return totals[0], latencies, totals[1]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._on_loop(self.bridge.astop(5.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def on_loop_caller(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    make: Callable[[], Coroutine[Any, Any, Any]],
) -> Iterator[OnLoopCaller]:
    """An :class:`OnLoopCaller` on a new loop from ``loop_factory``, closed on the way out."""
    caller = OnLoopCaller(loop_factory(), make)
    try:
        yield caller
    finally:
        caller.close()
