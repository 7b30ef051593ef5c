"""``python -m tests.flask_gate``: Flask's own test suite, with AioBridge on every app.

1. Reads the Flask release installed here.
2. ``pip download --no-binary :all: --no-deps flask==<it>``: the sdist ships
   Flask's ``tests/`` and its ``uv.lock``; unpacked (tarfile's ``data`` filter).
3. A fresh virtualenv with this checkout of aiobridge, that Flask, and Flask's
   dependencies and ``tests`` dependency group at the versions its ``uv.lock``
   pins: the contract that release was tested under (its tests import pytest
   internals that later pytest releases removed, and Flask 3.1.3's
   ``test_bad_environ_raises_bad_request`` fails with Werkzeug 3.1.9, with or
   without aiobridge).
4. Flask's suite with ``-p tests.flask_gate.plugin``: it must pass in full.
5. Flask's ``tests/test_async.py`` with ``--aiobridge-bypass`` (the extension
   installed with ``async_views=False``): every test there that runs async
   code must fail with "aiobridge was bypassed", or the gate proves nothing.

Every step is bounded; ``--workdir`` keeps the download and the virtualenv.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib

from tests.flask_gate.plugin import BYPASSED

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOCKED = ("blinker", "click", "itsdangerous", "jinja2", "markupsafe", "werkzeug",  # Flask's
          "pytest", "asgiref", "greenlet", "python-dotenv")  # its `tests` group
# Flask's test_async.py: its tests that run async code (the rest check the blueprint setup).
BYPASS_MIN_FAILURES = 8


def _run(command: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(command), flush=True)
    kwargs.setdefault("check", False)
    return subprocess.run(command, timeout=timeout, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def _unpack(version: str, workdir: pathlib.Path) -> pathlib.Path:
    source = workdir / f"flask-{version}"
    if (source / "tests").is_dir():
        return source
    download = workdir / "download"
    result = _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
                   "--no-deps", f"flask=={version}", "--dest", str(download)], timeout=300)
    if result.returncode:
        sys.exit(f"pip download of flask=={version} failed")
    (archive,) = download.glob(f"flask-{version}.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    return source


def _locked(source: pathlib.Path) -> list[str]:
    """Flask's dependencies and ``tests`` group, at the newest version uv.lock pins for each."""
    lock = tomllib.loads((source / "uv.lock").read_text())
    pins: dict[str, str] = {}
    for package in lock["package"]:
        name, version = package["name"], package["version"]
        if name in LOCKED and _key(version) > _key(pins.get(name, "0")):
            pins[name] = version
    missing = set(LOCKED) - pins.keys()
    if missing:
        sys.exit(f"Flask's uv.lock pins no {sorted(missing)}")
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _venv(source: pathlib.Path, workdir: pathlib.Path, flask: str) -> str:
    venv = workdir / "venv"
    python = str(venv / "bin" / "python")
    if not venv.is_dir():
        _run([sys.executable, "-m", "venv", str(venv)], timeout=120, check=True)
    requirements = [f"flask=={flask}", *_locked(source)]
    result = _run([python, "-m", "pip", "install", "--quiet", "-e", str(ROOT), *requirements],
                  timeout=600)
    if result.returncode:
        sys.exit("installing the gate's virtualenv failed")
    return python


def _pytest(python: str, source: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_", "FLASK_"))}
    env["PYTHONPATH"] = str(ROOT)  # tests.flask_gate.plugin
    command = [python, "-X", "dev", "-m", "pytest", "-p", "tests.flask_gate.plugin",
               "-p", "no:cacheprovider", "-p", "no:randomly", f"--rootdir={source}",
               f"--confcutdir={source}", "-c", str(source / "pyproject.toml"), *args]
    return _run(command, timeout=1200, cwd=source, env=env, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=pathlib.Path, help="keep the download and venv here")
    options = parser.parse_args()
    flask = importlib.metadata.version("flask")
    with tempfile.TemporaryDirectory(prefix="flask-gate-") as scratch:
        workdir = options.workdir or pathlib.Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        source = _unpack(flask, workdir)
        python = _venv(source, workdir, flask)

        print(f"== Flask {flask}'s own suite, AioBridge on every app", flush=True)
        full = _pytest(python, source, "-q", "-ra", "tests")
        print(full.stdout[-3000:], full.stderr[-2000:], sep="\n", flush=True)
        if full.returncode != 0:
            print("FAILED: Flask's suite with AioBridge installed", file=sys.stderr)
            return 1

        print("== the gate's proof: the same async tests with the extension bypassed", flush=True)
        bypass = _pytest(python, source, "-q", "--aiobridge-bypass", "tests/test_async.py")
        print(bypass.stdout[-1500:], flush=True)
        errors = bypass.stdout.count("ERROR at teardown of")
        caught = bypass.stdout.count(f"\n{BYPASSED}: ")
        if bypass.returncode == 0 or caught != errors or caught < BYPASS_MIN_FAILURES:
            print(f"FAILED: {caught} of {errors} teardown errors name the bypass, expected "
                  f"at least {BYPASS_MIN_FAILURES} (exit {bypass.returncode})", file=sys.stderr)
            return 1
        print(f"the gate caught the bypass in {caught} test(s) of test_async.py", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
