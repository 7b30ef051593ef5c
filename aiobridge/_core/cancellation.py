"""Every cancellation the bridge makes, in one place.

Three things can go wrong when a task is cancelled, and this module owns them all:

1. **The cancellation is dropped.** ``task.cancel()`` throws ``CancelledError``
   into the coroutine once. A library that catches it and goes on
   (``asyncio.wait_for`` on Python 3.11 does so when the cancellation lands as
   the awaited operation finishes, CPython gh-86296) lets the coroutine run on
   to its end. :class:`Redeliverer` watches a task it cancelled, on the
   following passes of the loop, and tells two situations apart from the
   coroutine frames the task is suspended in:

   * the task resumed and now waits inside an ``except``/``finally`` block or
     an ``async with`` exit: the cancellation is on its way up and the cleanup
     is running, so it is left alone;
   * the task resumed and waits outside any exception handler: the
     cancellation was dropped, so it is cancelled again (at most
     :data:`MAX_DELIVERIES` times).

   Whether a frame is inside a handler is read from its code's exception table
   (:func:`dis.Bytecode`), checked once at import against a known function;
   where that check fails (a Python whose bytecode differs), nothing is
   re-delivered and dropped cancellations are only counted.
2. **The coroutine ends anyway** (returns, or raises something else): the
   caller still gets its timeout or cancellation; :meth:`Redeliverer.ignored`
   logs where to look, once per location.
3. **A task never ends** at shutdown: :func:`cancel_remaining` cancels every
   task left on a stopping loop, as ``asyncio.run`` does, but bounded.
"""

from __future__ import annotations

import asyncio
import dis
import functools
import logging
import types
from collections.abc import Awaitable, Callable
from typing import Any

from .awaitables import await_chain, location

__all__ = ("MAX_DELIVERIES", "REDELIVERY_AVAILABLE", "Redeliverer", "cancel_remaining")

logger = logging.getLogger("aiobridge")

# Checks on the next passes of the loop, then at growing intervals up to the cap.
_EAGER_CHECKS = 8
_FIRST_INTERVAL = 0.001
_MAX_INTERVAL = 0.1
#: Re-deliveries per task before aiobridge gives up on it.
MAX_DELIVERIES = 5
#: Seconds a cancelled task is watched; past them its caller is released anyway.
WATCH_SECONDS = 30.0
# Distinct places logged per loop; past this, only the counter grows.
_MAX_LOCATIONS = 1000


_COPY, _POP_EXCEPT, _RERAISE, _CLEANUP_THROW = (
    dis.opmap.get(name, -1) for name in ("COPY", "POP_EXCEPT", "RERAISE", "CLEANUP_THROW")
)


@functools.lru_cache(maxsize=2048)
def _handler_spans(code: types.CodeType) -> tuple[tuple[int, int], ...]:
    """Byte offsets ``[start, end)`` of ``code`` that run inside an exception handler.

    An instruction inside an ``except``/``finally`` body (or an ``async with``
    exit on an exception) is covered by an exception-table entry whose target
    restores the previous exception: ``COPY 3; POP_EXCEPT; RERAISE``. Around a
    ``yield``, Python 3.12+ adds an entry to a ``CLEANUP_THROW`` block, which is
    itself covered by the enclosing entry: that one is followed. Reads the raw
    bytecode (2 bytes an instruction; these four have no inline caches).
    """
    raw = code.co_code
    # Public since 3.11, not yet in typeshed.
    entries = dis.Bytecode(code).exception_entries  # type: ignore[attr-defined]

    def covering(offset: int) -> Any:
        return next((e for e in entries if e.start <= offset < e.end), None)

    def restores_exception(target: int) -> bool:
        return raw[target:target + 6:2] == bytes((_COPY, _POP_EXCEPT, _RERAISE)) \
            and raw[target + 1] == 3

    spans = []
    for entry in entries:
        target, seen = entry.target, set()
        while target not in seen and target < len(raw) and raw[target] == _CLEANUP_THROW:
            seen.add(target)
            outer = covering(target)
            if outer is None:
                break
            target = outer.target
        if restores_exception(target):
            spans.append((entry.start, entry.end))
    return tuple(spans)


def _in_handler(frame: types.FrameType) -> bool:
    lasti = frame.f_lasti
    return any(start <= lasti < end for start, end in _handler_spans(frame.f_code))


def _await_chain(task: asyncio.Task[Any]) -> tuple[object, list[types.FrameType]]:
    """The innermost object the task waits on, and the frames of the coroutines on the way."""
    chain = list(await_chain(task.get_coro()))
    return chain[-1][0], [frame for _, frame in chain if frame is not None]


