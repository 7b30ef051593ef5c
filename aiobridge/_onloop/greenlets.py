"""One greenlet per request on the server's loop, and the switch between them.

A :class:`RequestGreenlet` runs one request's WSGI app on the loop's thread.
Whenever it must wait for something of the loop (a bridged call, the request
body, sending a piece of the response) it *switches* to the greenlet that
drives it, :meth:`Driver.drive`, a coroutine running in the request's asyncio
task: the driver awaits the awaitable and switches back with its result, or
throws its exception into the request greenlet (with its own traceback).

The request greenlet runs in the very ``contextvars.Context`` of the driving
task (as SQLAlchemy's asyncio layer does), so an awaitable the driver awaits
sees the request's context variables, and what it sets is seen by the view
afterwards, as with ``await``. A request greenlet that entered another context
(``ctx.run()``) has its awaitable run in a task of a copy of that context
instead, the changes copied back.

A client that goes away cancels the wait its request is in (the driver's
watcher cancels the request's task), and every later bridged wait of that
request fails at once with a cancellation, its awaitable closed, never run.

Fairness: a bridged call whose awaitable finishes without suspending (a cache
hit, a coroutine with nothing to wait for) never gives the loop a turn, so a
view looping over such calls would hold the loop, and starve every other
request, for as long as it loops. The driver therefore yields to the loop
(``await asyncio.sleep(0)``) before a call once :data:`SLICE` seconds have
passed since it last did: another request waits at most about a slice, and a
call pays one clock read.

The core consults :data:`SWITCHER` (registered with the core on import) when a
bridged call is made on the loop thread; it names what a stalled loop serves
for the watchdog.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet

from .._core import switch as core_switch
from .._core.awaitables import close_awaitables, close_unstarted
from .._core.context import copy_back

__all__ = ("SLICE", "SWITCHER", "Driver", "RequestGreenlet")

T = TypeVar("T")

#: Seconds a request may hold the loop through calls that never suspend before the
#: driver yields to the loop once (well under the watchdog's 0.1 s).
SLICE = 0.002

_clock = time.perf_counter

_getcurrent = greenlet.getcurrent
_get_ident = threading.get_ident


class RequestGreenlet(greenlet.greenlet):  # type: ignore[misc]
    """The greenlet of one request.

    Args:
        run: the request's work (the WSGI call), run in this greenlet.
        driver: the driver awaiting on its behalf.
        environ: its WSGI environ (what it serves, for the watchdog).
    """

    def __init__(self, run: Callable[[], None], driver: Driver, environ: dict[str, Any]) -> None:
        super().__init__(run)
        self.driver = driver
        self.environ = environ

    @property
    def label(self) -> str:
        """What it serves: the method and the route (``environ["aiobridge.route"]``, set by
        the Flask extension), else the path."""
        environ = self.environ
        route = environ.get("aiobridge.route") or environ.get("PATH_INFO") or "/"
        return f"{environ.get('REQUEST_METHOD', '?')} {route}"

    def await_(self, awaitable: Awaitable[T]) -> T:
        """Wait for ``awaitable`` on the loop, cancellable by the client going away.

        Once the client went away, it raises ``asyncio.CancelledError`` at once
        and closes ``awaitable``, never run.
        """
        driver = self.driver
        if driver.disconnected:
            close_awaitables((awaitable,))
            raise asyncio.CancelledError()
        if self.gr_context is driver.context:
            return driver.hand(awaitable, True)  # type: ignore[no-any-return]
        return self._await_in_own_context(awaitable)

    def io(self, awaitable: Awaitable[T]) -> T:
        """Wait for the server's ``receive()`` or ``send()`` (never cancelled by a disconnect)."""
        return self.driver.hand(awaitable, False)  # type: ignore[no-any-return]

    def _await_in_own_context(self, awaitable: Awaitable[T]) -> T:
        # The greenlet entered another context (ctx.run): the awaitable runs in a
        # task of a copy of it, and the changes come back as with await.
        context = contextvars.copy_context()

        async def in_task() -> T:
            if asyncio.iscoroutine(awaitable):
                return await asyncio.get_running_loop().create_task(awaitable, context=context)
            return await awaitable

        try:
            return self.driver.hand(in_task(), True)  # type: ignore[no-any-return]
        except BaseException:
            # Cancelled before in_task() began (a disconnect while the driver yielded).
            close_unstarted(awaitable)
            raise
        finally:
            copy_back(context)


