"""A bounded, threaded HTTP load that keeps every answer, to measure a failover.

``threads`` closed-loop clients (``http.client``, one kept-alive connection
each) send ``GET path`` until ``max_requests`` have been sent or
``max_seconds`` have passed, whichever comes first; each request has its own
``timeout``. With ``keepalive=False`` each request has a connection of its
own, so a server's workers share the load (a kept-alive connection stays with
the worker that accepted it). Every request becomes one :class:`Answer`: its start and end
(``time.monotonic()``), the HTTP status or, when no answer came, what happened
instead (``timeout``, ``connection``), the worker (``X-Worker-Pid``) and the
host (``X-Served-By``, set by the balancer) that answered.

Example::

    with Load("127.0.0.1", 8000, "/dog?latency=0", threads=8) as load:
        load.wait_for(lambda answers: len(answers) > 100, "100 answers", 10)
    print(load.summary())
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

__all__ = ("Answer", "Load", "LoadError")


class LoadError(RuntimeError):
    """A load did not reach what it waited for in time, or did not stop."""


@dataclass(frozen=True)
class Answer:
    """One request: when it ran and what came back."""

    start: float
    end: float
    status: int | None  # None: no complete HTTP answer (see ``error``)
    #: When status is None: "timeout" or "connection" (no answer at all), or
    #: "cut" (its status and headers came, then the connection closed before
    #: the body's end: the process answering was killed mid-answer; ``server``
    #: says where).
    error: str | None = None
    worker: str | None = None
    server: str | None = None
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == 200


class Load:
    """Closed-loop load on ``http://host:port/path``; bounded in count and time.

    ``stop()`` (or leaving the ``with`` block) ends it: no new request
    starts, and the clients are joined within one request's ``timeout`` plus
    a margin (:class:`LoadError` if one does not return).
    """

    def __init__(self, host: str, port: int, path: str, *, threads: int = 8,
                 max_requests: int = 50_000, max_seconds: float = 120.0,
                 timeout: float = 10.0, keepalive: bool = True) -> None:  # fmt: skip
        self.host, self.port, self.path = host, port, path
        self.headers = {} if keepalive else {"Connection": "close"}
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.answers: list[Answer] = []
        self._budget = max_requests
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._deadline = 0.0
        self._threads = [threading.Thread(target=self._client, name=f"load-{i}", daemon=True)
                         for i in range(threads)]  # fmt: skip

    def start(self) -> Self:
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()
        return self

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self._budget <= 0 or time.monotonic() > self._deadline:
                return False
            self._budget -= 1
            return True

    def _client(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while self._take():
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            start = time.monotonic()
            response: http.client.HTTPResponse | None = None
            try:
                conn.request("GET", self.path, headers=self.headers)
                response = conn.getresponse()
                body = response.read()
                answer = Answer(start, time.monotonic(), response.status, None,
                                response.getheader("X-Worker-Pid"),
                                response.getheader("X-Served-By"),
                                b"" if response.status == 200 else body[:300])  # fmt: skip
                if response.will_close:
                    conn.close()
                    conn = None
            except TimeoutError:
                answer = Answer(start, time.monotonic(), None, "timeout")
                conn.close()
                conn = None
            except (OSError, http.client.HTTPException):
                if response is None:
                    answer = Answer(start, time.monotonic(), None, "connection")
                else:
                    answer = Answer(start, time.monotonic(), None, "cut",
                                    response.getheader("X-Worker-Pid"),
                                    response.getheader("X-Served-By"))  # fmt: skip
                conn.close()
                conn = None
            with self._changed:
                self.answers.append(answer)
                self._changed.notify_all()
        if conn is not None:
            conn.close()

    def wait_for(self, check: Callable[[list[Answer]], bool], what: str, timeout: float) -> None:
        """Block until ``check(answers)`` holds (evaluated on each new answer).

        Raises:
            LoadError: not within ``timeout`` seconds, or the load ended first.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not check(self.answers):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LoadError(f"load: {what}: not within {timeout}s "
                                    f"({self.summary_locked()})")  # fmt: skip
                if not any(t.is_alive() for t in self._threads):
                    raise LoadError(f"load: {what}: the load ended first ({self.summary_locked()})")
                self._changed.wait(min(remaining, 0.2))

    def stop(self) -> None:
        """No new request; join the clients (bounded)."""
        self._stop.set()
        deadline = time.monotonic() + self.timeout + 5.0
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            raise LoadError(f"load clients did not return: {stuck}")

    def summary_locked(self) -> str:
        kinds = Counter(a.status or a.error for a in self.answers)
        return ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items(), key=str))

    def summary(self) -> str:
        with self._lock:
            return self.summary_locked()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()