class _OncePerPlace:
    """Remembers the places already logged, so each is logged once (bounded)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def first_time(self, where: str) -> bool:
        """True the first time ``where`` is seen (and while fewer than the cap are known)."""
        if where in self._seen or len(self._seen) >= _MAX_LOCATIONS:
            return False
        self._seen.add(where)
        return True


def _self_check() -> bool:
    async def probe() -> None:
        try:
            await asyncio.sleep(0)
        except KeyError:
            await asyncio.sleep(0)

    try:
        return bool(_handler_spans(probe.__code__))
    except Exception:  # a Python whose dis module differs
        return False


#: Whether this Python's bytecode is understood, so that dropped cancellations are re-delivered.
REDELIVERY_AVAILABLE = _self_check()


class _Watch:
    __slots__ = ("checks", "deadline", "deliveries", "gave_up", "mark", "on_give_up",
                 "on_redelivered", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float,
                 on_redelivered: Callable[[], None], on_give_up: Callable[[], None]) -> None:
        self.task = task
        self.deadline = deadline
        self.on_redelivered = on_redelivered
        self.on_give_up = on_give_up
        self.mark, _ = _await_chain(task)  # held, so its identity is not reused
        self.checks = 0
        self.deliveries = 0
        self.gave_up = False


class Redeliverer:
    """Cancels tasks and re-delivers cancellations they drop; lives on one loop.

    Args:
        loop: the loop the tasks run on; every method runs on its thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.enabled = REDELIVERY_AVAILABLE
        self._watches: dict[asyncio.Task[Any], _Watch] = {}
        self._redelivered = _OncePerPlace()
        self._ignored = _OncePerPlace()

    def cancel(
        self,
        task: asyncio.Task[Any],
        *,
        on_redelivered: Callable[[], None] = lambda: None,
        on_give_up: Callable[[], None] = lambda: None,
    ) -> bool:
        """Cancel ``task`` and watch that the cancellation is not dropped.

        ``on_redelivered`` runs the first time the task is cancelled again;
        ``on_give_up`` if it still runs after :data:`MAX_DELIVERIES`
        re-deliveries or :data:`WATCH_SECONDS`. Returns ``task.cancel()``.
        """
        if not task.cancel():
            return False
        if self.enabled and task not in self._watches:
            self._watches[task] = _Watch(task, self._loop.time() + WATCH_SECONDS,
                                         on_redelivered, on_give_up)
            self._loop.call_soon(self._check, task)
        return True

    def _check(self, task: asyncio.Task[Any]) -> None:
        watch = self._watches.get(task)
        if watch is None:
            return
        if task.done():
            del self._watches[task]
            return
        innermost, frames = _await_chain(task)
        if innermost is not watch.mark:  # the task ran since the last delivery
            watch.mark = innermost
            if not any(_in_handler(frame) for frame in frames):
                self._dropped(watch, frames)
                if watch.gave_up:
                    del self._watches[task]
                    return
        if self._loop.time() > watch.deadline:
            del self._watches[task]
            self._give_up(watch, f"still runs {WATCH_SECONDS:g} s after its cancellation")
            return
        watch.checks += 1
        if watch.checks <= _EAGER_CHECKS:
            self._loop.call_soon(self._check, task)
        else:
            delay = min(_MAX_INTERVAL, _FIRST_INTERVAL * 2 ** (watch.checks - _EAGER_CHECKS))
            self._loop.call_later(delay, self._check, task)

    def _dropped(self, watch: _Watch, frames: list[types.FrameType]) -> None:
        """The task waits outside any handler: its cancellation was dropped."""
        if watch.deliveries >= MAX_DELIVERIES:
            self._give_up(watch, f"dropped {MAX_DELIVERIES + 1} cancellations")
            return
        watch.deliveries += 1
        if watch.deliveries == 1:
            watch.on_redelivered()
            self._log_once(watch.task, frames)
        watch.task.cancel()

    def _give_up(self, watch: _Watch, why: str) -> None:
        watch.gave_up = True
        logger.error("aiobridge: task %r %s; its caller is released, the task keeps running",
                     watch.task.get_name(), why)
        watch.on_give_up()

    def _log_once(self, task: asyncio.Task[Any], frames: list[types.FrameType]) -> None:
        where = " <- ".join(
            f"{f.f_code.co_qualname} ({f.f_code.co_filename}:{f.f_lineno})"
            for f in reversed(frames[-3:])
        )
        if self._redelivered.first_time(where):
            logger.warning(
                "aiobridge cancelled task %r, but the cancellation was dropped and the task "
                "went on to %s; aiobridge cancelled it again (counted in "
                "stats().cancel_redelivered; logged once per location)", task.get_name(), where,
            )

    def ignored(self, awaitable: Awaitable[Any], error: BaseException | None) -> None:
        """``awaitable`` went on after its cancellation: it returned, or raised ``error``.

        Its caller still gets the timeout or cancellation; this logs where to
        look, once per location.
        """
        where = location(awaitable)
        if not self._ignored.first_time(where):
            return
        ended = "returned" if error is None else f"raised {type(error).__name__}"
        logger.warning(
            "aiobridge cancelled %s, but it %s instead of ending with CancelledError: "
            "something it awaits dropped the cancellation (its caller still got the "
            "timeout or cancellation; counted in stats().cancel_ignored; logged once "
            "per location)", where, ended, exc_info=error,
        )


# -- shutdown: every task left on a stopping loop ------------------------------------

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
    only: Callable[[], set[asyncio.Task[Any]]] | None = None,
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
        only: the tasks to cancel, if not every task of the loop (a loop the
            bridge adopted: the server owns its other tasks).
    """
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    deadline = loop.time() + grace
    def others() -> set[asyncio.Task[Any]]:
        if only is None:
            return _others(me)
        return {task for task in only() | cancelled if task is not me and not task.done()}

    pending = others()
    for task in pending - cancelled:
        cancel(task)
    if pending:
        await asyncio.wait(pending, timeout=grace * (1 - _RECANCEL_SHARE))
    for _ in range(RECANCEL_ROUNDS):
        pending = others()  # cleanup code may have started new tasks
        remaining = deadline - loop.time()
        if not pending or remaining <= 0:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=remaining / 2)
    pending = others()
    if pending:
        logger.warning(
            "aiobridge: bridge %r stopped although %d task(s) ignored cancellation for %s s; "
            "they are abandoned: %s",
            name, len(pending), grace, ", ".join(sorted(repr(t) for t in pending)[:5]),
        )


def _others(me: asyncio.Task[object] | None) -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task is not me and not task.done()}
