"""Results shared by every benchmark: ratios with their spread, targets, markdown tables.

Every benchmark (``bm_*.py``, the load test) and the report compute their
ratios, state their targets and render their tables here, so a figure is
computed and shown one way everywhere; every ``bm_*.py`` gets its command line
and its result from :func:`main_for`.

A figure's spread across the rounds of a run: min, median and max.

A ratio between two variants is computed round by round (the rounds are
interleaved, so round *i* of each variant ran under the same conditions), and
reported as its median with the lowest and highest round beside it, so a reader
sees when a difference is within the run's noise.

Example::

    >>> ratio_rounds([120.0, 100.0, 110.0], [100.0, 100.0, 100.0])
    [1.2, 1.0, 1.1]
    >>> text(spread([1.2, 1.0, 1.1]))
    '1.10x (1.00-1.20, 3 rounds)'
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ("MODE_ORDER", "Option", "Progress", "Rows", "UsageError", "cell", "check", "main_for",
           "markdown_table", "numeric_align", "p99_ratio", "ratio_rounds", "rounds_option",
           "rps_ratio", "show", "spread", "text")  # fmt: skip

#: The demo's modes in the order every table and finding shows them (the bridge last; just
#: before it, ``bridge-loop``: the bridge mode's app on the ASGI server's own loop).
MODE_ORDER = ("sync", "gevent", "embedded", "embedded-thread", "flask-async", "flask-recipe",
              "quart", "bridge-loop", "bridge")  # fmt: skip

Point = dict[str, Any]
Rows = list[dict[str, Any]]
#: Called with a short message as a benchmark moves on (the harness's progress bar).
Progress = Callable[[str], None]
#: One option of a benchmark's command line: its flag and ``add_argument``'s keywords.
Option = tuple[str, dict[str, Any]]
#: What a benchmark measures from its parsed command line: ``(params, rows)``, or
#: None when the command did something else and has no result (a helper mode).
Measure = Callable[[argparse.Namespace, Progress], tuple[dict[str, Any], Rows] | None]


def ratio_rounds(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """``numerators[i] / denominators[i]`` for every round both measured (a zero is skipped)."""
    return [n / d for n, d in zip(numerators, denominators, strict=False) if d]


def spread(values: Sequence[float], digits: int = 3) -> dict[str, Any] | None:
    """``{"min", "median", "max", "rounds"}`` of ``values``; None when there are none."""
    if not values:
        return None
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits),
            "max": round(max(values), digits), "rounds": len(values)}  # fmt: skip


def text(figures: dict[str, Any] | None, unit: str = "x", digits: int = 2) -> str:
    """``"1.10x (1.00-1.20, 3 rounds)"``; one round says so instead of a range."""
    if not figures:
        return "-"
    median = f"{figures['median']:.{digits}f}{unit}"
    if figures["rounds"] < 2:
        return f"{median} (1 round: no spread)"
    return (f"{median} ({figures['min']:.{digits}f}-{figures['max']:.{digits}f}, "
            f"{figures['rounds']} rounds)")  # fmt: skip


def rps_ratio(point: Point | None, other: Point | None) -> dict[str, Any] | None:
    """``point``'s req/s over ``other``'s, round by round: min, median, max."""
    if not point or not other:
        return None
    return spread(ratio_rounds(point.get("rps_rounds") or [point["rps"]],
                               other.get("rps_rounds") or [other["rps"]]))  # fmt: skip


def p99_ratio(point: Point | None, other: Point | None) -> dict[str, Any] | None:
    """``point``'s p99 over ``other``'s, round by round (None without per-round p99s)."""
    if not point or not other or not point.get("p99_rounds") or not other.get("p99_rounds"):
        return None
    return spread(ratio_rounds([v for v in point["p99_rounds"] if v is not None],
                               [v for v in other["p99_rounds"] if v is not None]))  # fmt: skip


def check(value: float | None, op: str, bound: float, figures: dict[str, Any] | None = None,
          *, bound_text: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A target's entry: ``{"value", "target", "met", "spread"}``; a missing value is not met.

    ``op`` is ``"<="`` or ``">="``; the target reads ``f"{op} {bound:g}"`` unless
    ``bound_text`` says how to write the bound.
    """
    met = value is not None and (value <= bound if op == "<=" else value >= bound)
    return {
        "value": None if value is None else round(value, 3),
        "target": f"{op} {format(bound, 'g') if bound_text is None else bound_text}",
        "met": met,
        "spread": figures,
    }


