"""The scale-out drills' load client tells a cut answer from no answer (no root needed)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from demo_flask.scaleout.load import Load

#: Headers promising 100 bytes, then 5 and the end: a server killed mid-answer.
CUT = (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Served-By: h9\r\n"
       b"X-Worker-Pid: 42\r\nConnection: close\r\n\r\nshort")  # fmt: skip


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[int]:
    """A server on a free 127.0.0.1 port answering each request with ``request.param``."""
    listener = socket.create_server(("127.0.0.1", 0))
    reply: bytes = request.param

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the listener was shut down: the test is over
                return
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone would not)
        listener.close()
        thread.join(10)
        assert not thread.is_alive()


@pytest.mark.parametrize(("server", "kind", "served_by"),
                         [(CUT, "cut", "h9"), (b"", "connection", None)],
                         indirect=["server"], ids=["headers-then-close", "nothing"])  # fmt: skip
def test_a_cut_answer_is_told_from_no_answer(server: int, kind: str, served_by: str) -> None:
    with Load("127.0.0.1", server, "/dog", threads=1, max_requests=3, max_seconds=30,
              keepalive=False) as load:  # fmt: skip
        load.wait_for(lambda answers: len(answers) == 3, "3 answers", 30)
    assert [(a.status, a.error, a.server) for a in load.answers] == [(None, kind, served_by)] * 3
