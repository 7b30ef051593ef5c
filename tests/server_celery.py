"""A Celery app whose task uses a bridge, run by a real prefork worker in tests/test_servers.py.

The broker and result backend are the suite's Redis (``REDIS_URL``). The
Redis pool's close writes ``closed:<SERVER_TAG>:<pid>``, so the test sees
from Redis that each child process closed its pools as it exited.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio
from celery import Celery

import aiobridge.celery
from aiobridge import AioThread
from aiobridge.clients import http_session, redis_client

TAG = os.environ.get("SERVER_TAG", "none")

celery_app = Celery("server_celery", broker=os.environ["REDIS_URL"],
                    backend=os.environ["REDIS_URL"])  # fmt: skip
celery_app.conf.broker_connection_retry_on_startup = True
aiobridge.celery.setup()

# Not started here: each prefork child starts it on its first task.
bridge = AioThread(name="celery-bridge")


async def _close_redis(client: redis.asyncio.Redis) -> None:
    await client.set(f"closed:{TAG}:{os.getpid()}", "1")
    await client.aclose()


http = bridge.resource(http_session())
cache = bridge.resource(redis_client(os.environ["REDIS_URL"]), close=_close_redis)


async def _fetch() -> dict[str, Any]:
    async def health() -> int:
        session = await http.get()
        async with session.get(os.environ["UPSTREAM_URL"] + "/health") as response:
            return response.status

    async def count() -> int:
        return int(await (await cache.get()).incr(f"served:{TAG}"))

    status, served = await asyncio.gather(health(), count())
    return {"pid": os.getpid(), "upstream": status, "served": served}


@celery_app.task(name="server_celery.fetch")
def fetch() -> dict[str, Any]:
    """Fetch the upstream's health and count the call in Redis, on the bridge."""
    return bridge.run(_fetch(), timeout=20)
