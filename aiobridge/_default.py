"""The process-wide default bridge."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from ._fork import process_lock
from .bridge import AioThread
from .loop_thread import State

__all__ = ("default_bridge", "run")

T = TypeVar("T")

_default: AioThread | None = None


def default_bridge() -> AioThread:
    """The process-wide bridge, created and started on first use.

    It is fork-aware: in a forked child (gunicorn ``--preload``,
    ``multiprocessing`` with fork) the first call starts a fresh loop thread.
    If it was stopped, the next call makes a new one. It is stopped at exit.

    Example:
        >>> import aiobridge
        >>> aiobridge.default_bridge().running
        True
    """
    global _default
    bridge = _default
    if bridge is not None and bridge.running:
        return bridge
    # A lock of this process: one inherited through fork() may be held by a dead thread.
    with process_lock("aiobridge-default"):
        bridge = _default
        if bridge is None or bridge._core.state is State.STOPPED:
            bridge = _default = AioThread(name="aiobridge-default")
        return bridge.start()


def run(awaitable: Awaitable[T], *, timeout: float | None = None) -> T:
    """Run ``awaitable`` on the default bridge and return its result.

    Example:
        >>> import asyncio, aiobridge
        >>> aiobridge.run(asyncio.sleep(0, result="done"))
        'done'
    """
    return default_bridge().run(awaitable, timeout=timeout)
