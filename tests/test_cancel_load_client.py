"""The load client's probe is stopped even if something in it drops a cancellation.

``benchmarks --quick`` once hung here: the probe's Redis call (redis-py with a
``socket_timeout``, so ``asyncio.wait_for`` on Python 3.11) dropped the one
``cancel()`` it got, and the probe loop ran on while the load client awaited it.
"""

from __future__ import annotations

import asyncio

from benchmarks.load_client import run_load
from demo_flask.services import UpstreamServer

WAIT = 30.0


def test_a_probe_that_drops_its_cancellation_is_stopped(upstream: UpstreamServer) -> None:
    dropped: list[int] = []

    async def probe() -> int:
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            if dropped:
                raise
            dropped.append(1)  # the first cancellation is dropped, as by wait_for on 3.11
        return 1

    async def load() -> None:
        started = asyncio.get_running_loop().create_future()

        async def first_probe_running() -> int:
            if not started.done():
                started.set_result(None)
            return await probe()

        runner = asyncio.create_task(run_load(
            f"{upstream.url}/health", concurrency=1, max_requests=1, duration=WAIT,
            probe=first_probe_running, probe_interval=0.001,
        ))
        await asyncio.wait_for(started, WAIT)
        await asyncio.wait([runner], timeout=WAIT)
        if not runner.done():
            runner.cancel()  # a second cancellation gets through: the probe drops only one
            await asyncio.wait([runner], timeout=WAIT)
            raise AssertionError("the load client still waited for its probe")
        runner.result()

    asyncio.run(load())
    assert dropped == [1]
