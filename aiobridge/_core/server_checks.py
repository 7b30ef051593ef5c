"""Checks of the process hosting the bridge, made before its loop thread starts.

Today they concern uWSGI, which embeds Python and forks it from C: the checks
read its ``uwsgi`` module only if the process already has it (never import it).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import BridgeError

__all__ = ("check_host", "check_threads")


def check_host(name: str) -> None:
    """Refuse to start a loop thread where it could not work; say what to change.

    - uWSGI without ``--enable-threads`` (the default before 2.0.27) runs
      Python only while a request is served: the loop thread would be frozen
      between requests (timers, keep-alives, background tasks).
    - uWSGI's master about to fork workers without Python's fork hooks (the
      app is loaded in the master, the default without ``--lazy-apps``): a
      thread running at the fork leaves the workers' interpreter in a state
      where they crash (SIGSEGV). ``--py-call-uwsgi-fork-hooks`` makes the
      fork safe; ``--lazy-apps`` loads the app in each worker instead.

    Raises:
        BridgeError: the host cannot run the loop thread as configured.
    """
    check_threads(name)
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is not None and _in_uwsgi_master_before_fork(uwsgi):
        raise BridgeError(
            f"bridge {name!r} cannot start in the uWSGI master: its workers are forked "
            "from it without Python's fork hooks, and a thread running at the fork makes "
            "them crash. Start uWSGI with --py-call-uwsgi-fork-hooks, or with --lazy-apps "
            "(the app then loads in each worker), or make the first call in a request"
        )


def check_threads(name: str) -> None:
    """Refuse a host whose Python threads do not run (uWSGI without ``--enable-threads``).

    Raises:
        BridgeError: Python threads do not run in this process.
    """
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is not None and not getattr(uwsgi, "has_threads", True):
        raise BridgeError(
            f"bridge {name!r} cannot start: uWSGI runs Python without threads here, so "
            "its loop thread would be frozen whenever no request is running. Start "
            "uWSGI with --enable-threads (enable-threads = true in its ini file)"
        )


def _in_uwsgi_master_before_fork(uwsgi: Any) -> bool:
    options = getattr(uwsgi, "opt", {})
    if options.get("py-call-uwsgi-fork-hooks"):
        return False
    try:
        if options.get("master"):
            # Only the master itself: mules and the spooler have worker id 0 too.
            return bool(os.getpid() == int(uwsgi.masterpid()))
        processes = int(options.get("processes") or options.get("workers") or 1)
        return processes > 1 and int(uwsgi.worker_id()) == 0
    except (AttributeError, TypeError, ValueError):
        return False
