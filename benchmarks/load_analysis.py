"""The load test's figures and targets, derived from a run's measurements.

:func:`find_point` looks a point up, :func:`check_targets` states every
end-to-end target as a ratio measured in the run (with its spread across
rounds), :func:`best_bridge` names the bridge deployment the peer targets use.
"""

from __future__ import annotations

import statistics
from typing import Any

from .load_plan import (
    FANOUT_CALLS,
    FANOUT_FLOOR_MS,
    PEER_CONCURRENCY,
    TARGET_CONCURRENCY,
    TARGET_LATENCY_MS,
    server_of,
)
from .results import check, p99_ratio, rps_ratio

__all__ = ("ONLOOP", "ONLOOP_VERSUS", "best_bridge", "check_targets", "find_point",
           "onloop_specs", "peer_specs")  # fmt: skip

#: The Flask app on the server's loop (the demo's ``bridge-loop`` mode).
ONLOOP = "bridge-loop"
#: What its targets compare it with, and the req/s ratio each must reach.
ONLOOP_VERSUS = (("quart", 1.0), ("bridge@granian", 1.3))


def find_point(result: dict[str, Any], mode: str, concurrency: int,
               latency_ms: int) -> dict[str, Any] | None:  # fmt: skip
    """The ``/dog`` point of ``mode`` at this concurrency and latency, if measured."""
    for entry in result.get("modes", []):
        if entry["mode"] == mode:
            for point in entry["points"]:
                if point["concurrency"] == concurrency and point["latency_ms"] == latency_ms:
                    return dict(point)
    return None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def check_targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The end-to-end targets, as ratios measured in this run (missing data: not met)."""
    at = {m["mode"]: find_point(result, m["mode"], TARGET_CONCURRENCY, TARGET_LATENCY_MS)
          for m in result.get("modes", [])}  # fmt: skip
    bridge = at.get("bridge") or {}
    where = f"/dog, {TARGET_CONCURRENCY} clients, {TARGET_LATENCY_MS} ms upstream"

    spreads: dict[str, dict[str, Any] | None] = {}

    def rps_spec(mode: str, bound: float) -> tuple[str, float | None, str, float]:
        """bridge req/s over ``mode``'s, round by round (the rounds are interleaved)."""
        label = f"bridge req/s >= {bound:g}x {mode} ({where})"
        spreads[label] = rps_ratio(at.get("bridge"), at.get(mode))
        return label, spreads[label]["median"] if spreads[label] else None, ">=", bound

    def held(mode: str, key: str) -> float | None:
        point = at.get(mode)
        return float(point[key]) if point else None

    specs: list[tuple[str, float | None, str, float]] = [
        rps_spec("flask-async", 3.0),
        rps_spec("embedded", 2.0),
        rps_spec("sync", 1.2),
        rps_spec("embedded-thread", 0.9),
        ("bridge Redis connections held <= 1/8 of embedded-thread's",
         _ratio(held("bridge", "redis_clients_peak"),
                held("embedded-thread", "redis_clients_peak")), "<=", 0.125),
        ("bridge upstream connections held <= 1/8 of embedded-thread's",
         _ratio(held("bridge", "open_to_upstream_peak"),
                held("embedded-thread", "open_to_upstream_peak")), "<=", 0.125),
        ("bridge errors == 0 (every load of the run)",
         float(sum(p["errors"] for p in _bridge_loads(result))) if bridge else None, "<=", 0.0),
    ]  # fmt: skip
    fanout = _fanout_p50(result, "bridge")
    specs.append((f"bridge fan-out {FANOUT_CALLS} x {FANOUT_FLOOR_MS:g} ms p50 <= 55 ms",
                  fanout, "<=", 55.0))  # fmt: skip
    growth = next((m["rss_growth_mb"] for m in result.get("modes", [])
                   if m["mode"] == "bridge"), None)  # fmt: skip
    specs.append(("bridge worker RSS growth <= 10 MB over the run", growth, "<=", 10.0))
    specs += peer_specs(result, spreads)
    specs += onloop_specs(result, spreads)
    return {label: check(value, op, bound, spreads.get(label))
            for label, value, op, bound in specs}


def best_bridge(result: dict[str, Any]) -> str | None:
    """The bridge deployment with the most req/s over the peer points, without errors.

    Candidates are ``bridge`` (gunicorn gthread) and every ``bridge@server``
    measured; the score is the mean req/s at :data:`PEER_CONCURRENCY` clients
    with the target upstream latency.
    """
    scores: dict[str, float] = {}
    for entry in result.get("modes", []):
        label = entry["mode"]
        if server_of(label)["mode"] != "bridge":
            continue
        points = [find_point(result, label, c, TARGET_LATENCY_MS) for c in PEER_CONCURRENCY]
        if all(p is not None and not p["errors"] for p in points):
            scores[label] = statistics.fmean(float(p["rps"]) for p in points if p is not None)
    return max(scores, key=scores.__getitem__) if scores else None


