"""The demo on several hosts behind HAProxy, one shared Redis, and the host drill.

A host is a network namespace (:mod:`.netns`) running the demo's gunicorn
(bridge mode, ``demo_flask/gunicorn.conf.py``) on its own address; Redis (a
:class:`~demo_flask.services.redis_ha.SentinelGroup`) and the upstream dog
service bind the bridge's address in the root namespace, where HAProxy
(:mod:`.balancer`) listens on 127.0.0.1. :class:`Deployment` brings all of
it up and down (newest first, bounded, even when a start fails).

:func:`hosts_drill` loads ``/dog`` through the balancer, SIGKILLs one host's
gunicorn (master and workers) and SIGTERMs another's, and measures what the
issue asks: no request without an answer, the balancer routing around within
its check interval, the in-flight requests of the stopped host finishing,
and no double bill.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field
from typing import Any

from ..catalog import BILLING_KEY
from ..redis_targets import sync_client
from ..services import AppServer
from ..services.ports import free_port
from ..services.process import ChildService, answers_health, env_with_repo
from ..services.redis_ha import SentinelGroup, wait_for
from .balancer import HAProxy
from .load import Answer, Load
from .netns import Host, Network

__all__ = ("APP_PORT", "Deployment", "HostDrill", "HostServer", "hosts_drill")

#: The port the demo listens on, on each host's own address.
APP_PORT = 8000


class HostServer(AppServer):
    """The demo's gunicorn inside ``host``'s namespace, bound to its address."""

    def __init__(self, host: Host, **kw: Any) -> None:
        super().__init__(port=APP_PORT, **kw)
        self.host = host

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{self.port}"

    def _command(self) -> list[str]:
        argv = super()._command()
        argv[argv.index("--bind") + 1] = f"{self.host.address}:{self.port}"
        return self.host.command(argv)

    def crash(self) -> None:
        """SIGKILL the host's gunicorn, master and workers (its process group)."""
        pid = self.pid
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)


class SharedUpstream(ChildService):
    """The upstream dog service on ``address`` (the bridge), reachable from every host."""

    name = "upstream"

    def __init__(self, address: str) -> None:
        super().__init__(port=free_port(address), startup_timeout=20.0)
        self.address = address

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def _command(self) -> list[str]:
        code = ("import sys; from aiohttp import web; from demo_flask.upstream import create_app; "
                "web.run_app(create_app(), host=sys.argv[1], port=int(sys.argv[2]), "
                "print=None, access_log=None)")  # fmt: skip
        return [sys.executable, "-c", code, self.address, str(self.port)]

    def _env(self) -> dict[str, str]:
        return env_with_repo()

    def _ready(self) -> bool:
        return answers_health(self.url, timeout=0.5)


