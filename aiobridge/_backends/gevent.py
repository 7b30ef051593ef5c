"""gevent support: the loop in a real OS thread inside a monkeypatched process.

After ``gevent.monkey.patch_all()`` (gunicorn ``-k gevent`` does it in each
worker) ``threading.Thread`` makes a greenlet, ``selectors.DefaultSelector``
yields to gevent's hub and ``socket.getaddrinfo`` runs on gevent's resolver.
A loop thread built from those would be one more greenlet on the hub: its
``select()`` would block every request, and every greenlet would see its
running loop as their own. :class:`GeventThreads` builds the loop thread from
the originals gevent keeps (``gevent.monkey.get_original``) instead:

* the thread is a real OS thread (the original ``_thread.start_new_thread``);
* the loop waits in the original selector (epoll), so it never touches the hub;
* ``run_in_executor``, ``asyncio.to_thread`` and DNS resolution run in real
  threads (:class:`NativeExecutor`), and the loop resolves names with the
  original ``socket.getaddrinfo``.

A caller of ``run()`` is a greenlet: it waits on a :class:`GreenletLock`,
which parks the greenlet on its hub (the other greenlets keep running) until
the loop thread wakes it through a gevent ``async`` watcher, the one wake-up
gevent's hub accepts from another OS thread.

gevent is never imported here unless it has already patched the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .threads import NativeLock, OsThreads

__all__ = ("GeventThreads", "GreenletLock", "NativeExecutor", "NativeThread", "active",
           "keep_hub_running")

T = TypeVar("T")

_EXECUTOR_JOIN_TIMEOUT = 5.0


def active() -> bool:
    """True if gevent has monkeypatched ``threading`` in this process.

    Never imports gevent: a process that has not imported it is not patched.

    Example:
        >>> from aiobridge._backends import gevent
        >>> gevent.active()  # in a process without gevent
        False
    """
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def _hub() -> Any:
    """The ``gevent.hub`` module (already imported by the patching)."""
    return importlib.import_module("gevent.hub")


@contextlib.contextmanager
def keep_hub_running() -> Iterator[None]:
    """Keep this thread's gevent hub running while the block waits for another thread.

    A greenlet waiting on a ``threading`` condition is woken by a thread-safe
    callback, which does not keep the hub alive: if nothing else does (a
    script with one greenlet), the hub stops with ``LoopExit``. A started
    ``async`` watcher that never fires keeps it running.
    """
    watcher = _hub().get_hub().loop.async_()
    watcher.start(_ignore)
    try:
        yield
    finally:
        watcher.close()


def _ignore() -> None:
    """Callback of a watcher that is never sent."""


def _original(module: str, name: str) -> Any:
    """The unpatched ``module.name`` that gevent saved when it patched."""
    return sys.modules["gevent.monkey"].get_original(module, name)


class GreenletLock:
    """A lock that a greenlet waits on without blocking its hub; released from any thread.

    Same contract as ``threading.Lock`` for ``acquire(blocking, timeout)`` and
    ``release()``. A blocked ``acquire`` starts an ``async`` watcher on the
    waiter's hub (it keeps the hub running even if no other greenlet is
    alive) and parks the greenlet; ``release()`` from another OS thread
    ``send()``s that watcher, which gevent allows from any thread.

    Args:
        get_hub: ``gevent.get_hub``.
        waiter: ``gevent.hub.Waiter``.
        guard: a native lock (orders ``release`` against the watcher's lifetime).
    """

    __slots__ = ("_get_hub", "_guard", "_locked", "_waiter", "_watcher")

    def __init__(self, get_hub: Callable[[], Any], waiter: type[Any], guard: NativeLock) -> None:
        self._get_hub = get_hub
        self._waiter = waiter
        self._guard = guard
        self._locked = False
        self._watcher: Any = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        with self._guard:
            if not self._locked:
                self._locked = True
                return True
            if not blocking:
                return False
            loop = self._get_hub().loop
            waiter = self._waiter()
            # Started under the guard: a send() before start() would be lost.
            watcher = self._watcher = loop.async_()
            watcher.start(waiter.switch, None)
        timer = None
        try:
            if timeout >= 0:
                timer = loop.timer(timeout)
                timer.start(waiter.switch, None)
            waiter.get()
        finally:
            if timer is not None:
                timer.close()
            with self._guard:
                self._watcher = None
                watcher.close()
                acquired = not self._locked
                self._locked = True
        return acquired

    def release(self) -> None:
        with self._guard:
            if not self._locked:
                raise RuntimeError("release unlocked lock")
            self._locked = False
            if self._watcher is not None:
                self._watcher.send()

    def locked(self) -> bool:
        return self._locked

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class NativeThread(threading.Thread):
    """A ``threading.Thread`` that runs in a real OS thread although threading is patched.

    ``start()`` uses the original ``_thread.start_new_thread``. ``join()`` waits
    on ``threading.Event``, which under patching is gevent's: a greenlet
    joining it lets the other greenlets run.

    Args:
        target: what the thread runs.
        name: the thread's name.
        start_new_thread: the original ``_thread.start_new_thread``.
    """

    def __init__(
        self, target: Callable[[], None], name: str, start_new_thread: Callable[..., int]
    ) -> None:
        super().__init__(target=target, name=name, daemon=True)
        self._start_native = start_new_thread
        self._native_ident: int | None = None
        self._launched = False
        self._finished = threading.Event()

    def start(self) -> None:
        if self._launched:
            raise RuntimeError("threads can only be started once")
        self._launched = True
        self._start_native(self._run_native, ())

    def _run_native(self) -> None:
        ident = self._native_ident = threading.get_ident()
        # As Thread._bootstrap does: current_thread() (and logging's threadName)
        # then name this thread instead of a "Dummy-N".
        threading._active[ident] = self  # type: ignore[attr-defined]
        try:
            self.run()
        finally:
            threading._active.pop(ident, None)  # type: ignore[attr-defined]
            self._finished.set()

    @property
    def ident(self) -> int | None:
        return self._native_ident

    def is_alive(self) -> bool:
        return self._launched and not self._finished.is_set()

    def join(self, timeout: float | None = None) -> None:
        if not self._launched:
            raise RuntimeError("cannot join thread before it is started")
        self._finished.wait(timeout)

    def __repr__(self) -> str:
        status = "started" if self.is_alive() else "stopped" if self._launched else "initial"
        return f"<{type(self).__name__}({self.name}, {status} daemon {self._native_ident})>"


class NativeExecutor(concurrent.futures.ThreadPoolExecutor):
    """A pool of real OS threads behind ``run_in_executor`` and ``asyncio.to_thread``.

    ``ThreadPoolExecutor`` itself would start greenlets on the loop thread's
    hub, which never runs: nothing submitted would ever finish. This pool
    keeps the same contract (it is one, for ``loop.set_default_executor``) on
    the original thread, lock and queue primitives.

    Args:
        threads: the gevent threads provider (original primitives).
        name: prefix of the worker threads' names.
        max_workers: at most this many worker threads (default as asyncio's).
    """

    def __init__(  # none of ThreadPoolExecutor's own state is used
        self, threads: GeventThreads, name: str, max_workers: int | None = None
    ) -> None:
        self._provider = threads
        self._name = name
        self._max = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._queue: Any = _original("queue", "SimpleQueue")()
        self._lock = threads.native_lock()
        self._idle = 0
        self._workers: list[NativeLock] = []
        self._closed = False

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.put((future, fn, args, kwargs))
            if self._idle:
                self._idle -= 1
            elif len(self._workers) < self._max:
                finished = self._provider.native_lock()
                finished.acquire()
                self._workers.append(finished)
                name = f"{self._name}_{len(self._workers)}"
                self._provider.start_thread(lambda: self._work(finished), name)
        return future

    def _work(self, finished: NativeLock) -> None:
        try:
            while (item := self._queue.get()) is not None:
                future, fn, args, kwargs = item
                del item
                if future.set_running_or_notify_cancel():
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as exc:
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
                del future, fn, args, kwargs
                with self._lock:
                    self._idle += 1
        finally:
            finished.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            for _ in self._workers:
                self._queue.put(None)
        if wait:
            for finished in self._workers:
                finished.acquire()
                finished.release()

    async def shutdown_async(self, wait_seconds: float) -> None:
        """``shutdown()`` that waits for the workers (bounded) without blocking the loop."""
        self.shutdown(wait=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        # Worker exit is only observable through their locks: a short poll, and
        # only at shutdown, where the workers normally end at once.
        while any(finished.locked() for finished in self._workers):
            if loop.time() >= deadline:
                return
            await asyncio.sleep(0.005)


class _OriginalResolverLoop(asyncio.SelectorEventLoop):
    """A selector loop that resolves names with the unpatched ``getaddrinfo``.

    The patched one would start a gevent hub and its thread pool in every
    executor thread that resolves a name.
    """

    async def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> Any:  # the typeshed type of getaddrinfo()'s result
        resolve = _original("socket", "getaddrinfo")
        return await self.run_in_executor(None, resolve, host, port, family, type, proto, flags)

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int = 0
    ) -> tuple[str, str]:
        resolve = _original("socket", "getnameinfo")
        return await self.run_in_executor(None, resolve, sockaddr, flags)


class GeventThreads(OsThreads):
    """Real OS threads, epoll and a real-thread executor in a gevent-patched process.

    One instance per loop thread (it owns that loop's executor).
    """

    def __init__(self) -> None:
        self._start_new_thread: Callable[..., int] = _original("_thread", "start_new_thread")
        self._allocate_lock: Callable[[], NativeLock] = _original("_thread", "allocate_lock")
        self._get_ident: Callable[[], int] = _original("_thread", "get_ident")
        self._executor: NativeExecutor | None = None
        self.waiting_for_loop = keep_hub_running
        hub = _hub()
        greenlet_lock = functools.partial(GreenletLock, hub.get_hub, hub.Waiter)
        self.caller_lock = lambda: greenlet_lock(self._allocate_lock())

    def submit_keepalive(self) -> Callable[[], None]:
        """Keep the caller's hub running until its ``submit()`` call is settled.

        A greenlet waiting on ``future.result()`` is woken by a thread-safe
        callback, which does not keep the hub alive: with no other greenlet or
        server running, the hub would conclude the wait can never end
        (``LoopExit``). A started ``async`` watcher holds the hub until the
        loop thread ``send()``s it (the returned function).
        """
        watcher = _hub().get_hub().loop.async_()
        watcher.start(watcher.close)
        return watcher.send  # type: ignore[no-any-return]

    def start_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = NativeThread(target, name, self._start_new_thread)
        thread.start()
        return thread

    def native_lock(self) -> NativeLock:
        return self._allocate_lock()

    def os_thread_ident(self) -> int:
        return self._get_ident()

    def selector_class(self) -> type[Any]:
        return _original("selectors", "DefaultSelector")  # type: ignore[no-any-return]

    def new_loop(self, selector: Any) -> asyncio.AbstractEventLoop:
        return _OriginalResolverLoop(selector)

    def prepare(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._executor = NativeExecutor(self, f"{name}-executor")
        loop.set_default_executor(self._executor)

    async def shutdown_executor(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._executor is not None:
            await self._executor.shutdown_async(_EXECUTOR_JOIN_TIMEOUT)
