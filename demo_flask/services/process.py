"""The base of every service the demo starts: a child process with a bounded lifecycle.

:class:`ChildService` starts a command in its own session on 127.0.0.1, waits
(bounded) until it answers, and stops it (SIGTERM, a bounded wait, SIGKILL).
Subclasses say only what to run (``_command``) and when it is ready
(``_ready``); :mod:`.redis_server`, :mod:`.upstream_server` and
:mod:`.app_servers` are built on it, and so is ``python -m demo_flask``.
"""

from __future__ import annotations

import abc
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from ..interrupts import signals_deferred
from .ports import HOST, free_port

__all__ = ("REPO_ROOT", "ChildService", "ServiceError", "answers_health", "env_with_repo")

#: The repository's root: the children's working directory and first ``PYTHONPATH`` entry.
REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceError(RuntimeError):
    """A helper service did not start or stop as expected."""


def answers_health(url: str, timeout: float) -> bool:
    """Whether ``GET {url}/health`` answers 200 within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def env_with_repo(**overrides: str) -> dict[str, str]:
    """This process's environment plus ``overrides``, the repository first on ``PYTHONPATH``."""
    env = dict(os.environ, **overrides)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a child process: SIGTERM, a bounded wait, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class ChildService(abc.ABC):
    """Common lifecycle of a child-process service bound to 127.0.0.1.

    Args:
        port: TCP port; a free one when omitted (``restart()`` keeps it).
        startup_timeout: seconds ``start()`` waits for ``_ready()``.
        capture_output: keep the child's stdout and stderr for :meth:`output`
            (default); False lets them through to this process's own.
    """

    name = "service"

    def __init__(self, *, port: int | None, startup_timeout: float,
                 capture_output: bool = True) -> None:  # fmt: skip
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.capture_output = capture_output
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs, else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self.pid is not None

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The command line that starts the child."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """Whether the child answers requests yet."""

    def _env(self) -> dict[str, str] | None:
        return None

    def start(self) -> Self:
        """Start the child and wait (bounded) until it answers. Idempotent."""
        if self.running:
            return self
        if self.capture_output:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        try:
            # A Ctrl-C lands before the child exists or once self._proc holds it.
            with signals_deferred():
                self._proc = subprocess.Popen(
                    self._command(),
                    stdout=self._log,
                    stderr=subprocess.STDOUT if self.capture_output else None,
                    stdin=subprocess.DEVNULL,
                    env=self._env(),
                    cwd=REPO_ROOT,
                    start_new_session=True,  # Ctrl-C goes to the owner, which stops us in order
                )
            self._wait_until_ready()
        except BaseException:
            self.stop()  # failed, timed out or interrupted while starting: never left running
            raise
        return self

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while not self._ready():
            if self._proc.poll() is not None:
                raise ServiceError(self._with_output(
                    f"{self.name} exited with code {self._proc.returncode} at start"))
            if time.monotonic() > deadline:
                raise ServiceError(self._with_output(
                    f"{self.name} did not answer on {HOST}:{self.port} "
                    f"within {self.startup_timeout}s"))  # fmt: skip
            time.sleep(0.02)

    def _with_output(self, message: str) -> str:
        """``message``, then what the child wrote when its output is captured."""
        return f"{message}:\n{self.output()}" if self.capture_output else message

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the child, wait at most ``timeout`` seconds, then kill it. Idempotent."""
        if self._proc is not None:
            terminate(self._proc, timeout)
        self._close_log()

    def kill(self) -> None:
        """Kill the child abruptly (SIGKILL), as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5.0)

    def restart(self) -> Self:
        """Stop the child if it runs and start it again on the same port."""
        self.stop()
        return self.start()

    def output(self) -> str:
        """What the child has written to stdout and stderr so far ("" when not captured)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
