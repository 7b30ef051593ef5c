"""The lifecycle of a loop thread.

::

    NEW ──start()──▶ RUNNING ──stop()──▶ STOPPING ──▶ STOPPED
     ▲                  │
     └──── os.fork() ───┘   (in the child: the parent's loop thread does not exist)

Calls are accepted only while RUNNING. A STOPPED loop thread never starts
again; a forked child's copy of a RUNNING or STOPPING one goes back to NEW
and starts a fresh thread on first use.
"""

from __future__ import annotations

import enum

__all__ = ("State",)


class State(enum.Enum):
    """Lifecycle of a loop thread."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