def cell(value: Any, digits: int = 1) -> str:
    """A table cell: ``-`` for None, yes/no, thousands separators, ``digits`` decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: str | None = None) -> str:  # fmt: skip
    """A markdown table; cells that are not strings go through :func:`cell`.

    ``align`` is the separator row without its first ``|`` (``"---|---:|"``);
    every column is left-aligned when it is omitted.
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + (align or "---|" * len(headers))]
    for row in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else cell(c) for c in row) + " |")
    return "\n".join(lines)


def numeric_align(headers: Sequence[str], text_columns: int) -> str:
    """The alignment row of a table whose first ``text_columns`` columns are text."""
    return "---|" * text_columns + "---:|" * (len(headers) - text_columns)


def show(result: dict[str, Any], format_table: Callable[[list[dict[str, Any]]], str]) -> None:
    """Print a benchmark run on its own: its table, then each target met or MISSED."""
    print(format_table(result["rows"]))
    for label, target in (result.get("targets") or {}).items():
        status = "met" if target["met"] else "MISSED"
        print(f"{label}: {target['value']} ({target['target']}) {status}")


def rounds_option(help_text: str = "rounds per variant") -> Option:
    """The ``--rounds N`` option most benchmarks take."""
    return ("--rounds", {"type": int, "help": help_text})


class UsageError(Exception):
    """A command line a benchmark refuses: reported as argparse reports its own (status 2)."""


def main_for(name: str, doc: str | None, argv: list[str] | None, progress: Progress | None,
             measure: Measure, format_table: Callable[[Rows], str], *,
             quick_help: str = "small sizes: a few seconds", options: Sequence[Option] = (),
             targets: Callable[[Rows], dict[str, Any]] | None = None,
             header: Callable[[dict[str, Any]], str] | None = None,
             show_targets: bool = True) -> dict[str, Any]:  # fmt: skip
    """A ``bm_*.py`` benchmark's ``main``: parse, measure, build its result, print it.

    The command line is ``--quick`` (``quick_help``) then ``options``, described
    by the first line of ``doc``. ``measure`` gets the parsed arguments and a
    progress callback (a no-op without ``progress``) and returns ``(params,
    rows)``, or None for a helper mode (the result is then ``{}``); it raises
    :class:`UsageError` to refuse the arguments. The result is ``{"name",
    "params", "rows"}``, plus ``"targets"`` from ``targets(rows)``.
    Without ``progress`` (run on its own) it prints ``header(params)`` if given,
    the table and, with ``show_targets``, each target met or MISSED.

    Example::

        def main(argv=None, progress=None):
            return main_for(NAME, __doc__, argv, progress, _measure, format_table,
                            options=[rounds_option()], targets=check_targets)
    """
    parser = argparse.ArgumentParser(description=(doc or name).splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    for flag, settings in options:
        parser.add_argument(flag, **settings)
    args = parser.parse_args(argv)
    try:
        measured = measure(args, progress or (lambda _msg: None))
    except UsageError as exc:
        parser.error(str(exc))
    if measured is None:
        return {}
    params, rows = measured
    result: dict[str, Any] = {"name": name, "params": params, "rows": rows}
    if targets is not None:
        result["targets"] = targets(rows)
    if progress is None:
        if header is not None:
            print(header(params))
        if show_targets:
            show(result, format_table)
        else:
            print(format_table(rows))
    return result
