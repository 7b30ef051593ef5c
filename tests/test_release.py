"""The package's release metadata agrees with itself (what `python -m build` ships).

CI also builds the sdist and wheel, runs ``twine check --strict`` and imports
the wheel in a fresh virtualenv (``.ci/run``); these checks catch the mistakes
that pass those: a version without a changelog entry, a README link that breaks
on a package index page, a test command that drifted from CI's.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import aiobridge

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = "python -m pip install -e '.[test]' && python -X dev -m pytest"


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    return config


def test_the_version_is_single_sourced_and_has_a_changelog_entry() -> None:
    assert setup_cfg()["metadata"]["version"] == "attr: aiobridge.__version__"
    changes = (ROOT / "CHANGES.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(aiobridge.__version__)}\b", changes, re.M), (
        f"CHANGES.md has no '## {aiobridge.__version__}' section"
    )


def test_the_licence_file_matches_the_metadata() -> None:
    metadata = setup_cfg()["metadata"]
    assert metadata["license"] == "MIT"
    assert metadata["license_files"] == "LICENSE"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def test_the_readme_has_no_link_that_breaks_on_a_package_index() -> None:
    # README.md is the long description: relative links and images resolve
    # against the index's page, not the repository.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    relative = re.findall(r"\]\((?!https?://|#)([^)]+)\)", readme)
    assert relative == []
    assert "pip install aiobridge" not in readme  # no release to install yet


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in readme
    assert TEST_COMMAND in ci


def test_the_pytest_plugin_is_registered_by_entry_point() -> None:
    entry_points = setup_cfg()["options.entry_points"]["pytest11"]
    assert [line.strip() for line in entry_points.strip().splitlines()] == [
        "aiobridge = aiobridge.pytest_plugin"
    ]


def test_every_file_the_readme_names_exists() -> None:
    # The README names docs pages as plain paths (see the link test above).
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:docs/)?[\w./-]+\.md|LICENSE)`", readme))
    assert "docs/api.md" in named
    assert sorted(name for name in named if not (ROOT / name).exists()) == []