class Deployment:
    """``hosts`` hosts x ``workers`` workers, a Sentinel-watched Redis, HAProxy."""

    def __init__(self, hosts: int = 3, *, workers: int = 2, threads: int = 8,
                 graceful_timeout: int = 10, inter: float = 0.5,
                 fall: int = 2) -> None:  # fmt: skip
        self.network = Network(hosts)
        self.workers, self.threads = workers, threads
        self.graceful_timeout = graceful_timeout
        self.inter, self.fall = inter, fall
        self.redis = SentinelGroup(host=self.network.gateway)
        self.servers: list[HostServer] = []
        self.upstream: SharedUpstream | None = None
        self.balancer: HAProxy | None = None
        self._stack = ExitStack()

    def start(self) -> Deployment:
        try:
            self._stack.enter_context(self.network)
            self._stack.enter_context(self.redis)
            self.upstream = self._stack.enter_context(SharedUpstream(self.network.gateway))
            with closing(sync_client(self.redis.url, socket_timeout=2.0)) as client:
                from ..upstream import seed_redis

                client.ping()
                seed_redis(self.redis.url)
            for host in self.network.hosts:
                server = HostServer(host, mode="bridge", redis_url=self.redis.url,
                                    upstream_url=self.upstream.url, workers=self.workers,
                                    threads=self.threads,
                                    graceful_timeout=self.graceful_timeout)  # fmt: skip
                self.servers.append(self._stack.enter_context(server))
            self.balancer = self._stack.enter_context(HAProxy(
                {s.host.name: f"{s.host.address}:{s.port}" for s in self.servers},
                inter=self.inter, fall=self.fall))  # fmt: skip
            wait_for("HAProxy sees every host up",
                     lambda: set(self.balancer.states().values()) == {"UP"}, 30)  # type: ignore[union-attr]
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Everything down, newest first; the namespaces checked gone."""
        self._stack.close()

    def billed(self) -> int:
        with closing(sync_client(self.redis.url, socket_timeout=2.0)) as client:
            return int(client.get(BILLING_KEY) or 0)

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class HostEvent:
    """One host taken away: how fast the balancer noticed, what it cost."""

    event: str
    host: str
    routed_around_s: float
    errors: dict[str, int]
    in_flight: int = 0
    in_flight_ok: int = 0


@dataclass
class HostDrill:
    hosts: int
    check_interval_s: float
    fall: int
    events: list[HostEvent] = field(default_factory=list)
    ok: int = 0
    billed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    #: Answers cut short mid-body, by the host that sent them: only the one
    #: SIGKILLed can cut an answer (a process killed between writing its
    #: headers and its body); HAProxy has forwarded the headers by then.
    cut_on: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        found = []
        lost = {k: v for k, v in self.by_kind.items() if k in ("timeout", "connection")}
        if lost:
            found.append(f"requests without an answer: {lost}")
        killed = self.events[0].host if self.events else None
        elsewhere = {host: n for host, n in self.cut_on.items() if host != killed}
        if elsewhere:
            found.append(f"answers cut short by hosts that were not killed: {elsewhere}")
        errors = sum(v for k, v in self.by_kind.items() if k not in ("200",))
        if not self.ok <= self.billed <= self.ok + errors:
            found.append(f"billing: {self.billed} billed for {self.ok} answers 200 "
                         f"and {errors} errors")  # fmt: skip
        for event in self.events:
            if event.routed_around_s > (self.fall + 2) * self.check_interval_s:
                found.append(f"{event.event}: routed around after {event.routed_around_s}s")
            if event.in_flight_ok != event.in_flight:
                found.append(f"{event.event}: {event.in_flight - event.in_flight_ok} of "
                             f"{event.in_flight} in-flight requests did not finish")  # fmt: skip
        return found

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _kind(a: Answer) -> str:
    return str(a.status) if a.status is not None else str(a.error)


def _down(balancer: HAProxy, name: str) -> bool:
    return balancer.states().get(name, "").startswith("DOWN")


def hosts_drill(hosts: int = 3, *, latency_ms: int = 200, load_threads: int = 24,
                max_seconds: float = 90.0) -> HostDrill:  # fmt: skip
    """SIGKILL host 1's gunicorn, then SIGTERM host 2's, under load through HAProxy."""
    with Deployment(hosts) as deployment:
        balancer = deployment.balancer
        assert balancer is not None
        result = HostDrill(hosts, deployment.inter, deployment.fall)
        load = Load("127.0.0.1", balancer.port, f"/dog?latency={latency_ms}",
                    threads=load_threads, max_seconds=max_seconds,
                    keepalive=False)  # fmt: skip
        names = [s.host.name for s in deployment.servers]
        with load:
            load.wait_for(lambda a: set(names) <= {x.server for x in a if x.ok},
                          "every host serves /dog through HAProxy", 30)  # fmt: skip
            crashed, stopped = deployment.servers[0], deployment.servers[1]
            began = time.monotonic()
            crashed.crash()
            wait_for(f"HAProxy marks {crashed.host.name} down",
                     lambda: _down(balancer, crashed.host.name), 10, interval=0.02)  # fmt: skip
            result.events.append(HostEvent("SIGKILL gunicorn", crashed.host.name,
                                           round(time.monotonic() - began, 3), {}))  # fmt: skip
            marker = time.monotonic()
            load.wait_for(lambda a: sum(x.ok and x.start > marker for x in a) >= 50,
                          "50 answers after the crash", 30)  # fmt: skip
            stopping = time.monotonic()
            os.kill(stopped.pid or 0, signal.SIGTERM)
            wait_for(f"HAProxy marks {stopped.host.name} down",
                     lambda: _down(balancer, stopped.host.name), 10, interval=0.02)  # fmt: skip
            routed = round(time.monotonic() - stopping, 3)
            if not stopped.terminate(deployment.graceful_timeout + 10):
                raise RuntimeError(f"{stopped.host.name} did not stop gracefully")
            marker = time.monotonic()
            load.wait_for(lambda a: sum(x.ok and x.start > marker for x in a) >= 50,
                          "50 answers after the graceful stop", 30)  # fmt: skip
        answers = list(load.answers)
        result.billed = deployment.billed()
    on_stopped = [a for a in answers if a.server == stopped.host.name
                  and a.start < stopping < a.end]  # fmt: skip
    result.events.append(HostEvent("SIGTERM gunicorn", stopped.host.name, routed, {},
                                   len(on_stopped), sum(a.ok for a in on_stopped)))  # fmt: skip
    result.events[0].errors = dict(Counter(_kind(a) for a in answers
                                           if not a.ok and began <= a.end < stopping))
    result.events[1].errors = dict(Counter(_kind(a) for a in answers
                                           if not a.ok and a.end >= stopping))
    result.ok = sum(a.ok for a in answers)
    result.by_kind = dict(Counter(_kind(a) for a in answers))
    result.cut_on = dict(Counter(str(a.server) for a in answers if a.error == "cut"))
    return result
