"""Hosts as Linux network namespaces, joined by a bridge (root only).

:class:`Network` makes a bridge in the root namespace (``10.213.X.1/24``: the
shared services, Redis and the upstream, bind it) and one namespace per host
(``10.213.X.11``, ``.12``, ...), each with a veth into the bridge. Commands run
in a host with :meth:`Host.command`. ``close()`` deletes every namespace and
link it made, and checks none is left (:func:`leftovers`). Only these
addresses and 127.0.0.1 are ever used; nothing is routed off the machine.

Example::

    with Network(hosts=2) as net:
        subprocess.run(net.hosts[0].command(["ip", "-br", "addr"]), check=True)
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from ..services.claims import Claim

__all__ = ("PREFIX", "Host", "NetnsError", "Network", "available", "leftovers", "orphans", "remove")

#: Every namespace and link made here starts with this.
PREFIX = "caas"
#: Subnets are ``10.213.<FIRST_OCTET + i>.0/24`` for ``i`` in ``range(SUBNETS)``.
FIRST_OCTET, SUBNETS = 20, 200
_SUBNET = "subnet"
_TIMEOUT = 10.0


class NetnsError(RuntimeError):
    """A namespace or link could not be made or removed."""


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_TIMEOUT,
                          check=False, stdin=subprocess.DEVNULL)  # fmt: skip
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def available() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``); None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        _ip("netns", "list")
    except (OSError, NetnsError) as exc:
        return f"cannot list network namespaces: {exc}"
    return None


def leftovers(tag: str = "") -> list[str]:
    """Namespaces and links of this module (of one network with ``tag``) still present."""
    mine = f"{PREFIX}{tag}"
    names = [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]
    links = [line.split()[0].split("@")[0] for line in _ip("-br", "link").splitlines()]
    return [n for n in names + links if n.startswith(mine)]


def orphans() -> list[str]:
    """Namespaces and links no live :class:`Network` owns: left behind.

    A network's subnet stays claimed from before its first namespace is made
    until after its last is deleted, so one whose claim is free has no owner
    (its process ended without closing it); those of networks other processes
    run at the same time (another test suite) are not orphans.
    """
    found = []
    for name in leftovers():
        octet = int(name[len(PREFIX) : len(PREFIX) + 3])
        claim = Claim.try_take(_SUBNET, octet - FIRST_OCTET)
        if claim is not None:
            claim.release()
            found.append(name)
    return found


def remove(tag: str) -> None:
    """Delete every namespace and link of the network with ``tag`` (a failed run's)."""
    for name in leftovers(tag):
        kind = "link" if name.endswith("r") else "netns"  # veths and the bridge end in "r"
        _ip(kind, "delete", name, check=False)


@dataclass(frozen=True)
class Host:
    """One host: its namespace and its address."""

    name: str
    address: str

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


class Network:
    """A bridge and ``hosts`` namespaces on subnet ``10.213.<octet>.0/24``."""

    def __init__(self, hosts: int) -> None:
        # The subnet is claimed (every process on the machine sees it) from here
        # until close(): two suites side by side never make the same one.
        self._claim = Claim.take(_SUBNET, SUBNETS)
        self.octet = FIRST_OCTET + self._claim.index
        self.tag = f"{self.octet:03d}"
        self.bridge = f"{PREFIX}{self.tag}br"
        self.gateway = f"10.213.{self.octet}.1"
        self.hosts = [Host(f"{PREFIX}{self.tag}h{i + 1}", f"10.213.{self.octet}.{11 + i}")
                      for i in range(hosts)]  # fmt: skip

    def open(self) -> Self:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for host in self.hosts:
                veth = f"{host.name}r"
                _ip("netns", "add", host.name)
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0",
                    "netns", host.name)  # fmt: skip
                _ip("link", "set", veth, "master", self.bridge, "up")
                _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
                _ip("-n", host.name, "link", "set", "eth0", "up")
                _ip("-n", host.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Delete the namespaces and the bridge; raise if any is left."""
        for host in self.hosts:
            _ip("netns", "delete", host.name, check=False)  # its veth pair goes with it
            _ip("link", "delete", f"{host.name}r", check=False)
        _ip("link", "delete", self.bridge, check=False)
        left = leftovers(self.tag)
        if not left:
            self._claim.release()
        if left:
            raise NetnsError(f"network namespaces or links left behind: {left}")

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()
