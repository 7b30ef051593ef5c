"""The report's section on the real alternatives: Quart, gevent, Flask's recipe.

Built from a run's ``results.json`` like the rest of :mod:`benchmarks.report`:
the eight modes side by side at the peer points (32 and 64 clients, 20 ms
upstream), the bridge's deployments, the fault outcomes of
:mod:`benchmarks.bm_faults`, and "which should I choose", whose every
sentence is phrased from the measured ratios.
"""

from __future__ import annotations

from typing import Any

from ._spread import ratio_rounds, spread, text
from .load_demo import PEER_CONCURRENCY, TARGET_LATENCY_MS, best_bridge, find_point, server_of

__all__ = ("PEER_ORDER", "best_label", "choose", "peer_section")

#: The modes a Flask developer weighs, in the order the tables show them.
PEER_ORDER = ("sync", "gevent", "embedded", "embedded-thread", "flask-async", "flask-recipe",
              "quart", "bridge")  # fmt: skip


def _result(document: dict[str, Any]) -> dict[str, Any]:
    load = document.get("benchmarks", {}).get("load_demo") or {}
    result: dict[str, Any] = load.get("result") or {}
    return result


def _labels(document: dict[str, Any]) -> list[str]:
    return [entry["mode"] for entry in _result(document).get("modes", [])]


def best_label(document: dict[str, Any]) -> str | None:
    """The bridge deployment the peer targets use (most req/s, no errors)."""
    return best_bridge(_result(document))


def _at(document: dict[str, Any], label: str | None, concurrency: int) -> dict[str, Any] | None:
    if label is None:
        return None
    return find_point(_result(document), label, concurrency, TARGET_LATENCY_MS)


def _ratio(point: dict[str, Any] | None, other: dict[str, Any] | None) -> dict[str, Any] | None:
    if not point or not other:
        return None
    return spread(ratio_rounds(point.get("rps_rounds") or [point["rps"]],
                               other.get("rps_rounds") or [other["rps"]]))  # fmt: skip


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _describe(label: str) -> str:
    where = server_of(label)
    server = where["server"] or ("uvicorn" if where["mode"] == "quart" else "gunicorn")
    kind = where["worker_class"] or ("gevent" if where["mode"] == "gevent" else "gthread")
    on = {"gunicorn": f"gunicorn {kind}", "uvicorn": "uvicorn" if where["mode"] == "quart"
          else "uvicorn + a2wsgi", "granian": "granian WSGI"}[server]  # fmt: skip
    return on + (", uvloop" if where["env"] else "")


def _table(document: dict[str, Any], labels: list[str], best: str | None) -> list[str]:
    headers = ["mode", "served by", "clients", "req/s", "best bridge ÷ mode", "p50 ms",
               "p99 ms", "errors", "worker CPU ms/answer", "upstream held", "Redis held"]
    lines = ["| " + " | ".join(headers) + " |", "|---|---|" + "---:|" * (len(headers) - 2)]
    for concurrency in PEER_CONCURRENCY:
        bridge = _at(document, best, concurrency)
        for label in labels:
            p = _at(document, label, concurrency)
            if p is None:
                continue
            name = f"**{label}**" if label == best else label
            lines.append("| " + " | ".join([
                name, _describe(label), str(concurrency), _cell(p["rps"]),
                text(_ratio(bridge, p)), _cell(p["p50_ms"]), _cell(p["p99_ms"]),
                _cell(p["errors"]), _cell(p.get("worker_cpu_ms_per_request"), 2),
                _cell(p.get("open_to_upstream_peak")), _cell(p.get("redis_clients_peak")),
            ]) + " |")  # fmt: skip
    return lines


def _mean(document: dict[str, Any], label: str | None, key: str) -> float | None:
    values = [p[key] for c in PEER_CONCURRENCY
              if (p := _at(document, label, c)) is not None and p.get(key) is not None]
    return sum(values) / len(values) if values else None


