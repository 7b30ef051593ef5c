"""How often a Redis call that aiobridge cancelled still runs on (Python 3.11's ``wait_for``).

A throw-away ``redis-server`` on 127.0.0.1 (``REDIS_URL`` wins). Each trial
submits a coroutine of three ``INCR`` commands to a bridge and cancels it at a
random moment, seeded: half by ``Future.cancel()`` after 0-11 passes of the
loop, half by a timeout of 0-1.5 ms. Per configuration — loop (asyncio,
uvloop), client settings, re-delivery on or off — it counts:

* ``cancelled running``: trials whose cancellation reached a running task;
* ``returned``: of those, tasks that returned normally although cancelled
  (``stats().cancel_ignored``: a library dropped the cancellation and no
  re-delivery caught it before the end);
* ``later command``: ``Future.cancel()`` trials in which an ``INCR`` was sent
  two or more steps after the step in progress when the cancel was asked for
  (one step of slack: the cancel reaches the loop one callback later);
* ``re-delivered``: calls that aiobridge cancelled again (``cancel_redelivered``).

Client settings: ``redis-py defaults`` (``redis.asyncio.Redis.from_url(url)``;
redis-py 8 sets ``socket_timeout=5``, so every write goes through
``asyncio.wait_for``) and ``redis_client()`` (aiobridge's helper:
``socket_timeout=None``). Counts, not timings: still, they depend on how the
loop interleaves, so a busy machine shifts them.

Run: ``python -m benchmarks.bm_cancel [--quick] [--trials N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import platform
import random
import threading
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

from aiobridge import AioThread
from aiobridge.clients import redis_client
from demo_flask.services import redis_from_env

from .results import Progress, Rows, main_for, markdown_table, numeric_align

NAME = "cancel"
KEYS = ("a", "b", "c")
WAIT = 10.0

ClientFactory = Callable[[str], Callable[[], Any]]


def _redis_py_defaults(url: str) -> Callable[[], Any]:
    async def make() -> redis.asyncio.Redis:
        client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(url)
        return client

    return make


SETTINGS: dict[str, ClientFactory] = {
    "redis-py defaults": _redis_py_defaults,
    "redis_client()": redis_client,
}


def _loops() -> dict[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None}
    try:
        import uvloop
    except ImportError:
        return loops
    loops["uvloop"] = uvloop.new_event_loop
    return loops


class _Trial:
    def __init__(self) -> None:
        self.marks: list[str] = []
        self.ended = threading.Event()
        self.requested_at: int | None = None

    async def steps(self, cache: Any, prefix: str) -> None:
        try:
            client: redis.asyncio.Redis = await cache.get()
            for key in KEYS:
                self.marks.append(key)
                await client.incr(f"{prefix}:{key}")
        finally:
            self.ended.set()

    def ran_a_later_command(self) -> bool:
        return self.requested_at is not None and len(self.marks) > self.requested_at + 1


def _cancel_after(loop: asyncio.AbstractEventLoop, trial: _Trial,
                  future: concurrent.futures.Future[None], passes: int) -> None:
    if passes:
        loop.call_soon(_cancel_after, loop, trial, future, passes - 1)
        return
    trial.requested_at = len(trial.marks)
    future.cancel()


async def _ping(cache: Any) -> None:
    client: redis.asyncio.Redis = await cache.get()
    await client.ping()


def run_config(url: str, loop_name: str, settings: str, redeliver: bool, trials: int,
               seed: int) -> dict[str, Any]:
    """One configuration: ``trials`` cancelled calls; the counts."""
    rng = random.Random(seed)
    with AioThread(name="bm-cancel", loop_factory=_loops()[loop_name]) as bridge:
        # The switch exists for this measurement only: the dispatcher's re-delivering cancel.
        dispatcher = bridge._portal._loop_thread.dispatcher
        assert dispatcher is not None
        dispatcher.redeliverer.enabled = redeliver and dispatcher.redeliverer.enabled
        cache = bridge.resource(SETTINGS[settings](url))
        bridge.run(_ping(cache), timeout=WAIT)
        running = later = 0
        for n in range(trials):
            trial = _Trial()
            prefix = f"bm:cancel:{seed}:{n}"
            if n % 2:
                future = bridge.submit(trial.steps(cache, prefix))
                bridge.call_soon(_cancel_after, bridge.loop, trial, future, rng.randrange(12))
            else:
                future = bridge.submit(trial.steps(cache, prefix),
                                       timeout=rng.uniform(0.0, 0.0015))
            try:
                future.result(WAIT)
                continue  # finished before the cancellation
            except (concurrent.futures.CancelledError, TimeoutError):
                pass
            if not trial.marks:
                continue  # cancelled before it started
            if not trial.ended.wait(WAIT):
                raise RuntimeError(f"trial {n} still runs {WAIT} s after its cancellation")
            running += 1
            later += trial.ran_a_later_command()
        stats = bridge.stats()
    return {
        "loop": loop_name,
        "settings": settings,
        "redeliver": redeliver,
        "trials": trials,
        "cancelled_running": running,
        "returned": stats.cancel_ignored,
        "later_command": later,
        "redelivered": stats.cancel_redelivered,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """One row per configuration: the counts of the trials."""
    headers = ["loop", "client settings", "re-delivery", "cancelled running", "returned",
               "later command", "re-delivered"]  # fmt: skip
    return markdown_table(headers, ([
        row["loop"], row["settings"], "on" if row["redeliver"] else "off",
        f"{row['cancelled_running']} / {row['trials']}", str(row["returned"]),
        str(row["later_command"]), str(row["redelivered"]),
    ] for row in rows), numeric_align(headers, 3))  # fmt: skip


def _measure(args: argparse.Namespace, say: Progress) -> tuple[dict[str, Any], Rows]:
    trials = args.trials or (100 if args.quick else 1000)
    rows = []
    # The dropped cancellations are the point here: keep their warnings out of the output.
    log = logging.getLogger("aiobridge")
    level = log.level
    log.setLevel(logging.CRITICAL)
    with contextlib.ExitStack() as stack:
        stack.callback(log.setLevel, level)
        server = stack.enter_context(redis_from_env())
        for loop_name in _loops():
            for settings in SETTINGS:
                for redeliver in (False, True):
                    say(f"{loop_name}, {settings}, re-delivery {'on' if redeliver else 'off'}")
                    rows.append(run_config(server.url, loop_name, settings, redeliver, trials,
                                           args.seed))
        flush = redis.Redis.from_url(server.url)
        try:
            for key in flush.scan_iter("bm:cancel:*", count=1000):
                flush.delete(key)
        finally:
            flush.close()
    params = {"trials": trials, "seed": args.seed, "python": platform.python_version(),
              "redis_py": redis.__version__}
    return params, rows


def _header(params: dict[str, Any]) -> str:
    return (f"Python {params['python']}, redis-py {params['redis_py']}, "
            f"{params['trials']} trials per row")


def main(argv: list[str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run every configuration; returns ``{"name", "params", "rows"}``."""
    return main_for(NAME, __doc__, argv, progress, _measure, format_table,
                    quick_help="100 trials per configuration",
                    options=[("--trials", {"type": int, "help": "trials per configuration"}),
                             ("--seed", {"type": int, "default": 15})],
                    header=_header)  # fmt: skip


if __name__ == "__main__":
    main()
