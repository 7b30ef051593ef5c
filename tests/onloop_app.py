"""A Flask app served on the server's loop (aiobridge.onloop) by real servers.

Used by tests/test_onloop_servers.py; configured like tests/server_app.py
(``REDIS_URL``, ``UPSTREAM_URL``, ``SERVER_TAG``: the Redis pool's close
writes ``closed:<tag>:<pid>``).

Routes: ``/threads`` (pid, the thread serving), ``/dog`` (a sync view: the
upstream and Redis concurrently through ``ext.run``), ``/slow?seconds=``
(a bridged sleep, to be in flight at SIGTERM).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import redis.asyncio
from flask import Flask, request

from aiobridge.clients import http_session, redis_client
from aiobridge.flask import AioBridge
from aiobridge.onloop import in_request_greenlet, on_loop

TAG = os.environ.get("SERVER_TAG", "none")

app = Flask(__name__)
ext = AioBridge(app)


async def _close_redis(client: redis.asyncio.Redis) -> None:
    await client.set(f"closed:{TAG}:{os.getpid()}", "1")
    await client.aclose()


http = ext.resource(http_session(), app=app)
cache = ext.resource(redis_client(os.environ["REDIS_URL"]), close=_close_redis, app=app)


async def _both() -> tuple[int, int]:
    async def health() -> int:
        session = await http.get()
        async with session.get(os.environ["UPSTREAM_URL"] + "/health") as response:
            return response.status

    async def count() -> int:
        return int(await (await cache.get()).incr(f"served:{TAG}"))

    status, served = await asyncio.gather(health(), count())
    return status, served


async def _in_flight() -> None:
    await (await cache.get()).incr(f"in-flight:{TAG}")


@app.get("/threads")
def threads() -> dict[str, Any]:
    return {"pid": os.getpid(), "thread": threading.current_thread().name,
            "greenlet": in_request_greenlet()}


@app.get("/dog")
def dog() -> dict[str, Any]:
    status, served = ext.run(_both())
    return {"pid": os.getpid(), "upstream": status, "served": served,
            "greenlet": in_request_greenlet()}


@app.get("/slow")
def slow() -> dict[str, Any]:
    seconds = float(request.args.get("seconds", "0.5"))
    ext.run(_in_flight())
    ext.run(asyncio.sleep(seconds))
    served = ext.run(_both())[1]
    return {"pid": os.getpid(), "slept": seconds, "served": served}


asgi_app = on_loop(app)
