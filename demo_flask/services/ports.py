"""Ports on 127.0.0.1: pick a free one, test one as a server binds it, wait for one.

Every service of the demo binds :data:`HOST` only (or, for the scale-out
drills, an address of a network namespace this machine made).

A port :func:`free_port` picks is free and stays ours until the service binds
it: it comes from a block of ports this process claimed (:mod:`.claims`), so
no other process using this module picks it, and the blocks sit below the
kernel's ephemeral range (``net.ipv4.ip_local_port_range``), so no ``bind()``
to port 0 and no outgoing connection anywhere on the machine takes it either.
A port picked from the ephemeral range could be taken between the check and
the server's bind (seen: two suites side by side, and the local end of a
Sentinel's connection).

Example::

    port = free_port()
    ...  # start something that listens on it
    wait_for_port(port, timeout=10)
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .claims import Claim, ClaimsExhaustedError

__all__ = ("CLUSTER_BUS_OFFSET", "HOST", "free_port", "free_port_pair", "port_is_free",
           "wait_for_port")  # fmt: skip

#: The only address the demo's services bind and connect to.
HOST = "127.0.0.1"
#: A Redis Cluster node also listens on its port plus this (the cluster bus).
CLUSTER_BUS_OFFSET = 10000
#: Ports per claimed block.
BLOCK = 100
#: :func:`free_port`'s ports start here and end below the ephemeral range.
SINGLES_START = 20000
#: :func:`free_port_pair`'s ports: [5000, 10000), their bus ports [15000, 20000).
PAIRS_START, PAIRS_STOP = 5000, 10000


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class _Blocks:
    """Blocks of ports this process claimed, handed out in turn, claimed as needed.

    None of the last :data:`BLOCK` ports handed out comes back (a caller may
    pick several before binding any): when every free port of the blocks held
    is that recent, another block is claimed.
    """

    def __init__(self, kind: str, start: int, stop: int) -> None:
        self.kind, self.start, self.stop = kind, start, stop
        self._claims: list[Claim] = []
        self._next = 0
        self._recent: collections.deque[int] = collections.deque(maxlen=BLOCK)
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def _ports(self) -> list[int]:
        return [self.start + c.index * BLOCK + i for c in self._claims for i in range(BLOCK)]

    def pick(self, usable: Callable[[int], bool]) -> int:
        """The next port of our blocks for which ``usable`` holds (a new block if none)."""
        with self._lock:
            while True:
                ports = self._ports()
                for step in range(len(ports)):
                    port = ports[(self._next + step) % len(ports)]
                    if port not in self._recent and usable(port):
                        self._next = (self._next + step + 1) % len(ports)
                        self._recent.append(port)
                        return port
                blocks = max(0, (min(self.stop, ephemeral_start()) - self.start) // BLOCK)
                try:
                    self._claims.append(Claim.take(f"ports-{self.kind}-{self.start}", blocks))
                except ClaimsExhaustedError as exc:
                    raise OSError(f"no free {self.kind} port below {self.stop}: {exc}") from None
                self._next = len(ports)


_singles = _Blocks("single", SINGLES_START, 65536)
_pairs = _Blocks("pair", PAIRS_START, PAIRS_STOP)


def _bindable(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now, strictly (no ``SO_REUSEADDR``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host``, that no other process will pick (see above).

    Raises:
        OSError: every block of ports is held by other processes.
    """
    return _singles.pick(lambda port: _bindable(host, port))


def free_port_pair(host: str = HOST) -> int:
    """A port free on ``host`` whose cluster bus port (+ :data:`CLUSTER_BUS_OFFSET`) is free too."""
    return _pairs.pick(lambda port: _bindable(host, port)
                       and _bindable(host, port + CLUSTER_BUS_OFFSET))  # fmt: skip


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
