"""What each mode does under faults: where a request hangs, and where it is answered.

Small bounded scenarios, one server per mode and scenario (the demo's own
launchers, :class:`benchmarks._gunicorn.DemoServer`), against one Redis and
one upstream started once; every client waits at most ``--deadline`` seconds,
so a hang is recorded as "no answer in N s" instead of hanging the run:

* ``upstream hangs``: ``/delay?seconds=20&n=1`` while the app's own request
  deadline is 2 s (``AIOBRIDGE_TIMEOUT``; the other modes have none, only
  their HTTP client's 35 s timeout).
* ``--preload fork``: gunicorn loads the app in the master, then forks the
  worker; one ``/dog``. (Not for ``quart``: uvicorn has no ``--preload``.)
* ``shutdown in flight``: three ``/delay?seconds=2&n=1`` in flight when the
  server gets SIGTERM (graceful timeout 10 s): what the clients got, how long
  the server took to exit, and what its log says (tracebacks, "Unclosed",
  "Task was destroyed", "never awaited", a SIGKILLed worker).
* ``loop killed``: in-process, Flask's test client: an ``async def`` view
  raises ``SystemExit`` (as ``sys.exit()`` deep in a library would), then an
  ordinary async view is called. Only for the loop-owning Flask modes; for
  ``bridge-loop`` the app is served on the loop of a uvicorn running in a
  thread of this process (the view's ``SystemExit`` is raised on the server's
  own loop), over HTTP.

``bridge-loop`` runs on uvicorn (its default), but ``--preload fork`` on
gunicorn's uvicorn workers, which have ``--preload``.

Run: ``python -m benchmarks.bm_faults [--modes bridge,flask-recipe] [--deadline 8]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from demo_flask import ALL_MODES, create_app, shutdown
from demo_flask.services import HOST, RedisServer, UpstreamServer, free_port

from ._gunicorn import DemoServer
from .results import Progress, Rows, UsageError, main_for

__all__ = ("main", "run_scenarios")

NAME = "faults"
MODES = ("bridge", "bridge-loop", "flask-recipe", "flask-async", "sync", "gevent", "quart")
#: ``--quick`` (part of ``python -m benchmarks --quick``, which must stay within 180 s):
#: the bridge against the recipe, a hang called after QUICK_DEADLINE seconds.
QUICK_MODES = ("bridge", "flask-recipe")
QUICK_DEADLINE = 3.0
SCENARIOS = ("upstream hangs", "--preload fork", "shutdown in flight", "loop killed")
APP_DEADLINE = 2.0
HUNG_SECONDS = 20
IN_FLIGHT = 3
IN_FLIGHT_SECONDS = 2
GRACEFUL = 10
LOG_PROBLEMS = ("Traceback", "Unclosed", "Task was destroyed", "never awaited", "SIGKILL")


def _get(url: str, deadline: float) -> tuple[str, float]:
    """``("200", seconds)``, ``("504", seconds)`` or ``("no answer", deadline)``."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=deadline) as response:
            response.read()
            status = str(response.status)
    except urllib.error.HTTPError as error:
        status = str(error.code)
    except TimeoutError:
        status = "no answer"
    except urllib.error.URLError as error:
        timed_out = isinstance(error.reason, TimeoutError)
        status = "no answer" if timed_out else f"connection error ({error.reason})"
    except OSError as error:
        status = f"connection error ({error})"
    return status, time.monotonic() - started


def _in_thread(call: Callable[[], Any], deadline: float) -> tuple[str, float]:
    """Run ``call`` in a daemon thread (a hung one must not hold the process at exit)."""
    done = threading.Event()
    outcome: list[str] = []

    def target() -> None:
        try:
            outcome.append(str(call().status_code))
        except BaseException as exc:  # SystemExit is what is tested
            outcome.append(type(exc).__name__)
        finally:
            done.set()

    started = time.monotonic()
    threading.Thread(target=target, name="fault-call", daemon=True).start()
    if not done.wait(deadline):
        return "no answer", deadline
    return outcome[0], time.monotonic() - started


def _row(scenario: str, mode: str, outcome: str, seconds: float | None, hang: bool,
         **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"scenario": scenario, "mode": mode, "outcome": outcome, "hang": hang,
            "seconds": None if seconds is None else round(seconds, 2), **extra}  # fmt: skip


def _answer_row(scenario: str, mode: str, status: str, seconds: float,
                deadline: float) -> dict[str, Any]:  # fmt: skip
    if status == "no answer":
        return _row(scenario, mode, f"no answer in {deadline:g} s", None, True)
    return _row(scenario, mode, f"{status} in {seconds:.1f} s", seconds, False)


