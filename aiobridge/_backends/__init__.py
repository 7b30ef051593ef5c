"""Backends: where the loop thread gets its thread, locks, selector and executor.

:class:`~.threads.OsThreads` is the ordinary ``threading`` way. Under gevent's
monkeypatching those same names make greenlets on gevent's hub instead of OS
threads, so :func:`threads_for_this_process` picks
:class:`~.gevent.GeventThreads`, which asks gevent for the unpatched originals.
The choice is made when a loop thread starts, so a process patched after
``import aiobridge`` (gunicorn ``--preload``, then ``-k gevent``) still gets the
right one.

Backends import nothing of the core: the core calls them.
"""

from __future__ import annotations

from .threads import NativeLock, OsThreads

__all__ = ("NativeLock", "OsThreads", "threads_for_this_process")


def threads_for_this_process() -> OsThreads:
    """The backend for a loop thread starting now in this process."""
    from . import gevent

    if gevent.active():
        return gevent.GeventThreads()
    return OsThreads()
