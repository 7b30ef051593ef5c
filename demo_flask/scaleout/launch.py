"""``python -m demo_flask --cluster``: the demo on several hosts, to look at.

Brings up what the host drill runs (:class:`~demo_flask.scaleout.hosts.Deployment`):
``--hosts`` network namespaces each running the demo's gunicorn, a Sentinel
Redis and the upstream on the bridge, HAProxy on 127.0.0.1; prints the
addresses; Ctrl-C takes everything down (the namespaces are checked gone).
``--chaos SECONDS`` alternates, every SECONDS: SIGKILL the Redis master (the
crashed node is restarted as a replica the next round), SIGKILL a host's
gunicorn (restarted the next round); open the balancer's page meanwhile and
watch requests still being served. Needs root and haproxy.
"""

from __future__ import annotations

import shutil
import sys
import threading

from ..interrupts import Interrupted
from .netns import available

__all__ = ("run",)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(hosts: int, chaos: float | None) -> int:
    """Serve until Ctrl-C; 0 on a clean stop, 2 when this machine cannot run it."""
    problem = available() or (None if shutil.which("haproxy") else
                              "haproxy is not installed (apt-get install haproxy)")
    if problem:
        _say(f"error: --cluster: {problem}")
        return 2
    from .hosts import Deployment

    deployment = Deployment(hosts)
    try:
        _say(f"starting {hosts} hosts, a Sentinel Redis and HAProxy...")
        deployment.start()
        assert deployment.balancer is not None
        print("\n".join([
            f"Canines as a Service on {hosts} hosts behind HAProxy",
            f"  balancer  {deployment.balancer.url}/   (open it in a browser)",
            *(f"  host      {s.url}  ({s.host.name})" for s in deployment.servers),
            f"  redis     {deployment.redis.url}",
            f"  chaos     every {chaos}s" if chaos else "  chaos     off (--chaos SECONDS)",
            "Ctrl-C stops everything.",
        ]), flush=True)  # fmt: skip
        _serve(deployment, chaos)
    except Interrupted:
        _say("stopping...")
    finally:
        try:
            deployment.stop()
        except Interrupted:
            deployment.stop()
    return 0


def _serve(deployment: object, chaos: float | None) -> None:
    from .hosts import Deployment

    assert isinstance(deployment, Deployment)
    tick = threading.Event()
    crashed_redis: tuple[str, int] | None = None
    crashed_host = None
    round_ = 0
    while True:
        tick.wait(chaos if chaos else 3600.0)  # Ctrl-C raises Interrupted here
        if not chaos:
            continue
        round_ += 1
        if crashed_redis is not None:
            deployment.redis.restart_as_replica(crashed_redis, 30)
            _say(f"chaos: redis {crashed_redis} back as a replica")
            crashed_redis = None
        if crashed_host is not None:
            crashed_host.stop()  # the crashed process group's leftovers
            crashed_host.start()
            _say(f"chaos: {crashed_host.host.name} back")
            crashed_host = None
        if round_ % 2:
            crashed_redis = deployment.redis.kill_master()
            new = deployment.redis.wait_for_switch(crashed_redis, 30)
            _say(f"chaos: SIGKILL redis master {crashed_redis}; the sentinels chose {new}")
        else:
            crashed_host = deployment.servers[round_ // 2 % len(deployment.servers)]
            crashed_host.crash()
            _say(f"chaos: SIGKILL gunicorn on {crashed_host.host.name}")
