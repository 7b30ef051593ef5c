"""The report's section on the real alternatives: Quart, gevent, Flask's recipe.

Built from a run's ``results.json`` like the rest of :mod:`benchmarks.report`:
the modes side by side at the peer points (32 and 64 clients, 20 ms
upstream), the bridge's deployments, the fault outcomes of
:mod:`benchmarks.bm_faults`, and "which should I choose", whose every
sentence is phrased from the measured ratios.
"""

from __future__ import annotations

from typing import Any

from .load_analysis import ONLOOP, best_bridge, find_point
from .load_plan import PEER_CONCURRENCY, TARGET_LATENCY_MS, server_of
from .results import MODE_ORDER, rps_ratio, text

__all__ = ("best_label", "choose", "peer_section", "served_by")


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


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def served_by(label: str) -> str:
    """The server (and worker kind) that runs ``label`` in the load test."""
    where = server_of(label)
    if where["mode"] == ONLOOP:
        return "uvicorn, on its loop (uvloop, httptools)"
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
                name, served_by(label), str(concurrency), _cell(p["rps"]),
                text(rps_ratio(bridge, p)), _cell(p["p50_ms"]), _cell(p["p99_ms"]),
                _cell(p["errors"]), _cell(p.get("worker_cpu_ms_per_request"), 2),
                _cell(p.get("open_to_upstream_peak")), _cell(p.get("redis_clients_peak")),
            ]) + " |")  # fmt: skip
    return lines


def _shared(document: dict[str, Any]) -> str:
    """What the machine's load says about the figures."""
    before = (document.get("machine") or {}).get("load_average")
    after = document.get("load_average_after")
    if not before and not after:
        return ""
    return (f"The machine was shared with other work during the run (load average "
            f"before {before}, after {after}): a process's req/s also carries the share of "
            f"the CPU it happened to get, so the worker CPU per answer is the steadier "
            f"figure.")  # fmt: skip


def _mean(document: dict[str, Any], label: str | None, key: str) -> float | None:
    values = [p[key] for c in PEER_CONCURRENCY
              if (p := _at(document, label, c)) is not None and p.get(key) is not None]
    return sum(values) / len(values) if values else None


def _cpu_ratio(document: dict[str, Any], label: str | None, peer: str) -> float | None:
    """``label``'s worker CPU per answer over ``peer``'s, averaged over the peer points."""
    mine, theirs = (_mean(document, label, "worker_cpu_ms_per_request"),
                    _mean(document, peer, "worker_cpu_ms_per_request"))  # fmt: skip
    return mine / theirs if mine and theirs else None


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}x" if abs(high - low) < 0.005 else f"{low:.2f}x to {high:.2f}x"


