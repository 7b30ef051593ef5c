"""A small Flask app with the extension, served by real servers in tests/test_servers.py.

Configured by the environment, as an app under a server is:

- ``UPSTREAM_URL``, ``REDIS_URL``: the suite's dog service and Redis;
- ``SERVER_TAG``: names this run; the Redis pool's close writes
  ``closed:<tag>:<pid>`` before it closes, so a test can see from Redis itself
  that a process closed its pools (a killed process never writes it);
- ``UWSGI_SETUP=0``: under uWSGI, do not call ``aiobridge.uwsgi.setup()``;
- ``WARM_AT_IMPORT=1``: call the bridge at import, as an app that warms its
  pools at start does (run by the master with gunicorn ``--preload`` or
  uWSGI without ``--lazy-apps``); with ``TICK_AT_IMPORT=1`` too, a background
  task keeps that loop waking up every millisecond.

Routes: ``/dog`` (an async view: the upstream and Redis, concurrently) and
``/threads`` (what runs in this worker: its pid and its live loop threads).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

import redis.asyncio
from flask import Flask

from aiobridge.asgi import from_wsgi
from aiobridge.clients import http_session, redis_client
from aiobridge.flask import AioBridge

THREAD_NAME = "aiobridge-srv"
TAG = os.environ.get("SERVER_TAG", "none")

app = Flask(__name__)
app.config["AIOBRIDGE_THREAD_NAME"] = THREAD_NAME
ext = AioBridge(app)

# Served by uWSGI: its hooks (docs/uwsgi.md); UWSGI_SETUP=0 leaves them out.
if "uwsgi" in sys.modules and os.environ.get("UWSGI_SETUP", "1") == "1":
    import aiobridge.uwsgi

    aiobridge.uwsgi.setup()


async def _close_redis(client: redis.asyncio.Redis) -> None:
    await client.set(f"closed:{TAG}:{os.getpid()}", "1")
    await client.aclose()


http = ext.resource(http_session(), app=app)
cache = ext.resource(redis_client(os.environ["REDIS_URL"]), close=_close_redis, app=app)


async def _health() -> int:
    session = await http.get()
    async with session.get(os.environ["UPSTREAM_URL"] + "/health") as response:
        return response.status


async def _count() -> int:
    return int(await (await cache.get()).incr(f"served:{TAG}"))


def _loop_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive())


async def _both() -> tuple[int, int]:
    status, served = await asyncio.gather(_health(), _count())
    return status, served


@app.get("/dog")
async def dog() -> dict[str, Any]:
    status, served = await _both()
    return {"pid": os.getpid(), "upstream": status, "served": served}


@app.get("/threads")
def threads() -> dict[str, Any]:
    return {"pid": os.getpid(), "loop_threads": _loop_threads()}


async def _tick() -> None:
    while True:  # the loop waits in its selector every millisecond
        await asyncio.sleep(0.001)


if os.environ.get("WARM_AT_IMPORT") == "1":
    with app.app_context():
        ext.run(_both(), timeout=30)
    if os.environ.get("TICK_AT_IMPORT") == "1":
        ext.bridge.spawn(_tick())

#: The same app for ASGI servers (uvicorn): the bridges stop at lifespan shutdown.
asgi_app = from_wsgi(app)
