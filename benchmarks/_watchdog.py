"""A whole-run watchdog: a benchmark run that overruns is stopped and says where.

:class:`Watchdog` runs a daemon thread with the run's budget. The run tells it
where it is (:meth:`Watchdog.point`, fed by the progress messages). Past the
budget the watchdog names the point that overran and how long it had been
running, dumps every thread's stack to stderr, then sends SIGTERM to its own
process: the run's normal interrupt path stops the servers it started and
writes the partial results. If even that has not finished after ``grace``
seconds, it kills every child process and exits the process with status 3.

Example::

    with Watchdog(budget=600.0) as watchdog:
        watchdog.point("fan-out, 8 clients")
        ...
    if watchdog.overran:
        print(watchdog.overran)
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from typing import TextIO

import psutil

__all__ = ("EXIT_OVERRAN", "Watchdog")

#: The process's exit status when the watchdog had to kill it.
EXIT_OVERRAN = 3


class Watchdog:
    """Interrupts the run after ``budget`` seconds; kills it ``grace`` seconds later."""

    def __init__(self, budget: float, *, grace: float = 60.0, stream: TextIO | None = None) -> None:
        self.budget = budget
        self.grace = grace
        self.stream = stream or sys.stderr
        #: Why the run was stopped ("" while it has not been).
        self.overran = ""
        self._point = "start-up"
        self._point_since = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="benchmark-watchdog", daemon=True)

    def point(self, name: str) -> None:
        """Record what the run is doing now (named if the budget runs out)."""
        self._point, self._point_since = name, time.monotonic()

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _watch(self) -> None:
        if self._done.wait(self.budget):
            return
        running = time.monotonic() - self._point_since
        self.overran = (f"watchdog: the run overran its {self.budget:g} s budget at "
                        f"{self._point!r} (running for {running:.1f} s); stopping it")  # fmt: skip
        self._say(self.overran)
        faulthandler.dump_traceback(file=self.stream, all_threads=True)
        os.kill(os.getpid(), signal.SIGTERM)  # the run's own Ctrl-C path: servers stopped
        if self._done.wait(self.grace):
            return
        self._say(f"watchdog: still running {self.grace:g} s later; killing its children")
        children = psutil.Process().children(recursive=True)
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(children, timeout=10)  # gone (and reaped) before we exit
        os._exit(EXIT_OVERRAN)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join(5.0)
