"""``python -m benchmarks.readme RESULTS_DIR``: publish a run as the committed results.

Everything a reader sees about the benchmarks comes from one run, so the
README's and the docs' figures always match the committed results:

* ``docs/results/benchmark-results.json``: the run's ``results.json``, the one
  source of every figure;
* ``docs/benchmark-report.md``: the report rendered from it (prose wrapped at
  :data:`WIDTH` columns), and its PNG charts beside it (``headline.png``
  becomes ``docs/benchmark-headline.png``);
* the README's headline block (between :data:`benchmarks.report.HEADLINE_START`
  and :data:`~benchmarks.report.HEADLINE_END`): the report's table of the
  modes at the headline load, each row naming its server, cut from the
  report, and a pointer to the report for the machine, the command and the
  targets. It has no image: README.md is also the package index page, where a
  relative image link would break.

``tests/test_benchmarks.py`` fails when a line of the README's block is not in
the committed report, or when the report is not what the committed JSON
renders; ``tests/test_docs_figures.py`` fails when a page of the README or the
docs states a figure the report does not contain. Publish a full run made on a
quiet machine::

    python -m benchmarks --out results && python -m benchmarks.readme results
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

from .load_plan import TARGET_LATENCY_MS
from .report import HEADLINE_END, HEADLINE_START, render

__all__ = ("CHART", "DOCS", "RESULTS", "main", "published_readme_block", "published_report",
           "readme_block_from_report", "replace_block", "wrap_prose")  # fmt: skip

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = Path("docs")
REPORT = DOCS / "benchmark-report.md"
#: The committed run: every figure of the README and the docs comes from it.
RESULTS = DOCS / "results" / "benchmark-results.json"
#: Prose lines of the report are wrapped at this width (tables are not).
WIDTH = 88
#: The report's table the README shows: the modes side by side, each with its server.
MODES_HEADING = "### The modes side by side"
#: The headline chart, and its name as the report (in docs/) links it.
CHART = DOCS / "benchmark-headline.png"
REPORT_HEADLINE_CHART = CHART.name
#: The run's charts, copied into docs/ under these names.
CHARTS = ("load_rps.png", "load_p99.png", "fanout.png", "call_overhead.png")


def replace_block(text: str, block: str) -> str:
    """``text`` with its headline block (markers included) replaced by ``block``.

    Raises:
        ValueError: ``text`` has no start and end markers, in that order.
    """
    start = text.find(HEADLINE_START)
    end = text.find(HEADLINE_END, start + 1)
    if start < 0 or end < 0:
        raise ValueError(f"the README has no {HEADLINE_START} ... {HEADLINE_END} markers")
    return text[:start] + block + text[end + len(HEADLINE_END):]


def wrap_prose(text: str, width: int = WIDTH) -> str:
    """``text`` with each long prose line wrapped; tables, headings, code and markers kept.

    Markdown renders a wrapped paragraph exactly as the long line, so this
    changes how the file reads in an editor or a diff, not the page.
    """
    out: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        keep = fenced or len(line) <= width or line.startswith(("|", "#", "<!--", "![", "    "))
        if keep:
            out.append(line)
            continue
        bullet = re.match(r"^(\s*(?:[-*]|\d+\.)\s+)", line)
        indent = " " * len(bullet.group(1)) if bullet else ""
        out.append(textwrap.fill(line, width=width, subsequent_indent=indent,
                                 break_long_words=False, break_on_hyphens=False))  # fmt: skip
    return "\n".join(out)


def published_report(document: dict[str, Any], root: Path = REPO_ROOT) -> str:
    """``docs/benchmark-report.md`` as rendered from ``document``."""
    charts = [name for name in CHARTS if (root / DOCS / name).exists()]
    return wrap_prose(render(document, charts, headline_chart=REPORT_HEADLINE_CHART))


def readme_block_from_report(report_text: str) -> str:
    """The README's block: the report's modes table at its first load, cut from the report.

    Every table line is a line of the report, so the README cannot state a
    figure the report does not. When the report has no modes table (a run
    without the peers), the report's headline table is used.
    """
    lines = report_text.split("\n")
    table: list[str] = []
    if MODES_HEADING in lines:
        start = lines.index(MODES_HEADING) + 1
        rows: list[str] = []
        for line in lines[start:]:
            if line.startswith("|"):
                rows.append(line)
            elif rows:
                break
        if len(rows) > 2:
            clients = [row.split("|")[3].strip() for row in rows[2:]]
            first = clients[0]
            table = rows[:2] + [row for row, c in zip(rows[2:], clients, strict=True) if c == first]
            intro = (f"`GET /dog` of the demo with {first} concurrent clients and a "
                     f"{TARGET_LATENCY_MS} ms "
                     "upstream, one worker process per mode; each row names the server "
                     "that ran it:")  # fmt: skip
    if not table:
        start = lines.index(HEADLINE_START) + 1
        table = [line for line in lines[start:lines.index(HEADLINE_END)]
                 if line.startswith("|")]  # fmt: skip
        intro = next(line for line in lines[start:] if line.startswith("`GET /dog`"))
    return "\n".join([
        HEADLINE_START, intro, "", *table, "",
        "The machine, the command, every target met or missed and where the bridge",
        "loses are in the benchmark report, `docs/benchmark-report.md`.",
        HEADLINE_END,
    ])  # fmt: skip


def published_readme_block(document: dict[str, Any]) -> str:
    """The README's headline block as rendered from ``document`` (no image)."""
    return readme_block_from_report(render(document, [], headline_chart=None))


def _publish(root: Path, document: dict[str, Any], readme: Path) -> None:
    report = published_report(document, root)
    (root / REPORT).write_text(report, encoding="utf-8")
    (root / RESULTS).parent.mkdir(parents=True, exist_ok=True)
    (root / RESULTS).write_text(json.dumps(document, indent=1) + "\n",  # key order: tables
                                encoding="utf-8")  # fmt: skip
    text = readme.read_text(encoding="utf-8")
    readme.write_text(replace_block(text, readme_block_from_report(report)), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Publish a results directory into the README and docs/; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("results", type=Path, help="the --out directory of a run")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md",
                        help="the README to update; docs/ is beside it")  # fmt: skip
    args = parser.parse_args(argv)
    root: Path = args.readme.parent
    (root / DOCS).mkdir(parents=True, exist_ok=True)
    document = json.loads((args.results / "results.json").read_text(encoding="utf-8"))
    if (args.results / "headline.png").exists():
        shutil.copyfile(args.results / "headline.png", root / CHART)
    for name in CHARTS:
        if (args.results / name).exists():
            shutil.copyfile(args.results / name, root / DOCS / name)
    try:
        _publish(root, document, args.readme)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"updated {args.readme}, {REPORT}, {RESULTS} and the charts in {DOCS}/ "
          f"from {args.results}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
