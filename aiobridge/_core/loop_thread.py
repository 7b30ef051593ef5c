"""The loop thread: one named daemon thread running one event loop, from start to stop.

:class:`LoopThread` owns the lifecycle (:mod:`.state`) and puts the parts
together: the :class:`~.handoff.Inbox` callers hand calls to, the
:class:`~.dispatch.Dispatcher` that runs them on the loop, the
:class:`~.health.LoopMonitor`, and the shutdown sequence (:mod:`.shutdown`).
:class:`~.portal.Portal` is the only object above the core that talks to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
import types
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from .._backends import NativeLock, OsThreads, threads_for_this_process
from ..errors import BridgeClosedError, BridgeError
from . import adopt as adoption
from . import fork, process, wakeup
from .calls import wake_now
from .dispatch import Dispatcher
from .handoff import Inbox
from .health import Counters, LoopMonitor
from .observers import Observer, observer_for
from .server_checks import check_host
from .shutdown import CANCEL_GRACE, CLOSER_TIMEOUT, settle_leftovers, shut_down
from .state import State

__all__ = ("LoopThread",)

logger = logging.getLogger("aiobridge")

_START_TIMEOUT = 10.0
# Captured at import, so that the deadlock guard compares idents made by the
# same function even if gevent patches ``threading`` in between.
_get_ident = threading.get_ident

#: An async cleanup step run at stop (a queue, a resource).
Closer = Callable[[], Awaitable[None]]


class LoopThread:
    """A daemon thread running an asyncio loop that executes submitted calls.

    Args:
        name: thread name (shown in stack dumps and ``ps -T``).
        loop_factory: makes the loop, e.g. ``uvloop.new_event_loop``.
        debug: asyncio debug mode.
        slow_callback_duration: threshold of the slow-callback detector (seconds).
        max_in_flight: at most this many calls run at once; the rest wait in order.
    """

    def __init__(
        self,
        name: str,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
        debug: bool,
        slow_callback_duration: float,
        max_in_flight: int | None,
    ) -> None:
        self.name = name
        self._loop_factory = loop_factory
        self._debug = debug
        self._slow_callback_duration = slow_callback_duration
        self._max_in_flight = max_in_flight
        #: What an observer factory is told of the bridge: the portal sets a weak
        #: reference to itself (a strong one would make a cycle).
        self.observed_as: Callable[[], Any] = weakref.ref(self)
        self._init_state()
        process.register(self)

    def _init_state(self, state: State = State.NEW, *, restarted_after_fork: bool = False) -> None:
        """The state of one life of the loop thread (a new one after a fork)."""
        self.state = state
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.thread_ident = 0
        self.inbox = Inbox(self)
        self.dispatcher: Dispatcher | None = None
        self.counters = Counters()
        self.monitor = LoopMonitor(self._slow_callback_duration)
        self.observer: Observer | None = None
        self.threads: OsThreads = OsThreads()
        self.closers: list[Closer] = []
        self.restarted_after_fork = restarted_after_fork
        #: Set by the shutdown sequence right before ``loop.stop()``.
        self.loop_stopped = False
        #: The loop is the running loop of another owner (a server's), see :mod:`.adopt`.
        self.adopted = False
        #: Set once an adopted loop thread has stopped; its coroutine waiters resolved then.
        self.stopped = threading.Event()
        self.stopped_waiters: list[asyncio.Future[None]] = []
        self._transition = threading.Lock()
        self._startup_error: BaseException | None = None
        # Last: a thread that sees this process's pid sees the whole fresh state.
        self.pid = os.getpid()

    # -- start -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread; return once its loop accepts work. Idempotent."""
        if self.pid != os.getpid():
            self.after_fork_in_child()
        with self._transition:
            if self.state is State.RUNNING:
                return
            if self.state is not State.NEW:
                raise BridgeClosedError(
                    f"bridge {self.name!r} is {self.state.value}; a stopped bridge cannot be "
                    "restarted, create a new AioThread"
                )
            check_host(self.name)
            self.observer = self.monitor.observer = observer_for(self.observed_as())
            # Chosen now, not at import: gevent may have patched the process since.
            threads = self.threads = threads_for_this_process()
            # A lock of the OS thread, even under gevent: this short wait must not
            # let another greenlet run while ``_transition`` is held.
            ready = threads.native_lock()
            ready.acquire()
            thread = threads.start_thread(lambda: self._main(ready, threads), self.name)
            if not ready.acquire(True, _START_TIMEOUT):
                raise BridgeError(f"loop thread {self.name!r} did not start within "
                                  f"{_START_TIMEOUT} s")
            if self._startup_error is not None:
                self.state = State.STOPPED
                raise BridgeError(
                    f"bridge {self.name!r} could not create its event loop: "
                    f"{self._startup_error!r}"
                ) from self._startup_error
            self.thread = thread

    def adopt(self) -> None:
        """Use the running loop of the calling thread instead of starting a thread.

        Idempotent on that loop. Raises ``RuntimeError`` outside a running loop,
        :class:`BridgeError` if the bridge already runs elsewhere or has stopped.
        """
        loop = asyncio.get_running_loop()
        if self.pid != os.getpid():
            self.after_fork_in_child()
        with self._transition:
            if self.state is State.RUNNING and self.loop is loop:
                return
            if self.state is not State.NEW:
                where = "runs its own loop thread" if self.state is State.RUNNING else (
                    f"is {self.state.value}")
                raise BridgeError(
                    f"bridge {self.name!r} {where}; a bridge can adopt the server's loop only "
                    "before its first use: create it (or call default_bridge()) after the "
                    "server has started, e.g. in the ASGI lifespan startup"
                )
            adoption.adopt(self, loop)

    async def stop_adopted(self, drain_seconds: float) -> None:
        """Stop an adopted loop thread from a coroutine on its loop (the server's shutdown).

        Returns once it has stopped, also if another caller began the stop.
        """
        with self._transition:
            begin = self.state is State.RUNNING
            if begin:
                self.state = State.STOPPING
        if begin:
            await adoption.stop_adopted(self, drain_seconds)
        elif self.adopted and not self.stopped.is_set():
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            self.stopped_waiters.append(done)
            await asyncio.wait_for(done, drain_seconds + CANCEL_GRACE + CLOSER_TIMEOUT + 5.0)

    def _main(self, ready: NativeLock, threads: OsThreads) -> None:
        """The loop thread's body: make the loop, run it until stopped, settle what is left."""
        selector: wakeup.WakingSelector | None = None
        try:
            if self._loop_factory is None:
                selector = wakeup.waking_selector(threads.selector_class())
                loop: asyncio.AbstractEventLoop = threads.new_loop(selector)
            else:
                loop = self._loop_factory()
            threads.prepare(loop, self.name)
            asyncio.set_event_loop(loop)
            loop.set_debug(self._debug)
            loop.slow_callback_duration = self._slow_callback_duration
            # Callers are woken just before the loop blocks, where it has a selector of ours.
            dispatcher = Dispatcher(
                loop, self.inbox, self.counters, self.observer, self._max_in_flight,
                wake=selector.pending.append if selector is not None else wake_now,
            )
            self.inbox.doorbell = wakeup.install(loop, dispatcher.drain)
        except BaseException as exc:
            if selector is not None:
                selector.close()
            self._startup_error = exc
            ready.release()
            return
        self.loop, self.dispatcher = loop, dispatcher
        if self.observer is not None:
            if selector is not None:
                # Gauges told when the loop next waits, not on every call.
                selector.before_wait = self.monitor.on_beat = dispatcher.report_gauges
            else:
                dispatcher.report_each_call = True
        self.thread_ident = _get_ident()
        self.pid = os.getpid()
        self.monitor.start(loop, self.name, threads, _IDLE_CODES)
        self.state = State.RUNNING
        if self.observer is not None:
            self.observer.loop_started(self.restarted_after_fork)
        ready.release()
        try:
            self._run_until_stopped(loop)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                logger.critical("aiobridge loop thread %r crashed", self.name, exc_info=exc)
            else:
                # Not a crash: something closed the loop's descriptor under it, as
                # uWSGI does to every descriptor before it re-executes itself (reload).
                logger.warning(
                    "aiobridge loop thread %r stopped: the descriptor of its event loop was "
                    "closed by another part of the process (e.g. a server reloading); calls "
                    "in flight were abandoned",
                    self.name,
                )
        except BaseException as exc:
            logger.critical("aiobridge loop thread %r crashed", self.name, exc_info=exc)
        finally:
            self._close(loop, dispatcher, selector)

    def _run_until_stopped(self, loop: asyncio.AbstractEventLoop) -> None:
        """``loop.run_forever()``, resumed after a user's SystemExit or KeyboardInterrupt.

        asyncio re-raises those two out of ``run_forever()`` when a task's step
        or a callback raises them. A task has stored the exception first (its
        awaiters get it), so the loop that every other thread depends on carries
        on; only the shutdown sequence stops it.
        """
        while True:
            try:
                loop.run_forever()
            except (SystemExit, KeyboardInterrupt) as exc:
                if self.loop_stopped:
                    return
                logger.debug("aiobridge: %r raised on the loop; delivered to its awaiters",
                             exc, exc_info=exc)
                continue
            if self.loop_stopped:
                return

    def _close(
        self,
        loop: asyncio.AbstractEventLoop,
        dispatcher: Dispatcher,
        selector: wakeup.WakingSelector | None,
    ) -> None:
        """The loop thread's last steps, however the loop ended."""
        self.state = State.STOPPED
        dispatcher.wake = wake_now
        dispatcher.closed = True
        if selector is not None:
            dispatcher.report_gauges()
            selector.flush()
        self.monitor.stop()
        if self.inbox.doorbell is not None:
            self.inbox.doorbell.detach()
        settle_leftovers(self, loop)
        asyncio.set_event_loop(None)
        with contextlib.suppress(OSError):  # a descriptor already closed under the loop
            loop.close()

    # -- stop --------------------------------------------------------------------------
    def stop(self, timeout: float) -> None:
        """Drain for up to ``timeout`` seconds, cancel the rest, close, join."""
        if self.pid != os.getpid():
            self.after_fork_in_child()
        with self._transition:
            if self.state is State.NEW:
                self.state = State.STOPPED
                return
            if self.state is State.RUNNING:
                assert self.loop is not None
                if self.adopted and (self.loop.is_closed() or not self.loop.is_running()):
                    # The server's loop has ended without a lifespan shutdown.
                    self.state = State.STOPPED
                    self._close_adopted_late()
                    return
                self.state = State.STOPPING
                self.loop.call_soon_threadsafe(self._begin_shutdown, timeout)
        if self.adopted:
            if self.stopped.is_set():
                return
            if self.thread_ident == _get_ident():
                raise BridgeError(
                    f"bridge {self.name!r} runs on this thread's loop: stop it with "
                    "'await bridge.astop()' in a coroutine (the ASGI lifespan shutdown)"
                )
            if not self.stopped.wait(timeout + CANCEL_GRACE + CLOSER_TIMEOUT + 5.0):
                logger.error("aiobridge bridge %r did not stop in time", self.name)
            return
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            # The drain and the cleanup are bounded on the loop side; the margin covers them.
            thread.join(timeout + CANCEL_GRACE + CLOSER_TIMEOUT + 5.0)
            if thread.is_alive():
                logger.error("aiobridge loop thread %r did not stop in time", self.name)

    def _begin_shutdown(self, timeout: float) -> None:
        assert self.loop is not None
        job = adoption.stop_adopted(self, timeout) if self.adopted else shut_down(self, timeout)
        self.loop.create_task(job, name=f"{self.name}-shutdown")

    def _close_adopted_late(self) -> None:
        """An adopted loop that is no longer running: settle every caller, keep nothing."""
        self.monitor.stop()
        if self.dispatcher is not None:
            self.dispatcher.closed = True
        if self.loop is not None:
            settle_leftovers(self, self.loop)
        self.stopped.set()

    def add_closer(self, closer: Closer) -> None:
        """Register an async cleanup step run at stop, last registered first."""
        self.closers.append(closer)

    def remove_closer(self, closer: Closer) -> None:
        """Forget a cleanup step registered with :meth:`add_closer`."""
        with contextlib.suppress(ValueError):
            self.closers.remove(closer)

    # -- fork --------------------------------------------------------------------------
    def after_fork_in_child(self) -> None:
        """Forget the parent's loop thread; the next call starts a fresh one.

        Runs once per process, however many threads race their first call
        (servers that fork without Python's at-fork hooks, such as uWSGI, get
        here lazily). Everything of the parent's loop is kept, untouched, for
        the life of the child: see :mod:`.fork`.
        """
        with fork.process_lock("aiobridge-fork-reset"):
            if self.pid == os.getpid():
                return  # another thread of this process did it
            inherited = dict(vars(self))
            state = self.state
            if isinstance(self.loop, asyncio.AbstractEventLoop):
                fork.detach_loop(self.loop)
            fork.keep(inherited)
            live = state in (State.RUNNING, State.STOPPING)
            self._init_state(State.NEW if live else state, restarted_after_fork=live)


#: The frames a loop thread shows while its loop waits for I/O inside
#: ``run_forever()`` written in C (uvloop); the watchdog reads them as idle.
_IDLE_CODES: frozenset[types.CodeType] = frozenset({
    LoopThread._main.__code__,
    LoopThread._run_until_stopped.__code__,
})
