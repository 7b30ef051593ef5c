"""What the report reads from a run's ``results.json``: load points, the machine, the run.

Shared by :mod:`benchmarks.report` (the headline and the whole report),
:mod:`benchmarks.report_findings` and :mod:`benchmarks.report_tables`, so each
figure is looked up one way.
"""

from __future__ import annotations

from typing import Any

from .load_analysis import find_point
from .results import cell, rps_ratio, text

__all__ = ("command_line", "fanout_at", "load_entry", "load_modes", "machine_line",
           "point_at", "ratio_text", "run_line", "target_point", "target_value")  # fmt: skip


def load_entry(document: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = document.get("benchmarks", {}).get("load_demo") or {}
    return result


def load_modes(document: dict[str, Any]) -> list[dict[str, Any]]:
    modes: list[dict[str, Any]] = (load_entry(document).get("result") or {}).get("modes", [])
    return modes


def target_point(document: dict[str, Any]) -> tuple[int, int]:
    point = (load_entry(document).get("params") or {}).get("target_point") or {}
    return int(point.get("concurrency", 32)), int(point.get("latency_ms", 20))


def point_at(document: dict[str, Any], mode: str, concurrency: int,
           latency: int) -> dict[str, Any] | None:  # fmt: skip
    return find_point(load_entry(document).get("result") or {}, mode, concurrency, latency)


def fanout_at(document: dict[str, Any], mode: str, concurrency: int = 1) -> dict[str, Any] | None:
    for entry in load_modes(document):
        if entry["mode"] == mode:
            for point in entry["fanout"]:
                if point["concurrency"] == concurrency:
                    return dict(point)
    return None


def machine_line(document: dict[str, Any]) -> str:
    m = document.get("machine", {})
    return (f"{m.get('cpu_model', '?')}, {m.get('logical_cores', '?')} logical cores, "
            f"{m.get('ram_gb', '?')} GB RAM, {m.get('os', '?')}, {m.get('python', '?')}")


def ratio_text(point: dict[str, Any] | None, other: dict[str, Any] | None) -> str:
    """``point``'s req/s over ``other``'s as "median (min-max, N rounds)"."""
    return text(rps_ratio(point, other))


def command_line(document: dict[str, Any]) -> str:
    return str(document.get("command") or "python -m benchmarks")


def run_line(document: dict[str, Any]) -> str:
    git = document.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" (modified)" if git.get("modified") else "")
    return (f"`{command_line(document)}` on {document.get('started')}, "
            f"commit {commit}, {document.get('seconds', '?')} s")  # fmt: skip


def target_value(target: dict[str, Any]) -> str:
    """A target's measured value, with its spread over rounds when it has one."""
    figures = target.get("spread")
    if figures:
        return text(figures, unit="")
    return cell(target.get("value"), 3)
