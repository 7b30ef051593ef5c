"""The demo's server (gunicorn, or uvicorn/granian) as a child process of a benchmark.

:class:`DemoServer` is :class:`demo_flask.services.AppServer` (one mode,
against Redis and an upstream the caller started once) that is ready only when
every worker is up, and exposes the worker pids for memory sampling and its
log's trouble markers.
"""

from __future__ import annotations

import psutil

from demo_flask.services import AppServer

__all__ = ("DemoServer", "rss_of")
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


class DemoServer(AppServer):
    """The demo's gunicorn for a benchmark: ready once every worker is up.

    Adds to :class:`~demo_flask.services.AppServer` the worker pids (for
    memory sampling), a scan of the log for trouble, and ``close()``, which
    stops gunicorn gracefully and returns its exit code.
    """

    def _ready(self) -> bool:
        return super()._ready() and len(self.worker_pids()) == self.workers

    def worker_pids(self) -> list[int]:
        """The pids of the workers: the master's children (uvicorn runs in one process)."""
        if self.pid is None:
            return []
        if self.server == "uvicorn":
            return [self.pid]
        try:
            return [child.pid for child in psutil.Process(self.pid).children()]
        except psutil.Error:
            return []

    def log(self) -> str:
        """What gunicorn wrote so far (stdout and stderr)."""
        return self.output()

    def log_problems(self) -> dict[str, int]:
        """How often each worrying marker (traceback, worker timeout…) appears in the log."""
        text = self.output()
        return {marker: text.count(marker) for marker in LOG_PROBLEMS if marker in text}

    def close(self) -> None:
        """Stop gunicorn (gracefully first) and drop its log."""
        self.stop(timeout=15.0)