class Driver:
    """Drives one request greenlet from the request's task on the loop.

    Args:
        context: the context of the request's task (the greenlet runs in it).
        receive: the ASGI ``receive`` (to watch for the client going away).
    """

    __slots__ = ("body_done", "cancellable", "context", "disconnected", "glet", "receive",
                 "task", "watcher")

    def __init__(self, context: contextvars.Context, receive: Callable[[], Awaitable[Any]]) -> None:
        self.context = context
        self.receive = receive
        self.glet: RequestGreenlet | None = None
        self.task: asyncio.Task[Any] | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.cancellable = False
        self.disconnected = False
        #: The request body was read to its end: ``receive()`` now only tells of a disconnect.
        self.body_done = False

    def hand(self, awaitable: Awaitable[Any], cancellable: bool) -> Any:
        """In the request greenlet: switch to the driver, which awaits ``awaitable``."""
        glet = self.glet
        assert glet is not None
        return glet.parent.switch((awaitable, cancellable))

    async def drive(self, glet: RequestGreenlet) -> None:
        """Run ``glet`` to its end, awaiting what it hands over (in the request's task)."""
        self.glet = glet
        self.task = task = asyncio.current_task()
        assert task is not None
        serving = SWITCHER.serving
        ident = _get_ident()
        server_cancelled = False
        try:
            serving[ident] = glet
            slice_end = _clock() + SLICE
            request = glet.switch()
            serving[ident] = None
            while not glet.dead:
                awaitable, cancellable = request
                if cancellable:
                    self.watch()
                self.cancellable = cancellable
                try:
                    if _clock() >= slice_end:  # give the other requests a turn (fairness)
                        await _yield_to_loop(awaitable)
                        slice_end = _clock() + SLICE
                    value = await awaitable
                except asyncio.CancelledError as exc:
                    if self.disconnected and task.cancelling():
                        task.uncancel()  # ours: the client went away
                    else:
                        server_cancelled = True
                    outcome: tuple[bool, Any] = (False, exc)
                except BaseException as exc:  # even SystemExit: it is the view's to see
                    outcome = (False, exc)
                else:
                    outcome = (True, value)
                finally:
                    self.cancellable = False
                serving[ident] = glet
                if outcome[0]:
                    request = glet.switch(outcome[1])
                else:
                    error = outcome[1]
                    del outcome
                    # With its traceback: greenlet would otherwise start a new one.
                    request = glet.throw(type(error), error, error.__traceback__)
                    del error
                serving[ident] = None
        finally:
            serving[ident] = None
            watcher = self.watcher
            if watcher is not None and not watcher.done():
                watcher.cancel()
                await asyncio.wait([watcher])
        if server_cancelled:
            raise asyncio.CancelledError()

    def watch(self) -> None:
        """Start watching for the client going away (once the body is read; idempotent)."""
        if self.watcher is None and self.body_done and not self.disconnected:
            self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Wait for ``http.disconnect``; cancel what the request waits for on the loop then."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
        self.disconnected = True
        if self.cancellable and self.task is not None:
            self.task.cancel()


async def _yield_to_loop(awaitable: Awaitable[Any]) -> None:
    """One pass of the loop before ``awaitable`` is awaited (closed if cancelled meanwhile)."""
    try:
        await asyncio.sleep(0)
    except BaseException:
        close_awaitables((awaitable,))
        raise


class Switcher:
    """The core's view of the request greenlets of this process (see ``_core.switch``)."""

    def __init__(self) -> None:
        #: For each loop thread (by ident), the request greenlet running on it now.
        self.serving: dict[int, RequestGreenlet | None] = {}

    def current(self) -> core_switch.Switch | None:
        glet = _getcurrent()
        if type(glet) is RequestGreenlet:
            return glet.await_
        return None

    def running(self, thread_ident: int) -> str | None:
        glet = self.serving.get(thread_ident)
        return None if glet is None else glet.label


SWITCHER = Switcher()
core_switch.register(SWITCHER)
