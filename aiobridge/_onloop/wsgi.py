"""PEP 3333 over ASGI, inside a request greenlet: the environ, the body, the response.

Everything here runs in the request's greenlet (:mod:`.greenlets`); reading
the body and sending the response switch to the driver, which awaits the
server's ``receive()`` and ``send()``. ``send()`` is where the server applies
backpressure (it waits while the client's socket is full), so a streamed
response never runs ahead of its client.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from types import TracebackType
from typing import Any

from .greenlets import Driver

__all__ = ("RequestBody", "Responder", "build_environ", "serve")

logger = logging.getLogger("aiobridge")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

#: Set in the environ of every request served on the loop (read by the Flask extension).
ON_LOOP_KEY = "aiobridge.on_loop"


def _native(text: str) -> str:
    """A PEP 3333 native string: the bytes of ``text`` (UTF-8 on the wire) as latin-1."""
    return text.encode("utf-8").decode("latin-1")


def build_environ(scope: Scope, body: RequestBody) -> dict[str, Any]:
    """The WSGI environ of an ASGI ``http`` scope."""
    script_name = _native(scope.get("root_path", "") or "")
    path_info = _native(scope["path"])
    if script_name and path_info.startswith(script_name):
        path_info = path_info[len(script_name):]
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]) if server[1] is not None else "80",
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,  # concurrent requests share the process (greenlets)
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "asgi.scope": scope,
        ON_LOOP_KEY: True,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        if key in environ:  # a repeated header: one value, as PEP 3333 and RFC 9110 say
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    return environ


class RequestBody:
    """``wsgi.input``: the request body, read from the server as the app asks for it.

    Args:
        driver: the request's driver (reads switch to it).
        receive: the server's ``receive``.
        first: the body of the first ``http.request`` message.
        more: whether more of the body follows.
    """

    def __init__(self, driver: Driver, receive: Callable[[], Awaitable[Message]],
                 first: bytes, more: bool) -> None:
        self._driver = driver
        self._receive = receive
        self._buffer = bytearray(first)
        self._more = more
        driver.body_done = not more

    def _fill(self) -> bool:
        """Read one more message of the body; False at its end."""
        if not self._more:
            return False
        message = self._driver.hand(self._receive(), False)
        if message["type"] == "http.disconnect":
            self._driver.disconnected = True
            self._more = False
        else:
            self._buffer += message.get("body", b"")
            self._more = bool(message.get("more_body", False))
        self._driver.body_done = not self._more
        return True

    def read(self, size: int | None = -1) -> bytes:
        buffer = self._buffer
        if size is None or size < 0:
            while self._fill():
                pass
            size = len(buffer)
        while len(buffer) < size and self._fill():
            pass
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n")
            limit = None if size is None or size < 0 else size
            if end >= 0 and (limit is None or end < limit):
                return self.read(end + 1)
            if limit is not None and len(buffer) >= limit:
                return self.read(limit)
            if not self._fill():
                return self.read(len(buffer))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class Responder:
    """``start_response`` and the sending of the response, for one request.

    Args:
        driver: the request's driver (sends switch to it).
        send: the server's ``send``.
    """

    def __init__(self, driver: Driver, send: Send) -> None:
        self._driver = driver
        self._send = send
        self._status: int | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self.started = False  # http.response.start was sent
        self.error: BaseException | None = None  # raised after the start: the server aborts

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: ExcInfo | None = None) -> Callable[[bytes], None]:
        """PEP 3333's ``start_response``."""
        if exc_info is not None:
            try:
                if self.started:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no cycle through the traceback
        elif self._status is not None:
            raise RuntimeError("start_response() was already called for this request "
                               "(pass exc_info to replace the status after an error)")
        if not isinstance(status, str) or len(status) < 3 or not status[:3].isdigit():
            raise ValueError(f"invalid WSGI status line {status!r}")
        self._status = int(status[:3])
        self._headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                         for name, value in headers]
        return self.write

    def write(self, data: bytes) -> None:
        """Send a piece of the body (the ``write`` callable, and each item of the iterable)."""
        if self._status is None:
            raise RuntimeError("the WSGI app sent body before calling start_response()")
        driver = self._driver
        if not self.started:
            self.started = True
            driver.hand(self._send({"type": "http.response.start", "status": self._status,
                                    "headers": self._headers}), False)
            if driver.body_done:
                driver.watch()  # a stream ends when its client goes away
        if data:
            driver.hand(self._send({"type": "http.response.body", "body": bytes(data),
                                    "more_body": True}), False)

    def finish(self) -> None:
        """End the response."""
        if not self.started:
            self.write(b"")
        self._driver.hand(self._send({"type": "http.response.body", "body": b"",
                                      "more_body": False}), False)

    def fail(self, error: BaseException) -> None:
        """The app raised: a 500 if nothing was sent yet, else the server aborts the response."""
        if self.started:
            self.error = error
            return
        logger.error("aiobridge: the WSGI app raised while serving a request", exc_info=error)
        self._status = 500
        self._headers = [(b"content-type", b"text/plain; charset=utf-8")]
        self.write(b"Internal Server Error")
        self.finish()


def serve(app: Callable[..., Iterable[bytes]], environ: dict[str, Any],
          responder: Responder, driver: Driver) -> None:
    """Call the WSGI app and send its response; runs in the request greenlet."""
    try:
        iterable = app(environ, responder.start_response)
    except BaseException as exc:  # even SystemExit: one request fails, the server lives on
        responder.fail(exc)
        return
    try:
        for chunk in iterable:
            if driver.disconnected:
                break  # the client went away: closing the iterable stops its producer
            responder.write(chunk)
        if not driver.disconnected:
            responder.finish()
    except BaseException as exc:
        if not driver.disconnected:
            responder.fail(exc)
        # else: the client went away, which ended the stream: nothing more to tell
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                logger.exception("aiobridge: close() of the WSGI response raised")
