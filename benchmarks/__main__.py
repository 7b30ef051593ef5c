"""``python -m benchmarks``: every benchmark side by side in one run, and the report.

Runs the micro-benchmarks found in this package (``bm_*.py``: per-call
overhead, and streams, fan-out and Redis where present) and the end-to-end
load test of the demo under gunicorn (:mod:`benchmarks.load_demo`), showing
progress while they run, then writes to ``--out`` (default ``results/``):

* ``results.json``: every figure with its parameters, the machine (CPU model,
  cores, RAM, OS, Python, load average before and after), package versions and
  the commit measured;
* ``report.md``: the tables, each target with its measured value and met or
  missed, and where the bridge does not win, phrased from the numbers;
* PNG charts (matplotlib): requests/s and p99 per mode against concurrency,
  per-call overhead per bridge, fan-out latency, and the headline chart.

``--quick`` runs each benchmark with its short sizes (about three minutes on
two cores); ``--only NAME`` (repeatable or comma-separated) picks benchmarks;
``--tiny`` shrinks the chosen benchmarks to a few seconds (a smoke test, not a
measurement). Exit status: 0 when every benchmark ran, 1 when one failed, 130
on Ctrl-C (the partial results are still written), 3 when the whole-run
watchdog stopped a run that overran ``--deadline`` (the report names the point
that overran; see :mod:`benchmarks._watchdog`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import inspect
import io
import json
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import _machine
from ._watchdog import EXIT_OVERRAN, Watchdog

PACKAGE_DIR = Path(__file__).resolve().parent
#: The order benchmarks run and appear in; ``bm_*.py`` modules not named here follow.
ORDER = ("call_overhead", "streams", "fanout", "redis", "load_demo")
#: Extra arguments that make a benchmark take seconds (``--tiny``); all also get --quick.
TINY_ARGS: dict[str, list[str]] = {
    "call_overhead": ["--rounds", "1"],
    "load_demo": ["--modes", "bridge", "--concurrency", "8", "--latencies", "0",
                  "--duration", "1", "--canines", "20"],
    "faults": ["--modes", "bridge", "--scenarios", "loop killed", "--deadline", "3"],
    "profile": ["--labels", "bridge-loop", "--duration", "2"],
}  # fmt: skip

#: Default ``--deadline`` in seconds: far above a normal run, so only a hang reaches it.
DEADLINES = {"tiny": 300.0, "quick": 600.0, "full": 3 * 3600.0}

Bench = Callable[..., dict[str, Any]]


def module_name(name: str) -> str:
    """The module of a benchmark: ``bm_<name>``, or ``load_demo`` itself."""
    return name if name == "load_demo" else f"bm_{name}"


def available() -> list[str]:
    """The benchmarks present in this checkout, in report order."""
    found = {path.stem.removeprefix("bm_") for path in PACKAGE_DIR.glob("bm_*.py")}
    found.add("load_demo")
    return [name for name in ORDER if name in found] + sorted(found - set(ORDER))


def _call(main: Bench, argv: list[str], progress: Callable[[str], None]) -> dict[str, Any]:
    """Call a benchmark's ``main``; one without a ``progress`` keyword has its prints kept."""
    if "progress" in inspect.signature(main).parameters:
        return main(argv, progress=progress)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        result = main(argv)
    return {**result, "output": output.getvalue()}


