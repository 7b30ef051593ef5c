"""Cancel every task still on a stopping loop, as ``asyncio.run`` does, but bounded.

``asyncio.run`` cancels the tasks left when its main coroutine returns and
waits for them without a limit. A loop thread cannot wait forever: a task that
swallows its cancellation would hang ``stop()``. :func:`cancel_remaining`
gives every task the grace period to run its cleanup (``finally``,
``async with``), cancels the ones that swallowed the cancellation again a few
times, and then gives up on them with a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

__all__ = ("cancel_remaining",)

logger = logging.getLogger("aiobridge")

#: Re-cancellations of a task that swallowed its cancellation, before giving up.
RECANCEL_ROUNDS = 3
# Part of the grace kept for those re-cancellations; the rest is the cleanup time.
_RECANCEL_SHARE = 0.25


async def cancel_remaining(
    cancelled: set[asyncio.Task[None]],
    grace: float,
    name: str,
    *,
    cancel: Callable[[asyncio.Task[Any]], object] = asyncio.Task.cancel,
) -> None:
    """Cancel every other task of the running loop; wait at most ``grace`` seconds.

    Args:
        cancelled: tasks the caller has cancelled already, its own way (a
            task of a call that has not started must not be cancelled before
            its first step); they are waited for too, and cancelled again only
            if they outlive the first wait.
        grace: seconds the tasks get, in total, to finish their cleanup.
        name: the bridge's name, for the log line.
        cancel: how to cancel a task the first time (the loop thread's
            re-delivering cancel, which notices a dropped cancellation at once).
    """
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    deadline = loop.time() + grace
    pending = _others(me)
    for task in pending - cancelled:
        cancel(task)
    if pending:
        await asyncio.wait(pending, timeout=grace * (1 - _RECANCEL_SHARE))
    for _ in range(RECANCEL_ROUNDS):
        pending = _others(me)  # cleanup code may have started new tasks
        remaining = deadline - loop.time()
        if not pending or remaining <= 0:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=remaining / 2)
    pending = _others(me)
    if pending:
        logger.warning(
            "aiobridge: bridge %r stopped although %d task(s) ignored cancellation for %s s; "
            "they are abandoned: %s",
            name, len(pending), grace, ", ".join(sorted(repr(t) for t in pending)[:5]),
        )


def _others(me: asyncio.Task[object] | None) -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task is not me and not task.done()}