def peer_specs(
    result: dict[str, Any], spreads: dict[str, dict[str, Any] | None]
) -> list[tuple[str, float | None, str, float]]:
    """The targets against the real alternatives (Quart, gevent, Flask's recipe).

    req/s ratios are the median of the round-by-round ratios; their spread goes
    into ``spreads`` under the target's label.
    """
    best = best_bridge(result)
    specs: list[tuple[str, float | None, str, float]] = []
    for concurrency in PEER_CONCURRENCY:
        def at(label: str | None, c: int = concurrency) -> dict[str, Any] | None:
            return find_point(result, label, c, TARGET_LATENCY_MS) if label else None

        where = f"/dog, {concurrency} clients, {TARGET_LATENCY_MS} ms upstream"
        bridge = at(best)
        p99 = None if bridge is None else bridge["p99_ms"]
        for peer, bound in (("quart", 0.9), ("gevent", 1.5), ("flask-recipe", 1.2)):
            label = f"best bridge deployment ({best}) req/s >= {bound:g}x {peer} ({where})"
            spreads[label] = rps_ratio(bridge, at(peer))
            specs.append((label, spreads[label]["median"] if spreads[label] else None,
                          ">=", bound))  # fmt: skip
        for peer in ("quart", "gevent"):
            other = at(peer)
            label = f"best bridge deployment ({best}) p99 <= {peer}'s ({where})"
            spreads[label] = p99_ratio(bridge, other)
            plain = _ratio(p99, other["p99_ms"] if other else None)
            value = spreads[label]["median"] if spreads[label] else plain
            specs.append((label, value, "<=", 1.0))
    return specs


def onloop_specs(
    result: dict[str, Any], spreads: dict[str, dict[str, Any] | None]
) -> list[tuple[str, float | None, str, float]]:
    """The targets of the Flask app on the server's loop (``bridge-loop``, uvicorn+uvloop).

    At each peer point: req/s against Quart (>= 1.0x) and against the bridge
    behind granian WSGI (>= 1.3x), round by round; p99 and worker CPU per
    answer no more than Quart's. Then its fan-out p50.
    """
    specs: list[tuple[str, float | None, str, float]] = []
    if not any(entry["mode"] == ONLOOP for entry in result.get("modes", [])):
        return specs
    for concurrency in PEER_CONCURRENCY:
        where = f"/dog, {concurrency} clients, {TARGET_LATENCY_MS} ms upstream"
        mine = find_point(result, ONLOOP, concurrency, TARGET_LATENCY_MS)
        quart = find_point(result, "quart", concurrency, TARGET_LATENCY_MS)
        for peer, bound in ONLOOP_VERSUS:
            label = f"{ONLOOP} req/s >= {bound:g}x {peer} ({where})"
            spreads[label] = rps_ratio(mine, find_point(result, peer, concurrency,
                                                        TARGET_LATENCY_MS))  # fmt: skip
            specs.append((label, spreads[label]["median"] if spreads[label] else None,
                          ">=", bound))  # fmt: skip
        label = f"{ONLOOP} p99 <= quart's ({where})"
        spreads[label] = p99_ratio(mine, quart)
        specs.append((label, spreads[label]["median"] if spreads[label] else None, "<=", 1.0))
        cpu = [p.get("worker_cpu_ms_per_request") if p else None for p in (mine, quart)]
        specs.append((f"{ONLOOP} worker CPU per answer <= quart's ({where})",
                      _ratio(cpu[0], cpu[1]), "<=", 1.0))  # fmt: skip
    specs.append((f"{ONLOOP} fan-out {FANOUT_CALLS} x {FANOUT_FLOOR_MS:g} ms p50 <= 55 ms",
                  _fanout_p50(result, ONLOOP), "<=", 55.0))  # fmt: skip
    return specs


def _bridge_loads(result: dict[str, Any]) -> list[dict[str, Any]]:
    for entry in result.get("modes", []):
        if entry["mode"] == "bridge":
            return [*entry["points"], *entry["fanout"], entry["canines"]]
    return []


def _fanout_p50(result: dict[str, Any], mode: str, concurrency: int = 1) -> float | None:
    for entry in result.get("modes", []):
        if entry["mode"] == mode:
            for point in entry["fanout"]:
                if point["concurrency"] == concurrency and point["p50_ms"] is not None:
                    return float(point["p50_ms"])
    return None

