"""Every measured figure in README.md and docs/ comes from the committed benchmark run.

The committed run is ``docs/results/benchmark-results.json`` and the report
rendered from it, ``docs/benchmark-report.md`` (``python -m benchmarks.readme``
writes both; ``tests/test_benchmarks.py`` checks the report is the JSON's
rendering). Other pages link to the report, or quote it: this test finds each
figure a page states and fails when the report does not contain it.

What counts as a figure: a number followed by a unit of measurement (a ratio
``1.5x``, also with the multiplication sign; ``req/s``, ``ms``, ``µs``, ``MB``,
``%``, ``connections``, ``calls/s``, ``GET/s``, ``minutes``), and every number in a table row of
results (a Markdown or text table whose header names a measured quantity).
Python, shell and configuration blocks are not read: they hold settings, not
results.

A figure matches when the report has the same number (commas ignored), or one
that rounds to it at the page's precision when the page gives at least two
significant digits ("3.7x" for the report's 3.72). A ratio must match one of
the report's ratios. :data:`ALLOWED` lists the few figures that are not
results (defaults, parameters, bounds), each with the reason.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmark-report.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIPPED_PAGES = {"benchmark-report.md", "changes.md"}  # the source; an include of CHANGES.md

#: Figures that are not measurements, per page ("*": any page), with the reason.
ALLOWED: dict[str, dict[str, str]] = {
    "*": {
        "20 ms": "the load test's upstream latency (a parameter)",
        "50 ms": "the fan-out call's latency, and the lag probe's period (parameters)",
        "100 ms": "AIOBRIDGE_SLOW_CALLBACK's default, 0.1 s",
        "10 MB": "the soak run's bound on memory growth (a target)",
    },
    "benchmarks.md": {
        "1.33x": "an example of how a ratio with its spread is printed",
        "1.10": "the same example",
        "1.50": "the same example",
    },
    "CONTRIBUTING-docs.md": {},
}

TIMES = "\N{MULTIPLICATION SIGN}"
UNIT = (r"(?P<unit>(?:" + TIMES + r"|x(?![\w-]))(?!\s?\d)"  # a ratio, not "32 x 500"
        r"|req/s|requests/s|requests per second|ms\b|µs|MB\b|%"
        r"|(?:Redis |upstream )?connections|calls/s|GET/s|GETs per second|minutes)")
FIGURE = re.compile(r"(?<![\w.,/-])(?P<num>\d[\d,]*(?:\.\d+)?)\s?" + UNIT)
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
RATIO = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)x\b")
SPREAD = re.compile(r"\((\d+\.\d+)-(\d+\.\d+), \d+ rounds?\)")
#: A table whose header names one of these holds results, so its numbers are figures.
RESULT_HEADER = re.compile(r"req/s|p50|p99|µs|cancelled running|GET/s|items/s|held", re.I)
UNREAD_FENCES = ("python", "sh", "console", "ini", "nginx", "yaml", "toml", "bash", "dockerfile")


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def _committed() -> tuple[set[Decimal], set[Decimal]]:
    """Every number of the report, and its ratios (with their spreads)."""
    text = REPORT.read_text(encoding="utf-8")
    numbers = {d for m in NUMBER.finditer(text) if (d := _decimal(m.group())) is not None}
    ratios = {Decimal(m) for m in RATIO.findall(text)}
    for low, high in SPREAD.findall(text):
        ratios |= {Decimal(low), Decimal(high)}
    return numbers, ratios


def _matches(figure: str, committed: set[Decimal]) -> bool:
    value = _decimal(figure)
    if value is None:
        return False
    if value in committed:
        return True
    digits = len(value.as_tuple().digits)
    if digits < 2:
        return False
    exponent = value.as_tuple().exponent
    quantum = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    return any(c.quantize(quantum) == value for c in committed if abs(c - value) < quantum)


def _readable(text: str) -> list[tuple[int, str, bool]]:
    """(line number, line, in a results table) of the lines a reader reads as claims."""
    out: list[tuple[int, str, bool]] = []
    fence: str | None = None
    results_table = False
    text = re.sub(r"<!--.*?-->", lambda m: "\n" * m.group().count("\n"), text, flags=re.S)
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip().lower() or "text"
            continue
        if fence in UNREAD_FENCES:
            continue
        if stripped.startswith("|"):
            if not results_table and RESULT_HEADER.search(stripped):
                results_table = True
        else:
            results_table = False
        out.append((number, line, results_table and stripped.startswith("|")))
    return out


def _figures(page: Path) -> list[tuple[int, str, str]]:
    """(line, figure as written, number) for each figure of a page."""
    found = []
    for number, line, in_table in _readable(page.read_text(encoding="utf-8")):
        for m in FIGURE.finditer(line):
            found.append((number, m.group().strip(), m.group("num")))
        if in_table:
            cells = re.sub(r"`[^`]*`", "", line)
            for m in NUMBER.finditer(cells):
                found.append((number, m.group(), m.group()))
    return found


def _allowed(page: Path, written: str) -> bool:
    normal = written.replace(TIMES, "x")
    allowed = {**ALLOWED["*"], **ALLOWED.get(page.name, {})}
    return written in allowed or normal in allowed


@pytest.mark.parametrize("page", [p for p in PAGES if p.name not in SKIPPED_PAGES],
                         ids=lambda p: p.name)  # fmt: skip
def test_every_figure_on_the_page_is_in_the_committed_results(page: Path) -> None:
    numbers, ratios = _committed()
    wrong = []
    for line, written, value in _figures(page):
        if _allowed(page, written) or _allowed(page, value):
            continue
        ratio = written.endswith(("x", TIMES))
        if not _matches(value, ratios if ratio else numbers):
            wrong.append(f"{page.name}:{line}: {written!r}")
    assert not wrong, (
        "figures the committed benchmark run (docs/benchmark-report.md) does not contain; "
        "quote the report, link to it, or (for a default or parameter) add it to ALLOWED "
        "with the reason:\n  " + "\n  ".join(wrong)
    )


def test_the_matcher_is_strict() -> None:
    """A figure from another run fails; one quoted from the report, or rounded, passes."""
    numbers, ratios = _committed()
    assert not _matches("3.65", ratios)  # a ratio of another run
    assert not _matches("311", numbers)  # connections of another run
    # A ratio of this run matches, quoted or rounded; one more precise than its source does not.
    quoted = next(r for r in sorted(ratios) if r >= 1
                  and r.as_tuple().exponent == -2 and r.as_tuple().digits[-1] != 0)  # fmt: skip
    rounded = quoted.quantize(Decimal("0.1"))
    assert _matches(str(quoted), ratios) and _matches(str(rounded), ratios)
    assert not _matches(str(quoted), {rounded})
    page = ROOT / "docs" / "index.md"
    assert _figures(page) is not None
    claim = f"served 3.65{TIMES} the requests, 311 Redis connections, 18 µs per call"
    found = FIGURE.findall(claim)
    assert [n for n, _ in found] == ["3.65", "311", "18"]
    # A setting in a Python block is not a figure; a results table's cells are.
    text = "```python\ntimeout = 30  # 30 ms\n```\n| mode | req/s |\n|---|---:|\n| a | 123.4 |\n"
    rows = [(line, table) for _, line, table in _readable(text)]
    assert ("timeout = 30  # 30 ms", False) not in rows
    assert ("| a | 123.4 |", True) in rows
