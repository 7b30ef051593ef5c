"""The demo's gunicorn as a child process of a benchmark, on 127.0.0.1 only.

:class:`DemoServer` starts ``gunicorn -c demo_flask/gunicorn.conf.py`` in one
mode against services that already run (Redis and the upstream, started once
by the caller with :mod:`demo_flask.services`), waits (bounded) until
``/health`` answers, exposes the worker pids for memory sampling, and stops
the whole process group on exit, also on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import psutil

from demo_flask.services import HOST, free_port

__all__ = ("REPO_ROOT", "DemoServer", "rss_of")

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF = REPO_ROOT / "demo_flask" / "gunicorn.conf.py"
#: Lines of gunicorn's log that mean something went wrong in a worker.
LOG_PROBLEMS = ("Traceback", "WORKER TIMEOUT", "Unclosed", "Task was destroyed", "never awaited")


def rss_of(pids: list[int]) -> dict[int, int]:
    """Resident set size in bytes of each pid that still exists."""
    sizes: dict[int, int] = {}
    for pid in pids:
        try:
            sizes[pid] = psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return sizes


class DemoServer:
    """``gunicorn`` serving the demo in one mode (gthread workers).

    Args:
        mode: one of :data:`demo_flask.MODES`.
        redis_url: the Redis the app uses.
        upstream_url: the upstream dog service the app calls.
        workers: gunicorn worker processes.
        threads: threads per worker.
        startup_timeout: seconds to wait for ``/health``.
    """

    def __init__(
        self,
        mode: str,
        *,
        redis_url: str,
        upstream_url: str,
        workers: int = 1,
        threads: int = 32,
        startup_timeout: float = 60.0,
    ) -> None:
        self.mode = mode
        self.redis_url = redis_url
        self.upstream_url = upstream_url
        self.workers = workers
        self.threads = threads
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The base URL of the app."""
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        """The gunicorn command line."""
        return [
            sys.executable, "-m", "gunicorn",
            "--config", str(CONF),
            "--bind", f"{HOST}:{self.port}",
            "--workers", str(self.workers),
            "--threads", str(self.threads),
            "--graceful-timeout", "5",
        ]  # fmt: skip

    def start(self) -> Self:
        """Start gunicorn and wait until every worker is up and ``/health`` answers."""
        env = dict(os.environ, CAAS_MODE=self.mode, REDIS_URL=self.redis_url,
                   UPSTREAM_URL=self.upstream_url)  # fmt: skip
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        self._proc = subprocess.Popen(
            self.command(), env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
        )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        while not (self._healthy() and len(self.worker_pids()) == self.workers):
            if self._proc.poll() is not None:
                raise RuntimeError(f"gunicorn ({self.mode}) exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn ({self.mode}) not ready in time:\n{self.log()}")
            time.sleep(0.1)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def worker_pids(self) -> list[int]:
        """The pids of the gunicorn workers (children of the master)."""
        if self._proc is None or self._proc.poll() is not None:
            return []
        try:
            return [child.pid for child in psutil.Process(self._proc.pid).children()]
        except psutil.Error:
            return []

    def log(self) -> str:
        """What gunicorn wrote so far (stdout and stderr)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def log_problems(self) -> dict[str, int]:
        """How often each worrying marker (traceback, worker timeout…) appears in the log."""
        text = self.log()
        return {marker: text.count(marker) for marker in LOG_PROBLEMS if marker in text}

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the master (graceful), wait, then SIGKILL the group. Idempotent."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        return proc.returncode

    def close(self) -> None:
        """Stop gunicorn and drop its log."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
