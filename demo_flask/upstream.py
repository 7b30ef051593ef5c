"""The upstream dog service the demo calls (aiohttp.web).

Routes:

- ``GET /dog?latency=MS``: waits ``MS`` milliseconds (0-10,000), then returns a
  small JPEG with its file name in the ``X-Filename`` header.
- ``GET /delay?seconds=S``: waits ``S`` seconds (0-30), then returns JSON.
- ``GET /health``: ``ok``.
- ``GET /connections``: how many distinct client connections (peer addresses)
  and requests the service has seen, to compare how well each mode of the demo
  reuses its connections; ``POST /connections/reset`` zeroes the counters.

Run it with ``python -m demo_flask.upstream --port 8081 [--seed-redis URL]``;
``--seed-redis`` writes the dogs' names into Redis before serving. It only
ever listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler

from .catalog import DOG_NAMES_KEY, DOGS, IMAGES_DIR

__all__ = ("MAX_DELAY_SECONDS", "MAX_LATENCY_MS", "create_app", "main", "seed_redis")

MAX_LATENCY_MS = 10_000
MAX_DELAY_SECONDS = 30.0


class _State:
    """The pictures, the order they are served in, and the peers seen so far."""

    def __init__(self, images: dict[str, bytes]) -> None:
        self.images = images
        self.order: Iterator[str] = itertools.cycle(sorted(images))
        self.peers: set[tuple[str, int]] = set()
        self.requests = 0

    def record(self, request: web.Request) -> None:
        self.requests += 1
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        if peer:
            self.peers.add((str(peer[0]), int(peer[1])))

    def reset(self) -> None:
        self.peers.clear()
        self.requests = 0

    def as_json(self) -> dict[str, int]:
        return {"connections": len(self.peers), "requests": self.requests}


_STATE = web.AppKey("state", _State)


def _bounded_float(request: web.Request, name: str, low: float, high: float) -> float:
    raw = request.query.get(name, "0")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also rejects NaN
        raise web.HTTPBadRequest(
            text=f'{{"error": "{name} must be a number from {low:g} to {high:g}"}}',
            content_type="application/json",
        )
    return value


@web.middleware
async def _count_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/connections"):
        request.app[_STATE].record(request)
    return await handler(request)


async def dog(request: web.Request) -> web.Response:
    """Return the next dog picture after ``latency`` milliseconds."""
    latency = _bounded_float(request, "latency", 0, MAX_LATENCY_MS)
    if latency:
        await asyncio.sleep(latency / 1000)
    state = request.app[_STATE]
    filename = next(state.order)
    body = state.images[filename]
    return web.Response(body=body, content_type="image/jpeg", headers={"X-Filename": filename})


async def delay(request: web.Request) -> web.Response:
    """Answer after ``seconds`` seconds."""
    seconds = _bounded_float(request, "seconds", 0, MAX_DELAY_SECONDS)
    if seconds:
        await asyncio.sleep(seconds)
    return web.json_response({"slept": seconds})


async def health(request: web.Request) -> web.Response:
    """Liveness probe."""
    return web.Response(text="ok")


async def connections(request: web.Request) -> web.Response:
    """Distinct client connections and requests seen since start or reset."""
    return web.json_response(request.app[_STATE].as_json())


async def reset_connections(request: web.Request) -> web.Response:
    """Zero the connection and request counters."""
    request.app[_STATE].reset()
    return web.json_response(request.app[_STATE].as_json())


def _load_images() -> dict[str, bytes]:
    return {name: (IMAGES_DIR / name).read_bytes() for name in DOGS}


def create_app() -> web.Application:
    """Build the upstream application (pictures are read once, here)."""
    app = web.Application(middlewares=[_count_middleware])
    app[_STATE] = _State(_load_images())
    app.router.add_get("/dog", dog)
    app.router.add_get("/delay", delay)
    app.router.add_get("/health", health)
    app.router.add_get("/connections", connections)
    app.router.add_post("/connections/reset", reset_connections)
    return app


def seed_redis(url: str) -> None:
    """Write every dog's name into the :data:`~demo_flask.catalog.DOG_NAMES_KEY` hash at ``url``
    (any URL :mod:`demo_flask.redis_targets` takes)."""
    from .redis_targets import sync_client

    client = sync_client(url)
    try:
        client.hset(DOG_NAMES_KEY, mapping=dict(DOGS.items()))
    finally:
        client.close()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m demo_flask.upstream", description=__doc__)
    parser.add_argument("--port", type=int, default=8081, help="TCP port on 127.0.0.1")
    parser.add_argument("--seed-redis", metavar="URL", help="seed dog names into this Redis")
    args = parser.parse_args(argv)
    if args.seed_redis:
        import redis.exceptions

        try:
            seed_redis(args.seed_redis)
        except redis.exceptions.RedisError as exc:
            parser.exit(1, f"cannot seed Redis at {args.seed_redis}: {exc}\n")
    web.run_app(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        shutdown_timeout=5.0,
        backlog=1024,
    )


if __name__ == "__main__":
    main()
