"""The Flask app that ``tests/test_gevent.py`` serves with gunicorn ``-k gevent``.

The bridge is created at import (in the master with ``--preload``) and starts
on the first request, in the worker, after gevent patched it. ``UPSTREAM_URL``
names the upstream by host name (``localhost``), so each call resolves it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import aiohttp  # noqa: F401  -- imported here, not on the loop at the first call
from flask import Flask, Response, jsonify, request

from aiobridge import AioThread, BridgeTimeoutError
from aiobridge.clients import http_session

UPSTREAM_URL = os.environ["UPSTREAM_URL"]

bridge = AioThread(name="gevent-app", default_timeout=10.0)
http = bridge.resource(http_session())
app = Flask(__name__)


@app.get("/health")
def health() -> str:
    return "ok"


@app.get("/upstream")
def upstream() -> Response:
    """One call to the upstream's slow endpoint, through the bridge."""
    seconds = float(request.args["seconds"])

    async def fetch() -> object:
        session = await http.get()
        async with session.get(f"{UPSTREAM_URL}/delay", params={"seconds": seconds}) as reply:
            reply.raise_for_status()
            return await reply.json()

    return jsonify(reply=bridge.run(fetch()), pid=os.getpid())


@app.get("/where")
def where() -> Response:
    """OS thread ids of the request and of the coroutine, and the request's running loop."""

    async def native_id() -> int:
        return threading.get_native_id()

    return jsonify(
        request=threading.get_native_id(),
        loop=bridge.run(native_id()),
        running_loop_in_request=asyncio._get_running_loop() is not None,
    )


@app.get("/asyncio-run")
def asyncio_run() -> Response:
    """A route that runs its own event loop, as legacy code does."""
    return jsonify(asyncio.run(asyncio.sleep(0.01, result="own loop")))


@app.get("/to-thread")
def to_thread() -> Response:
    """``asyncio.to_thread`` from a coroutine on the bridge: a real thread of the executor."""

    def blocking() -> int:
        time.sleep(0.05)
        return threading.get_native_id()

    return jsonify(executor=bridge.run(asyncio.to_thread(blocking)),
                   request=threading.get_native_id())


@app.get("/timeout")
def timeout() -> tuple[Response, int]:
    """A call that outlives its timeout: 504, and the task is cancelled on the loop."""
    try:
        bridge.run(asyncio.sleep(30), timeout=0.2)
    except BridgeTimeoutError:
        return jsonify(timed_out=True, stats=bridge.stats().as_dict()), 504
    return jsonify(timed_out=False), 200