class Scenarios:
    """The server scenarios against one Redis and one upstream."""

    def __init__(self, redis_url: str, upstream: UpstreamServer, deadline: float) -> None:
        self.redis_url = redis_url
        self.upstream = upstream
        self.deadline = deadline

    def _server(self, mode: str, **kw: Any) -> DemoServer:
        return DemoServer(mode, redis_url=self.redis_url, upstream_url=self.upstream.url,
                          threads=8, **kw)  # fmt: skip

    def upstream_hangs(self, mode: str) -> dict[str, Any]:
        env = {"AIOBRIDGE_TIMEOUT": str(APP_DEADLINE)}
        with self._server(mode, env=env) as server:
            status, seconds = _get(f"{server.url}/delay?seconds={HUNG_SECONDS}&n=1",
                                   self.deadline)  # fmt: skip
            server.stop(timeout=5.0)
        return _answer_row("upstream hangs", mode, status, seconds, self.deadline)

    def preload_fork(self, mode: str) -> dict[str, Any]:
        if mode == "quart":
            return _row("--preload fork", mode, "n/a (uvicorn has no --preload)", None, False)
        where = {"server": "gunicorn"} if mode == "bridge-loop" else {}  # uvicorn workers
        with self._server(mode, preload=True, **where) as server:
            status, seconds = _get(f"{server.url}/dog?latency=0", self.deadline)
            server.stop(timeout=5.0)
        return _answer_row("--preload fork", mode, status, seconds, self.deadline)

    def _in_flight(self) -> int:
        with urllib.request.urlopen(f"{self.upstream.url}/connections", timeout=5) as reply:
            return int(json.loads(reply.read())["requests"])

    def shutdown_in_flight(self, mode: str) -> dict[str, Any]:
        server = self._server(mode, graceful_timeout=GRACEFUL)
        with server, concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
            request = urllib.request.Request(f"{self.upstream.url}/connections/reset",
                                             method="POST")  # fmt: skip
            urllib.request.urlopen(request, timeout=5).close()
            url = f"{server.url}/delay?seconds={IN_FLIGHT_SECONDS}&n=1"
            calls = [pool.submit(_get, url, self.deadline + GRACEFUL) for _ in range(IN_FLIGHT)]
            arrived = threading.Event()
            limit = time.monotonic() + 5.0
            while not arrived.wait(0.05) and time.monotonic() < limit:
                if self._in_flight() >= IN_FLIGHT:
                    arrived.set()
            started = time.monotonic()
            exited = server.terminate(timeout=GRACEFUL + 10)
            took = time.monotonic() - started
            answers = [call.result()[0] for call in calls]
            log = server.output()
        problems = sorted({p for p in LOG_PROBLEMS if p in log})
        got = ", ".join(f"{answers.count(a)}x {a}" for a in sorted(set(answers)))
        outcome = (f"clients got {got}; exited {'' if exited else 'NOT '}in {took:.1f} s"
                   f"{' (code ' + str(server.returncode) + ')' if exited else ''}; "
                   f"log: {', '.join(problems) or 'clean'}")  # fmt: skip
        hang = not exited or "no answer" in answers
        return _row("shutdown in flight", mode, outcome, took, hang,
                    answers=answers, log_problems=problems)  # fmt: skip

    def loop_killed(self, mode: str) -> dict[str, Any]:
        if mode not in ("bridge", "bridge-loop", "flask-recipe", "flask-async"):
            return _row("loop killed", mode, "n/a (no loop shared by requests)", None, False)
        app = create_app({"CAAS_MODE": mode, "REDIS_URL": self.redis_url,
                          "UPSTREAM_URL": self.upstream.url})  # fmt: skip

        @app.get("/exit")
        async def leave() -> str:
            raise SystemExit(3)

        if mode == "bridge-loop":
            return self._loop_killed_on_loop(app)
        try:
            client = app.test_client()
            first, _ = _in_thread(lambda: client.get("/exit"), self.deadline)
            status, seconds = _in_thread(lambda: client.get("/stats"), self.deadline)
            row = _answer_row("loop killed", mode, status, seconds, self.deadline)
            row["outcome"] = f"/exit: {first}; then /stats: {row['outcome']}"
            return row
        finally:
            shutdown(app)


    def _loop_killed_on_loop(self, app: Any) -> dict[str, Any]:
        """``/exit`` then ``/stats`` over HTTP, the app on the loop of uvicorn in a thread."""
        import uvicorn

        from demo_flask.onloop_app import DemoOnLoop

        app.extensions["caas"].served_on_loop = True
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(
            DemoOnLoop(app, threads=2), host=HOST, port=port, lifespan="on", loop="uvloop",
            http="httptools", log_level="critical"))  # fmt: skip
        thread = threading.Thread(target=server.run, name="fault-uvicorn", daemon=True)
        thread.start()
        try:
            limit = time.monotonic() + 30.0
            while not server.started and thread.is_alive() and time.monotonic() < limit:
                time.sleep(0.02)
            url = f"http://{HOST}:{port}"
            first, _ = _get(f"{url}/exit", self.deadline)
            status, seconds = _get(f"{url}/stats", self.deadline)
            row = _answer_row("loop killed", "bridge-loop", status, seconds, self.deadline)
            row["outcome"] = f"/exit: {first}; then /stats: {row['outcome']}"
            return row
        finally:
            server.should_exit = True
            thread.join(self.deadline + 10)


