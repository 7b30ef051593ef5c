"""Failover drills: a Redis master dies (or is switched) under load, and what it cost.

:func:`redis_failover_drill` starts Redis with failover (``"sentinel"``: 1
master, 2 replicas, 3 sentinels; ``"cluster"``: 3 masters with a replica each),
the upstream, and the demo (bridge mode, gunicorn) pointed at it through
``REDIS_URL``, loads ``/dog`` (bounded), and runs each event in turn:

- ``sentinel-kill``: the master SIGKILLed;
- ``sentinel-switch``: ``SENTINEL FAILOVER`` (the master demoted, as a planned
  switch does);
- ``cluster-kill``: the master of the demo's slot SIGKILLed.

Per event it measures: ``promoted_s``, from the event until Redis names a new
master (every sentinel, or the Cluster's slot map with ``cluster_state:ok``);
``window_s``, from the first failed request to the end of the
last one; ``every_worker_s``, from the event until every worker has answered
a ``/dog`` that started after the promotion (so wrote to the new master).
Over the whole drill: each failed request must be a JSON 503 (no 500, no
request without an answer), and billing exact (the counter equals the number
of 200s: every 200 billed once, nothing billed for an error).

Example::

    result = redis_failover_drill("sentinel-kill")
    assert result.problems() == []
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field
from typing import Any

from ..catalog import BILLING_KEY
from ..redis_targets import sync_client
from ..services import HOST, AppServer, UpstreamServer
from ..services.redis_ha import ClusterGroup, SentinelGroup
from .load import Answer, Load

__all__ = ("KINDS", "DrillResult", "EventFigures", "event_figures", "redis_failover_drill")

#: Seconds a failover may take before the drill fails.
FAILOVER_TIMEOUT = 30.0
#: Seconds every worker has, after the promotion, to write to the new master.
RECOVERY_TIMEOUT = 30.0


@dataclass
class EventFigures:
    """What one failover event cost (seconds; counts of requests)."""

    event: str
    promoted_s: float
    window_s: float
    failed: int
    failed_by_kind: dict[str, int]
    every_worker_s: float
    served: int


@dataclass
class DrillResult:
    """A whole drill: its events and the totals billing is checked against."""

    kind: str
    workers: int
    events: list[EventFigures] = field(default_factory=list)
    ok: int = 0
    billed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    bad_bodies: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """What broke the drill's promises; empty when all held."""
        found = []
        wrong = {k: v for k, v in self.by_kind.items() if k not in ("200", "503")}
        if wrong:
            found.append(f"answers other than 200 and 503: {wrong}")
        if self.bad_bodies:
            found.append(f"503 answers that are not JSON errors: {self.bad_bodies[:3]}")
        if self.billed != self.ok:
            found.append(f"billing not exact: {self.billed} billed for {self.ok} answers 200")
        return found

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _kind(answer: Answer) -> str:
    return str(answer.status) if answer.status is not None else str(answer.error)


def event_figures(event: str, answers: list[Answer], began: float, promoted: float,
                  until: float, workers: set[str]) -> EventFigures:  # fmt: skip
    """The figures of one event from the answers of requests started in ``[began, until)``."""
    during = [a for a in answers if began <= a.start < until]
    failed = [a for a in during if not a.ok]
    window = max(a.end for a in failed) - min(a.start for a in failed) if failed else 0.0
    first_write: dict[str, float] = {}
    for answer in sorted(during, key=lambda a: a.end):
        if answer.ok and answer.start >= promoted and answer.worker in workers:
            first_write.setdefault(answer.worker, answer.end)
    every = max(first_write.values()) - began if len(first_write) == len(workers) else -1.0
    return EventFigures(event, round(promoted - began, 3), round(window, 3), len(failed),
                        dict(Counter(_kind(a) for a in failed)), round(every, 3),
                        sum(1 for a in during if a.ok))  # fmt: skip


def _workers_written_after(since: float, workers: set[str]) -> Callable[[list[Answer]], bool]:
    def check(answers: list[Answer]) -> bool:
        seen = {a.worker for a in answers[-2000:] if a.ok and a.start >= since}
        return workers <= seen

    return check