def run_all(names: list[str], results: dict[str, Any], *, quick: bool, tiny: bool,
            console: Console, watchdog: Watchdog) -> None:  # fmt: skip
    """Run the benchmarks one after the other into ``results``; a failure is recorded."""
    columns = (SpinnerColumn(), TextColumn("[bold]{task.fields[bench]}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
               TextColumn("{task.description}"))  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("", total=len(names), bench="")
        for name in names:
            bar.update(task, bench=name, description="starting")
            watchdog.point(f"{name}: starting")
            argv = (["--quick"] if quick or tiny else []) + (TINY_ARGS.get(name, []) if tiny
                                                             else [])  # fmt: skip
            started = time.monotonic()
            try:
                module = importlib.import_module(f"{__package__}.{module_name(name)}")
                def progress(message: str, name: str = name) -> None:
                    watchdog.point(f"{name}: {message}")
                    bar.update(task, description=message[:70])

                result = _call(module.main, argv, progress)
            except KeyboardInterrupt:
                results[name] = {"name": name, "error": "interrupted", "argv": argv}
                raise
            except Exception:
                result = {"name": name, "error": traceback.format_exc()}
                console.print(f"[red]{name} failed[/red]:\n{result['error']}")
            result["argv"] = argv
            result["seconds"] = round(time.monotonic() - started, 1)
            results[name] = result
            bar.advance(task)


def collect_targets(benchmarks: dict[str, Any]) -> list[dict[str, Any]]:
    """Every benchmark's targets as one flat list."""
    return [
        {"benchmark": name, "label": label, **target}
        for name, result in benchmarks.items()
        for label, target in (result.get("targets") or {}).items()
    ]


def write_outputs(document: dict[str, Any], out: Path) -> list[Path]:
    """Write results.json, the charts and report.md into ``out``; return the paths."""
    from . import charts, report

    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    json_path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    chart_paths = charts.write_charts(document, out)
    report_path = out / "report.md"
    report_path.write_text(report.render(document, [p.name for p in chart_paths]),
                           encoding="utf-8")  # fmt: skip
    return [json_path, report_path, *chart_paths]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="short sizes (~3 min on 2 cores)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"run only these (repeatable, or comma-separated): "
                             f"{', '.join(available())}")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("results"), help="default: results/")
    parser.add_argument("--tiny", action="store_true",
                        help="smallest sizes, seconds per benchmark (smoke tests)")  # fmt: skip
    parser.add_argument("--deadline", type=float, metavar="SECONDS",
                        help="stop the whole run past this, naming the point that overran "
                             f"(default {DEADLINES['quick']:g} with --quick, "
                             f"{DEADLINES['full']:g} without)")  # fmt: skip
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the run like Ctrl-C: children stopped in order


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run, write the outputs; returns the exit status."""
    signal.signal(signal.SIGTERM, _interrupt)
    parser = _parser()
    args = parser.parse_args(argv)
    names = available()
    if args.only:
        wanted = [name for item in args.only for name in item.split(",") if name]
        unknown = [name for name in wanted if name not in names]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; have {', '.join(names)}")
        names = [name for name in names if name in wanted]
    console = Console(stderr=True)
    document: dict[str, Any] = {
        "schema": 1,
        "command": shlex.join(["python", "-m", "benchmarks",
                               *(sys.argv[1:] if argv is None else argv)]),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "tiny": args.tiny,
        "machine": _machine.describe_machine(),
        "packages": _machine.package_versions(),
        "git": _machine.git_state(),
        "benchmarks": {},
    }
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    started = time.monotonic()
    status = 0
    with Watchdog(args.deadline or DEADLINES[size]) as watchdog:
        try:
            run_all(names, document["benchmarks"], quick=args.quick, tiny=args.tiny,
                    console=console, watchdog=watchdog)  # fmt: skip
        except KeyboardInterrupt:
            if watchdog.overran:
                document["watchdog"] = watchdog.overran
                status = EXIT_OVERRAN
            else:
                console.print("[yellow]interrupted: writing the partial results[/yellow]")
                status = 130
        finally:
            watchdog.point("writing the results")
            document["seconds"] = round(time.monotonic() - started, 1)
            document["load_average_after"] = _machine.load_average()
            document["targets"] = collect_targets(document["benchmarks"])
            paths = write_outputs(document, args.out)
    if status == 0 and any("error" in result for result in document["benchmarks"].values()):
        status = 1
    for path in paths:
        console.print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
