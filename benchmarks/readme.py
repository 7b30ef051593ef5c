"""``python -m benchmarks.readme RESULTS_DIR``: put a run's headline into the README.

Replaces the block between :data:`benchmarks.report.HEADLINE_START` and
:data:`~benchmarks.report.HEADLINE_END` in ``README.md`` with the headline of
``RESULTS_DIR/results.json`` (the target point per mode, fan-out, the machine
and the command), and copies the run's ``headline.png`` to
``docs/benchmark-headline.png``, the chart the docs show. The README block has
no image: README.md is also the package index page, where a relative image
link would break. Run it after a full run on a quiet machine::

    python -m benchmarks --out results && python -m benchmarks.readme results
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .report import HEADLINE_END, HEADLINE_START, headline

__all__ = ("main", "replace_block")

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART = Path("docs") / "benchmark-headline.png"


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


def main(argv: list[str] | None = None) -> int:
    """Update README.md and docs/ from a results directory; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("results", type=Path, help="the --out directory of a run")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    args = parser.parse_args(argv)
    document = json.loads((args.results / "results.json").read_text(encoding="utf-8"))
    chart_source = args.results / "headline.png"
    copied = chart_source.exists()
    if copied:
        target = args.readme.parent / CHART
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(chart_source, target)
    text = args.readme.read_text(encoding="utf-8")
    try:
        updated = replace_block(text, headline(document, chart=None))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.readme.write_text(updated, encoding="utf-8")
    print(f"updated {args.readme}" + (f" and {CHART}" if copied else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