def choose(document: dict[str, Any]) -> str:
    """"Which should I choose": when a rewrite pays and when the bridge is enough, from numbers."""
    best = best_label(document)
    if best is None:
        return "No bridge deployment was measured without errors at the peer points."
    ratios = {peer: [r["median"] for c in PEER_CONCURRENCY
                     if (r := _ratio(_at(document, best, c), _at(document, peer, c)))]
              for peer in ("quart", "gevent", "flask-recipe")}  # fmt: skip
    cpu_best, cpu_quart = _mean(document, best, "worker_cpu_ms_per_request"), _mean(
        document, "quart", "worker_cpu_ms_per_request")
    parts = []
    quart = ratios["quart"]
    if quart:
        low, high = min(quart), max(quart)
        span = f"{low:.2f}x" if abs(high - low) < 0.005 else f"{low:.2f}x to {high:.2f}x"
        if low >= 0.9:
            parts.append(f"**Keep Flask and add the bridge** unless you are rewriting anyway: "
                         f"at {' and '.join(map(str, PEER_CONCURRENCY))} clients the bridge "
                         f"({best}, {_describe(best)}) served {span} Quart's requests/s, "
                         f"so a rewrite in Quart buys at most about "
                         f"{max(0.0, 1 / low - 1):.0%} more per worker.")  # fmt: skip
        else:
            parts.append(f"**A rewrite in Quart pays when one worker's throughput is what you "
                         f"buy**: the bridge ({best}, {_describe(best)}) served {span} "
                         f"Quart's requests/s, so Quart on uvicorn does up to "
                         f"{1 / low - 1:.0%} more per worker.")  # fmt: skip
        if cpu_best and cpu_quart:
            parts.append(f"Per answer the bridge's worker used {cpu_best:.2f} ms of CPU and "
                         f"Quart's {cpu_quart:.2f} ms ({cpu_best / cpu_quart:.2f}x): on a "
                         f"CPU-bound host that is the ratio of workers you need.")  # fmt: skip
    gevent, recipe = ratios["gevent"], ratios["flask-recipe"]
    if gevent:
        parts.append(f"Against gunicorn's gevent workers (monkeypatched requests and redis-py, "
                     f"no code change either) the bridge served {min(gevent):.2f}x to "
                     f"{max(gevent):.2f}x the requests/s, without patching the standard "
                     f"library.")  # fmt: skip
    if recipe:
        hung = _hangs(document)
        after = ""
        if hung.get("flask-recipe") and not hung.get("bridge"):
            after = (f", and it answered in every fault scenario, where the recipe hung in "
                     f"{len(hung['flask-recipe'])} ({', '.join(hung['flask-recipe'])})")
        parts.append(f"Against Flask's documented loop-thread recipe it served "
                     f"{min(recipe):.2f}x to {max(recipe):.2f}x{after}.")  # fmt: skip
    parts.append("Choose the rewrite when the code is being rewritten anyway or when per-worker "
                 "throughput is the bill; choose the bridge when the Flask views, extensions "
                 "and tests should stay as they are and a fraction of a worker is cheaper "
                 "than a migration.")  # fmt: skip
    return " ".join(parts)


def _hangs(document: dict[str, Any]) -> dict[str, list[str]]:
    """The fault scenarios in which each mode gave no answer."""
    rows = (document.get("benchmarks", {}).get("faults") or {}).get("rows") or []
    hangs: dict[str, list[str]] = {}
    for row in rows:
        if row["hang"]:
            hangs.setdefault(row["mode"], []).append(row["scenario"])
    return hangs


def _faults(document: dict[str, Any]) -> list[str]:
    faults = document.get("benchmarks", {}).get("faults") or {}
    rows = faults.get("rows") or []
    if not rows:
        return []
    from .bm_faults import format_table

    params = faults.get("params") or {}
    return ["", "### Fault outcomes per mode", "",
            f"Each client waits at most {params.get('deadline_s')} s (**bold**: no answer, a "
            f"hang). The app's own request deadline is {params.get('app_deadline_s')} s where "
            f"the mode has one (the bridge's `AIOBRIDGE_TIMEOUT`); the hung upstream takes "
            f"{params.get('hung_upstream_s')} s. Scenarios: `benchmarks/bm_faults.py`.", "",
            format_table(rows)]  # fmt: skip


def peer_section(document: dict[str, Any]) -> list[str]:
    """The section's markdown lines (empty when the run measured no peer)."""
    labels = _labels(document)
    if "quart" not in labels and "flask-recipe" not in labels and "gevent" not in labels:
        return _faults(document)
    best = best_label(document)
    modes = [m for m in PEER_ORDER if m in labels]
    deployments = [label for label in labels if server_of(label)["mode"] == "bridge"]
    return [
        "## The real alternatives: Quart, gevent workers, Flask's recipe",
        "",
        f"`GET /dog`, {TARGET_LATENCY_MS} ms upstream, one worker process each, the same "
        f"interleaved rounds as every mode. The best bridge deployment (most req/s at "
        f"{' and '.join(map(str, PEER_CONCURRENCY))} clients, no errors) is **{best}**.",
        "",
        "### Which should I choose",
        "",
        choose(document),
        "",
        "### The eight modes",
        "",
        *_table(document, [*modes, *(d for d in deployments if d not in modes)], best),
        "",
        "### Deployments of the bridge mode",
        "",
        *_table(document, deployments, best),
        *_faults(document),
        "",
    ]