Event = tuple[str, Callable[[], Any], Callable[[Any], Any], Callable[[Any], Any]]


def _events(kind: str, group: SentinelGroup | ClusterGroup) -> list[Event]:
    """(name, act, wait until clients are sent to the new master, wait until settled)."""
    if isinstance(group, ClusterGroup):
        def cluster_settled(old: Any) -> Any:
            return group.wait_for_new_master(BILLING_KEY, old, FAILOVER_TIMEOUT)

        return [("SIGKILL master", lambda: group.kill_master_of(BILLING_KEY),
                 cluster_settled, cluster_settled)]  # fmt: skip

    def switched(old: Any) -> Any:
        return group.wait_for_switch(old, FAILOVER_TIMEOUT)

    def settled(old: Any) -> Any:
        return group.wait_for_new_master(old, FAILOVER_TIMEOUT)

    if kind == "sentinel-kill":
        return [("SIGKILL master", group.kill_master, switched, settled)]
    return [("SENTINEL FAILOVER", group.failover, switched, settled)]


#: The drills: Sentinel with its master SIGKILLed, Sentinel switched by ``SENTINEL
#: FAILOVER``, Cluster with the master of the demo's slot SIGKILLed.
KINDS = ("sentinel-kill", "sentinel-switch", "cluster-kill")


def redis_failover_drill(kind: str, *, workers: int = 2, threads: int = 8,
                         load_threads: int = 8, max_seconds: float = 120.0,
                         warmup: int = 200) -> DrillResult:  # fmt: skip
    """Run the drill of ``kind`` (``"sentinel"`` or ``"cluster"``); see the module doc.

    Raises:
        ServiceError, LoadError: a start, a failover or the recovery overran its deadline.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    group: SentinelGroup | ClusterGroup = (
        SentinelGroup() if kind.startswith("sentinel") else ClusterGroup())
    result = DrillResult(kind, workers)
    with ExitStack() as stack:
        stack.enter_context(group)
        upstream = stack.enter_context(UpstreamServer(seed_redis=group.url))
        app = stack.enter_context(AppServer(
            "bridge", redis_url=group.url, upstream_url=upstream.url, workers=workers,
            threads=threads, graceful_timeout=5))  # fmt: skip
        events = _events(kind, group)
        load = Load(HOST, app.port, "/dog?latency=0", threads=load_threads,
                    max_seconds=max_seconds, keepalive=False)  # fmt: skip
        with load:
            load.wait_for(lambda a: len({x.worker for x in a if x.ok}) >= workers
                          and sum(x.ok for x in a) >= warmup,
                          f"every one of {workers} workers answers /dog", 30)  # fmt: skip
            pids = {a.worker for a in load.answers if a.ok and a.worker}
            marks = []
            for name, act, switched, settled in events:
                began = time.monotonic()
                old = act()
                switched(old)
                promoted = time.monotonic()
                load.wait_for(_workers_written_after(promoted, pids),
                              f"after {name}: every worker writes to the new master",
                              RECOVERY_TIMEOUT)  # fmt: skip
                settled(old)
                marks.append((name, began, promoted))
        answers = list(load.answers)
    # The counter, read from the promoted master once everything stopped writing.
        with closing(sync_client(group.url, socket_timeout=2.0)) as client:
            result.billed = int(client.get(BILLING_KEY) or 0)
    ends = [m[1] for m in marks[1:]] + [float("inf")]
    result.events = [event_figures(name, answers, began, promoted, until, pids)
                     for (name, began, promoted), until in zip(marks, ends, strict=True)]
    result.ok = sum(1 for a in answers if a.ok)
    result.by_kind = dict(Counter(_kind(a) for a in answers))
    for answer in answers:
        if answer.status == 503 and not _json_error(answer.body):
            result.bad_bodies.append(answer.body[:120].decode(errors="replace"))
    return result


def _json_error(body: bytes) -> bool:
    try:
        return "error" in json.loads(body)
    except ValueError:
        return False
