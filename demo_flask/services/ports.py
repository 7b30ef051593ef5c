"""Ports on 127.0.0.1: pick a free one, test one as a server binds it, wait for one.

Every service of the demo binds :data:`HOST` only.

Example::

    port = free_port()
    ...  # start something that listens on it
    wait_for_port(port, timeout=10)
"""

from __future__ import annotations

import socket
import time

__all__ = ("HOST", "free_port", "port_is_free", "wait_for_port")

#: The only address the demo's services bind and connect to.
HOST = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now.

    The port is chosen by the kernel; another process could still take it
    before the caller binds it, which is why the servers retry.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` now, binding as gunicorn does.

    gunicorn (like most servers) sets ``SO_REUSEADDR`` before it binds, so a
    port whose old connections linger in ``TIME_WAIT`` (a restart right after
    Ctrl-C with keep-alive clients) is free for it; only a socket that is
    listening, or bound without that option, makes the bind fail.

    Example::

        if not port_is_free(8000):
            raise SystemExit("port 8000 is in use; pass --port")
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, *, timeout: float, host: str = HOST) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    Raises:
        TimeoutError: nothing listened within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)
