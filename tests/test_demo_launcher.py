"""``python -m demo_flask``: dependency and port checks, ``--check``, and Ctrl-C at any moment.

The launcher runs in a subprocess, as a user runs it. Interruptions are sent
when something observable happens (the launcher installed its handlers, printed
a start-up line, or a child process appeared), never after a sleep. Every
process the launcher starts carries a marker in its environment, so after the
launcher exits the test finds any survivor, grandchildren included.
"""

from __future__ import annotations

import configparser
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from demo_flask import ALL_MODES
from demo_flask.requirements import COMMON, MODE_NEEDS, SERVER_NEEDS, WORKER_CLASS_NEEDS
from demo_flask.services import free_port
from tests.helpers import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER = "DEMO_LAUNCHER_TEST_MARKER"
START_TIMEOUT = 90.0
EXIT_TIMEOUT = 60.0
FORBIDDEN = ("Traceback", "KeyboardInterrupt", "Interrupted", "Unclosed", "never awaited")


def _requirement(text: str) -> tuple[str, frozenset[str]]:
    """``("flask", {"async"})`` from ``"flask[async]>=3.0; python_version < '3.14'"``."""
    match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", text)
    assert match, text
    extras = frozenset(e.strip() for e in (match.group(2) or "").split(",") if e.strip())
    return match.group(1).lower().replace("_", "-"), extras


def _declared(*sections: str) -> set[tuple[str, frozenset[str]]]:
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    lines: list[str] = []
    for section in sections:
        option, _, extra = section.partition(":")
        raw = config["options.extras_require"][extra] if extra else config["options"][option]
        lines += [line for line in raw.splitlines() if line.strip()]
    return {_requirement(line) for line in lines}


def test_every_mode_has_a_requirements_line_and_the_demo_extra_installs_it() -> None:
    assert set(MODE_NEEDS) == set(ALL_MODES), "add the mode to demo_flask.requirements.MODE_NEEDS"
    declared = _declared("install_requires", "extras:demo")
    needs = [*COMMON, *(n for group in SERVER_NEEDS.values() for n in group),
             *(n for group in WORKER_CLASS_NEEDS.values() for n in group),
             *(n for mode in ALL_MODES for n in MODE_NEEDS[mode])]  # fmt: skip
    for need in needs:
        name, extras = _requirement(need.install)
        assert any(n == name and extras <= e for n, e in declared), (
            f"{need.install} ({need.module}) is not in the demo extra of setup.cfg")


def _launcher(*args: str, env: dict[str, str] | None = None,
              hide: str | None = None) -> list[str]:  # fmt: skip
    """The command running ``python -m demo_flask`` (with module ``hide`` made unimportable)."""
    if hide is None:
        return [sys.executable, "-X", "dev", "-m", "demo_flask", *args]
    code = (f"import runpy, sys; sys.modules[{hide!r}] = None; "
            f"sys.argv = ['demo_flask', *{list(args)!r}]; "
            "runpy.run_module('demo_flask', run_name='__main__', alter_sys=True)")  # fmt: skip
    return [sys.executable, "-X", "dev", "-c", code]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "UPSTREAM_URL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def test_a_missing_package_is_one_line_naming_the_fix_and_nothing_starts() -> None:
    done = subprocess.run(_launcher("--mode", "flask-async", "--port", "0", hide="asgiref"),
                          env=_env(), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "mode flask-async on gunicorn needs asgiref" in lines[0]
    assert "pip install 'flask[async]'" in lines[0]
    assert "starting" not in done.stderr


def test_a_busy_port_is_one_line_and_nothing_starts() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = subprocess.run(_launcher("--port", str(port)), env=_env(), cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"error: port {port} on 127.0.0.1 is in use; "
                                   f"pass --port (0 picks a free one)")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["flask-async", "bridge"])
def test_check_serves_dog_and_stops_everything(mode: str) -> None:
    launched = Launched.start("--check", "--mode", mode, "--port", "0", "--workers", "1",
                              "--threads", "4")  # fmt: skip
    code = launched.wait()
    assert code == 0, launched.stderr_text()
    assert f"check ok: mode {mode} served /dog" in launched.stdout_text()
    launched.assert_clean()