def choose(document: dict[str, Any]) -> str:
    """"Which should I choose": when a rewrite pays and when the bridge is enough, from numbers.

    The verdict on Quart follows the worker CPU per answer (what a worker costs,
    and what bounds its throughput on a CPU-bound host); the req/s ratios of
    the run are stated beside it, since on a shared machine they also carry
    the share of the CPU each process happened to get.
    """
    best = best_label(document)
    if best is None:
        return "No bridge deployment was measured without errors at the peer points."
    ratios = {peer: [r["median"] for c in PEER_CONCURRENCY
                     if (r := rps_ratio(_at(document, best, c), _at(document, peer, c)))]
              for peer in ("quart", "gevent", "flask-recipe")}  # fmt: skip
    at = " and ".join(map(str, PEER_CONCURRENCY))
    parts = []
    cpu = _cpu_ratio(document, best, "quart")
    quart = ratios["quart"]
    if quart or cpu:
        served = (f"it served {_span(quart)} Quart's requests/s at {at} clients (median of "
                  f"the rounds)") if quart else ""  # fmt: skip
        if cpu is not None and cpu <= 1 / 0.9:
            parts.append(f"**Keep Flask and add the bridge** unless you are rewriting anyway: "
                         f"behind {served_by(best)} ({best}) a request cost the worker "
                         f"{cpu:.2f}x the CPU it cost Quart on uvicorn, so a rewrite buys at "
                         f"most {max(0.0, cpu - 1):.0%} more requests per worker"
                         f"{'; ' + served if served else ''}.")  # fmt: skip
        elif cpu is not None:
            parts.append(f"**A rewrite in Quart pays when per-worker throughput is the bill**: "
                         f"behind {served_by(best)} ({best}) a request cost the worker "
                         f"{cpu:.2f}x the CPU it cost Quart on uvicorn, so Quart does about "
                         f"{cpu - 1:.0%} more per worker{'; ' + served if served else ''}.")
        else:
            parts.append(f"Against Quart on uvicorn {served}.")
    gevent, recipe = ratios["gevent"], ratios["flask-recipe"]
    if gevent:
        cpu_g = _cpu_ratio(document, "gevent", best)
        parts.append(f"Against gunicorn's gevent workers (monkeypatched requests and redis-py, "
                     f"no code change either) the bridge served {_span(gevent)} the "
                     f"requests/s" + (f" (a gevent worker spent {cpu_g:.2f}x the bridge's CPU "
                                      f"per answer)" if cpu_g else "") +
                     ", without patching the standard library.")  # fmt: skip
    if recipe:
        hung = _hangs(document)
        cpu_r = _cpu_ratio(document, "flask-recipe", best)
        after = ""
        if hung.get("flask-recipe") and not hung.get("bridge"):
            after = (f"; it answered in every fault scenario, where the recipe hung in "
                     f"{len(hung['flask-recipe'])} ({', '.join(hung['flask-recipe'])})")
        parts.append(f"Against Flask's documented loop-thread recipe it served "
                     f"{_span(recipe)} the requests/s" +
                     (f" (the recipe's worker spent {cpu_r:.2f}x the bridge's CPU per answer)"
                      if cpu_r else "") +
                     f"{after}.")  # fmt: skip
    parts += _onloop_choice(document)
    parts.append("Choose the rewrite when the code is being rewritten anyway or when per-worker "
                 "throughput is the bill; choose the bridge when the Flask views, extensions "
                 "and tests should stay as they are.")  # fmt: skip
    return " ".join(parts)


def _onloop_choice(document: dict[str, Any]) -> list[str]:
    """The Flask app on the server's loop as a deployment choice, from the measured ratios."""
    quart = [r["median"] for c in PEER_CONCURRENCY
             if (r := rps_ratio(_at(document, ONLOOP, c), _at(document, "quart", c)))]
    if not quart:
        return []
    cpu = _cpu_ratio(document, ONLOOP, "quart")
    granian = [r["median"] for c in PEER_CONCURRENCY
               if (r := rps_ratio(_at(document, ONLOOP, c), _at(document, "bridge@granian", c)))]
    text = (f"Served on uvicorn's own loop, one greenlet per request (**{ONLOOP}**: the same "
            f"Flask app and views, `aiobridge.onloop.on_loop`), the bridge served "
            f"{_span(quart)} Quart's requests/s")
    if cpu is not None:
        text += f" at {cpu:.2f}x its worker CPU per answer"
    if granian:
        text += f", and {_span(granian)} the requests/s of the bridge behind granian WSGI"
    return [text + "; it suits views that wait on async clients through the bridge, not "
            "views that block (those stall every request of the worker: send them to "
            "threads)."]


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
    modes = [m for m in MODE_ORDER if m in labels]
    deployments = [label for label in labels if server_of(label)["mode"] == "bridge"]
    return [
        "## The real alternatives: Quart, gevent workers, Flask's recipe",
        "",
        f"`GET /dog`, {TARGET_LATENCY_MS} ms upstream, one worker process each, the same "
        f"interleaved rounds as every mode. The best bridge deployment (most req/s at "
        f"{' and '.join(map(str, PEER_CONCURRENCY))} clients, no errors) is **{best}**. "
        f"{_shared(document)}",
        "",
        "### Which should I choose",
        "",
        choose(document),
        "",
        "### The modes side by side",
        "",
        *_table(document, [*modes, *(d for d in deployments if d not in modes)], best),
        "",
        "### Deployments of the bridge mode",
        "",
        *_table(document, deployments, best),
        "",
        "Where a request's CPU goes in each deployment and in Quart (py-spy), and what "
        "would close the rest: [How it compares](compare.md#where-aiobridge-loses).",
        *_faults(document),
        "",
    ]