def run_scenarios(modes: tuple[str, ...], scenarios: tuple[str, ...], deadline: float,
                  progress: Progress) -> list[dict[str, Any]]:  # fmt: skip
    """Every scenario for every mode; each one bounded by ``deadline``."""
    rows = []
    with RedisServer() as redis, UpstreamServer(seed_redis=redis.url) as upstream:
        runner = Scenarios(redis.url, upstream, deadline)
        by_name = {"upstream hangs": runner.upstream_hangs, "--preload fork": runner.preload_fork,
                   "shutdown in flight": runner.shutdown_in_flight,
                   "loop killed": runner.loop_killed}  # fmt: skip
        for scenario in scenarios:
            for mode in modes:
                progress(f"{scenario}: {mode}")
                try:
                    rows.append(by_name[scenario](mode))
                except Exception as exc:  # one failed scenario is a result
                    rows.append(_row(scenario, mode, f"scenario failed: {exc!r}"[:200],
                                     None, False))  # fmt: skip
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """One row per scenario, one column per mode; a hang is in bold."""
    modes = list(dict.fromkeys(row["mode"] for row in rows))
    scenarios = list(dict.fromkeys(row["scenario"] for row in rows))
    cell = {(r["scenario"], r["mode"]): (f"**{r['outcome']}**" if r["hang"] else r["outcome"])
            for r in rows}  # fmt: skip
    lines = ["| scenario | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    for scenario in scenarios:
        lines.append(f"| {scenario} | " + " | ".join(cell.get((scenario, m), "-")
                                                    for m in modes) + " |")  # fmt: skip
    return "\n".join(lines)


def _measure(args: argparse.Namespace, progress: Progress) -> tuple[dict[str, Any], Rows]:
    if args.deadline is None:
        args.deadline = QUICK_DEADLINE if args.quick else 8.0
    modes = tuple(args.modes.split(",")) if args.modes else (QUICK_MODES if args.quick else MODES)
    scenarios = tuple(args.scenarios.split(",")) if args.scenarios else SCENARIOS
    unknown = (set(modes) - set(ALL_MODES)) | (set(scenarios) - set(SCENARIOS))
    if unknown:
        raise UsageError(f"unknown: {', '.join(sorted(unknown))}")
    rows = run_scenarios(modes, scenarios, args.deadline, progress)
    params = {"deadline_s": args.deadline, "app_deadline_s": APP_DEADLINE,
              "hung_upstream_s": HUNG_SECONDS, "in_flight": IN_FLIGHT,
              "in_flight_s": IN_FLIGHT_SECONDS, "graceful_timeout_s": GRACEFUL}  # fmt: skip
    return params, rows


def _no_hang(rows: Rows) -> dict[str, Any]:
    bridge_hangs = sum(1 for r in rows if r["mode"] == "bridge" and r["hang"])
    return {"bridge answers in every fault scenario (scenarios without an answer)": {
        "value": bridge_hangs, "target": "<= 0", "met": bridge_hangs == 0}}  # fmt: skip


def main(argv: list[str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Run the fault scenarios; returns ``{"name", "params", "rows", "targets"}``."""
    return main_for(
        NAME, __doc__, argv, progress, _measure, format_table,
        quick_help=f"only {', '.join(QUICK_MODES)}, a hang after {QUICK_DEADLINE:g} s",
        options=[
            ("--modes", {"help": f"comma-separated subset of {','.join(ALL_MODES)}"}),
            ("--scenarios", {"help": f"comma-separated subset of {','.join(SCENARIOS)}"}),
            ("--deadline", {"type": float, "help": "seconds a client waits before it calls it "
                                                   f"a hang (8; quick: {QUICK_DEADLINE:g})"}),
        ],
        targets=_no_hang, show_targets=False,
    )  # fmt: skip


if __name__ == "__main__":
    main()
