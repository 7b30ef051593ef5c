"""Where a demo worker spends its time under load: py-spy on one mode at one point.

Starts Redis, the upstream and the demo's gunicorn in one mode (as
:mod:`benchmarks.load_demo` does), warms it up, then loads ``/dog`` while
``py-spy record`` samples the worker (all threads, only while they hold the
GIL, so the shares are shares of the Python work the GIL serialises). Writes
``profile-MODE.txt`` (py-spy's collapsed stacks) and ``profile-MODE.svg`` (a
flame graph) to ``--out``, and prints the share of each thread and the
functions with the most samples, self and inclusive, next to the load's req/s
and the worker's CPU time.

Needs py-spy (``python -m pip install py-spy``; not a dependency of the
benchmarks) and the right to trace the worker (root, or ptrace allowed).

Run: ``python -m benchmarks.profile_demo --mode bridge --concurrency 32 --latency 20``
(``--mode`` also takes a deployment: ``bridge@granian``, ``quart``...).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from demo_flask.services import RedisServer, UpstreamServer

from ._gunicorn import DemoServer
from .load_client import run_load
from .load_measure import cpu_seconds
from .load_plan import LABELS, server_of

__all__ = ("main", "profile", "py_spy", "stacks", "summarize")


def stacks(collapsed: str) -> Iterator[tuple[list[str], int]]:
    """Each stack of py-spy's collapsed output: its frames (the thread first) and samples."""
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def summarize(collapsed: str, top: int = 25) -> str:
    """Thread shares and the top functions (self, inclusive) of py-spy collapsed stacks."""
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, samples in stacks(collapsed):
        total += samples
        threads[frames[0]] += samples
        own[frames[-1]] += samples
        for frame in {frame.split(" (")[0] for frame in frames[1:]}:
            inclusive[frame] += samples
    if not total:
        return "no samples (was the worker busy, and may py-spy trace it?)"
    lines = [f"{total} samples"]
    for title, counter in (("threads", threads), ("self", own), ("inclusive", inclusive)):
        lines.append(f"{title}:")
        lines += [f"  {n / total:6.1%}  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines)


def py_spy() -> str | None:
    """The py-spy executable (on ``PATH`` or beside this Python), or None."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return spy if Path(spy).exists() else None


def profile(label: str, *, concurrency: int, latency: int, duration: int, threads: int,
            rate: int, out: Path, spy: str) -> tuple[dict[str, Any], float, str]:  # fmt: skip
    """Load ``label``'s worker and sample it with py-spy meanwhile.

    Returns the load's summary, the worker's CPU seconds during the load, and
    py-spy's collapsed stacks (also written to ``out/profile-LABEL.txt``, with
    a flame graph beside it). Every wait is bounded by ``duration`` plus a margin.
    """
    out.mkdir(parents=True, exist_ok=True)
    collapsed = out / f"profile-{label}.txt"
    url_path = f"/dog?latency={latency}"
    with RedisServer() as redis, UpstreamServer(seed_redis=redis.url) as upstream, \
            DemoServer(redis_url=redis.url, upstream_url=upstream.url, threads=threads,
                       **server_of(label)) as server:  # fmt: skip
        asyncio.run(run_load(server.url + "/dog?latency=0", concurrency=threads,
                             max_requests=300, duration=10))  # fmt: skip
        pids = server.worker_pids()
        record = [spy, "record", "--pid", str(pids[0]), "--duration", str(duration),
                  "--rate", str(rate), "--threads", "--gil", "--nonblocking"]  # fmt: skip
        procs = [subprocess.Popen([*record, "--format", fmt, "--output", str(path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for fmt, path in (("raw", collapsed),
                                   ("flamegraph", collapsed.with_suffix(".svg")))]  # fmt: skip
        try:
            before = cpu_seconds(pids)
            result = asyncio.run(run_load(server.url + url_path, concurrency=concurrency,
                                          max_requests=1_000_000, duration=duration))
            worker_cpu = cpu_seconds(pids) - before
        finally:
            for proc in procs:
                try:
                    proc.wait(duration + 30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
                if proc.stderr is not None:
                    proc.stderr.close()
    text = collapsed.read_text(encoding="utf-8") if collapsed.exists() else ""
    return result.summary(), worker_cpu, text


def main(argv: list[str] | None = None) -> int:
    """Profile one mode at one load point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_demo",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--mode", choices=LABELS, default="bridge",
                        help="a mode or a deployment such as bridge@granian")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=int, default=20, help="upstream latency, ms")
    parser.add_argument("--duration", type=int, default=8, help="seconds of load and sampling")
    parser.add_argument("--threads", type=int, default=32, help="gunicorn threads")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    spy = py_spy()
    if spy is None:
        print("py-spy not found: python -m pip install py-spy", file=sys.stderr)
        return 2
    summary, worker_cpu, collapsed = profile(
        args.mode, concurrency=args.concurrency, latency=args.latency, duration=args.duration,
        threads=args.threads, rate=args.rate, out=args.out, spy=spy)  # fmt: skip
    print(f"{args.mode}: /dog?latency={args.latency}, {args.concurrency} clients: "
          f"{summary['rps']} req/s, p50 {summary['p50_ms']} ms, {summary['errors']} errors; "
          f"worker CPU {worker_cpu:.2f} s in {summary['seconds']:.1f} s "
          f"({worker_cpu / max(summary['ok'], 1) * 1000:.2f} ms per answer)")
    print(summarize(collapsed))
    print(f"wrote {args.out / f'profile-{args.mode}.txt'} and its .svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
