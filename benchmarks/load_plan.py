"""What a run of the load test measures: the labels, the points, the plan.

A label is a mode of the demo (``bridge``, ``quart``...), optionally on
another server (``bridge@granian``) or with the bridge's loop on uvloop
(``bridge+uvloop``); :func:`server_of` says how to serve it. :class:`Plan`
bounds every load by count and time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from demo_flask import ALL_MODES

TARGET_CONCURRENCY = 32
TARGET_LATENCY_MS = 20
FANOUT_SECONDS = 0.05
FANOUT_CALLS = 10
FANOUT_FLOOR_MS = FANOUT_SECONDS * 1000
CANINES_LATENCY_MS = 15
MB = 1024 * 1024
#: The bridge mode on other servers, measured beside the modes by default: ``mode@server``.
DEPLOYMENTS = ("bridge@granian", "bridge@uvicorn", "bridge@gevent")
#: Every label a run may measure (``+uvloop``: the bridge's loop on uvloop).
LABELS = (*ALL_MODES, *DEPLOYMENTS, "bridge+uvloop", "bridge@granian+uvloop")
#: The points of the targets against the real alternatives (clients; 20 ms upstream).
PEER_CONCURRENCY = (32, 64)


def server_of(label: str) -> dict[str, Any]:
    """How to serve a label such as ``bridge@gevent`` or ``bridge@granian+uvloop``.

    Returns the keyword arguments of :class:`~benchmarks._gunicorn.DemoServer`
    besides the URLs: ``mode``, ``server``, ``worker_class`` and ``env``
    (``+uvloop`` runs the bridge's loop on uvloop: ``AIOBRIDGE_UVLOOP=1``).
    """
    base, _, option = label.partition("+")
    mode, _, where = base.partition("@")
    env = {"AIOBRIDGE_UVLOOP": "1"} if option == "uvloop" else {}
    if where == "gevent":
        return {"mode": mode, "server": "gunicorn", "worker_class": "gevent", "env": env}
    return {"mode": mode, "server": where or None, "worker_class": None, "env": env}


#: Seconds any one Redis call of the benchmark itself may take.
PROBE_TIMEOUT = 5.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What one run of the load test does; every load is bounded by count and time."""

    modes: tuple[str, ...] = (*ALL_MODES, *DEPLOYMENTS)
    concurrency: tuple[int, ...] = (1, 8, TARGET_CONCURRENCY, 64)
    latencies_ms: tuple[int, ...] = (0, TARGET_LATENCY_MS)
    rounds: int = 3
    duration: float = 3.0
    max_requests: int = 50_000
    warmup_requests: int = 200
    fanout_concurrency: tuple[int, ...] = (1, 8)
    fanout_requests: int = 40
    fanout_duration: float = 6.0
    canines_requests: int = 90
    canines_concurrency: int = 30
    workers: int = 1
    threads: int = 32
    request_timeout: float = 10.0

    @classmethod
    def quick(cls, **changes: Any) -> Plan:
        """About a minute, so ``python -m benchmarks --quick`` stays within 180 s on 2 cores.

        Every mode, and the bridge behind granian (the on-loop mode's targets
        read it; not the bridge's other deployments), at the points the targets
        read (32 and 64 clients, a 20 ms upstream), two short rounds each so
        every ratio still shows how far its rounds disagree.
        """
        base = {"modes": (*ALL_MODES, "bridge@granian"), "concurrency": PEER_CONCURRENCY,
                "latencies_ms": (TARGET_LATENCY_MS,), "rounds": 2, "duration": 0.8,
                "warmup_requests": 50, "fanout_concurrency": (1,), "fanout_requests": 8,
                "fanout_duration": 3.0}  # fmt: skip
        return cls(**{**base, **changes})