# -- Ctrl-C at any moment of start-up ----------------------------------------------------
@dataclass
class Launched:
    """A launcher subprocess, its output as it comes, and every process it started."""

    proc: subprocess.Popen[str]
    marker: str
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)
    seen: set[psutil.Process] = field(default_factory=set)

    @classmethod
    def start(cls, *args: str) -> Launched:
        marker = uuid.uuid4().hex
        proc = subprocess.Popen(_launcher(*args), env={**_env(), MARKER: marker},
                                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        launched = cls(proc, marker)
        for stream, into in ((proc.stdout, launched.stdout), (proc.stderr, launched.stderr)):
            reader = threading.Thread(target=_read, args=(stream, into), daemon=True)
            reader.start()
            launched.readers.append(reader)
        return launched

    def stdout_text(self) -> str:
        return "".join(self.stdout)

    def stderr_text(self) -> str:
        return "".join(self.stderr)

    def observe(self) -> None:
        """Note every process started under the launcher so far.

        Its process tree while it runs, and any process carrying this run's
        environment marker (a grandchild whose parent already exited).
        """
        try:
            self.seen.update(psutil.Process(self.proc.pid).children(recursive=True))
        except psutil.Error:
            pass
        for process in psutil.process_iter():
            try:
                if process.pid != self.proc.pid and process.environ().get(MARKER) == self.marker:
                    self.seen.add(process)
            except psutil.Error:
                continue

    def descendants(self) -> list[psutil.Process]:
        """The processes seen under this launcher that still run (zombies excluded)."""
        self.observe()
        alive = []
        for process in self.seen:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.Error:
                continue
        return alive

    def wait(self) -> int:
        """Wait for the launcher to exit (bounded), noting its processes until then."""
        deadline = time.monotonic() + EXIT_TIMEOUT
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill_all()
                pytest.fail(f"the launcher did not exit:\n{self.stderr_text()[-3000:]}")
            self.observe()
            time.sleep(0.01)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        for reader in self.readers:
            reader.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def kill_all(self) -> None:
        for process in [*self.descendants(), psutil.Process(self.proc.pid)]:
            try:
                process.kill()
            except psutil.Error:
                continue
        self.proc.wait(10)
        self._close()

    def assert_clean(self) -> None:
        survivors = self.descendants()
        for process in survivors:  # never leave them running for the next test
            try:
                process.kill()
            except psutil.Error:
                continue
        assert not survivors, [" ".join(_cmdline(p)) or p.pid for p in survivors]
        stderr = self.stderr_text()
        assert not [bad for bad in FORBIDDEN if bad in stderr], stderr[-3000:]


def _read(stream: object, into: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.append(line)


def _handlers_installed(pid: int) -> bool:
    """Whether the process catches SIGTERM (the launcher's handlers are in place)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(re.search(r"SigCgt:\s*([0-9a-f]+)", status).group(1), 16)  # type: ignore[union-attr]
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _child(launched: Launched, fragment: str) -> bool:
    return any(fragment in " ".join(_cmdline(p)) for p in launched.descendants())



def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


#: Observable moments of start-up, in order: when each holds, the signal is sent.
POINTS: dict[str, Callable[[Launched], bool]] = {
    "handlers installed": lambda run: _handlers_installed(run.proc.pid),
    "starting redis-server": lambda run: "starting redis-server" in run.stderr_text(),
    "redis-server running": lambda run: _child(run, "redis-server"),
    "starting the upstream": lambda run: "starting the upstream" in run.stderr_text(),
    "upstream running": lambda run: _child(run, "demo_flask.upstream"),
    "starting gunicorn": lambda run: "starting gunicorn" in run.stderr_text(),
    "gunicorn running": lambda run: _child(run, "gunicorn"),
    "gunicorn worker booted": lambda run: "Booting worker" in run.stderr_text(),
    "ready": lambda run: "Ctrl-C stops everything" in run.stdout_text(),
}  # fmt: skip


@pytest.fixture
def launch() -> Iterator[Callable[[], Launched]]:
    started: list[Launched] = []

    def start() -> Launched:
        launched = Launched.start("--port", str(free_port()), "--workers", "1", "--threads", "2")
        started.append(launched)
        return launched

    yield start
    for launched in started:
        if launched.proc.poll() is None:
            launched.kill_all()


#: SIGINT (Ctrl-C) at every point; SIGTERM (kill, a supervisor) at a few.
CASES = [(point, signal.SIGINT) for point in POINTS] + [
    ("upstream running", signal.SIGTERM), ("gunicorn running", signal.SIGTERM),
    ("ready", signal.SIGTERM)]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(("point", "signum"), CASES,
                         ids=[f"{p}-{signal.Signals(s).name}" for p, s in CASES])  # fmt: skip
def test_an_interrupt_at_any_point_of_start_up_stops_everything_cleanly(
    launch: Callable[[], Launched], point: str, signum: int
) -> None:
    launched = launch()

    def reached() -> bool:
        if POINTS[point](launched):
            return True
        if launched.proc.poll() is not None:
            pytest.fail(f"the launcher exited early:\n{launched.stderr_text()[-3000:]}")
        return False

    wait_until(reached, lambda: f"start-up reaching {point!r}:\n{launched.stderr_text()[-3000:]}",
               START_TIMEOUT)  # the launch fixture kills what is left
    os.kill(launched.proc.pid, signum)
    code = launched.wait()
    assert code == 0, launched.stderr_text()[-3000:]
    launched.assert_clean()
