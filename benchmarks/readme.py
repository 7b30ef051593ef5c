"""``python -m benchmarks.readme RESULTS_DIR``: publish a run as the committed results.

Everything a reader sees about the benchmarks comes from one run, so the
README's claims always match the committed report:

* ``docs/benchmark-report.md``: the run's report, and its PNG charts beside it
  (``headline.png`` becomes ``docs/benchmark-headline.png``);
* the README's headline block (between :data:`benchmarks.report.HEADLINE_START`
  and :data:`~benchmarks.report.HEADLINE_END`), which states each target met or
  missed and the command that was run. It has no image: README.md is also the
  package index page, where a relative image link would break.

``tests/test_benchmarks.py`` fails when a line of the README's block is not in
the committed report. Publish a full run made on a quiet machine::

    python -m benchmarks --out results && python -m benchmarks.readme results
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from .report import HEADLINE_END, HEADLINE_START, headline, render

__all__ = ("CHART", "DOCS", "main", "published_readme_block", "published_report",
           "replace_block")  # fmt: skip

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = Path("docs")
REPORT = DOCS / "benchmark-report.md"
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


def published_report(document: dict[str, Any], root: Path = REPO_ROOT) -> str:
    """``docs/benchmark-report.md`` as rendered from ``document``."""
    charts = [name for name in CHARTS if (root / DOCS / name).exists()]
    return render(document, charts, headline_chart=REPORT_HEADLINE_CHART)


def published_readme_block(document: dict[str, Any]) -> str:
    """The README's headline block as rendered from ``document`` (no image)."""
    return headline(document, chart=None)


def _publish(root: Path, document: dict[str, Any], readme: Path) -> None:
    (root / REPORT).write_text(published_report(document, root), encoding="utf-8")
    text = readme.read_text(encoding="utf-8")
    readme.write_text(replace_block(text, published_readme_block(document)), encoding="utf-8")


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
    print(f"updated {args.readme}, {REPORT} and the charts in {DOCS}/ from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
