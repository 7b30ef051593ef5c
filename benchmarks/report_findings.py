"""The report's "Where the bridge wins, and where it does not": sentences from the numbers.

Every sentence is written only when the run's measurements say it, and phrased
from them: the load test at its target point and at every other point, the
connections held and opened, fan-out, errors, the call overhead, Redis, and
the targets missed.
"""

from __future__ import annotations

from typing import Any

from .bm_profile import findings as profile_findings
from .load_analysis import ONLOOP, ONLOOP_VERSUS
from .load_plan import PEER_CONCURRENCY, server_of
from .report_run import (
    fanout_at,
    load_entry,
    load_modes,
    point_at,
    ratio_text,
    target_point,
    target_value,
)
from .results import MODE_ORDER, cell, spread, text

__all__ = ("TIE", "findings")

#: Differences in req/s smaller than this fraction are called a tie (run-to-run noise).
TIE = 0.05

_LOSS_REASONS = {
    "sync": (
        "sync runs each call in the request thread (requests, then one redis-py "
        "pipeline); the bridge hands every view to its loop thread and back, two thread "
        "switches under the GIL per request, which buys nothing when {when}."
    ),
    "quart": (
        "Quart runs the view on the server's own loop: no hand-off between threads, and "
        "uvicorn parses HTTP in C (httptools); the bridge (gunicorn gthread here) pays "
        "gunicorn's Python HTTP handling, Flask's WSGI dispatch in a request thread and the "
        "hand-off to its loop thread and back (compare the CPU per answer, and the "
        "bridge's other deployments in the section on the real alternatives)."
    ),
    "embedded-thread": (
        "embedded-thread drives a loop inside each request thread, so it pays no "
        "hand-off between threads; it pays instead with one loop, one HTTP pool and one "
        "Redis pool per thread (see the connections it holds)."
    ),
}


def _when(latency: int, concurrency: int) -> str:
    parts = []
    if concurrency == 1:
        parts.append("only one request is in flight")
    if latency == 0:
        parts.append("there is no upstream wait to overlap")
    return " and ".join(parts) or "the worker's CPU, not waiting, is the limit"


def _load_findings(document: dict[str, Any]) -> list[str]:
    out: list[str] = []
    concurrency, latency = target_point(document)
    bridge = point_at(document, "bridge", concurrency, latency)
    if bridge:
        parts = []
        for mode in MODE_ORDER[:-1]:
            other = point_at(document, mode, concurrency, latency)
            if other and other["rps"]:
                parts.append(f"{ratio_text(bridge, other)} {mode} "
                             f"({other['rps']:,.0f} req/s)")  # fmt: skip
        out.append(f"At the target point ({concurrency} clients, {latency} ms upstream) the "
                   f"bridge served {bridge['rps']:,.0f} req/s: " + ", ".join(parts) + ".")
    if bridge and bridge.get("cpu_seconds"):
        per_mode = []
        for mode in MODE_ORDER:
            p = point_at(document, mode, concurrency, latency)
            if p and p.get("worker_cpu_ms_per_request") is not None:
                per_mode.append(f"{mode} {p['worker_cpu_ms_per_request']:.2f} ms")
        cpu = bridge["cpu_seconds"]
        busy = sum(cpu.values())
        shares = ", ".join(f"{name} {value / max(busy, 1e-9):.0%}" for name, value in cpu.items())
        cores = document.get("machine", {}).get("logical_cores") or 1
        ceiling = concurrency / (latency / 1000) if latency else None
        text = (f"What bounds the target point: while the bridge was loaded the machine's "
                f"{cores} cores were {bridge['machine_cpu_percent']:.0f}% busy (everything on "
                f"the machine, other users included); of the CPU used by the processes of "
                f"the test: {shares}. Worker CPU per answer: " + ", ".join(per_mode) + ".")
        if bridge.get("seconds"):
            core = cpu["worker"] / bridge["seconds"]
            per_answer = bridge["worker_cpu_ms_per_request"]
            text += (f" The bridge's worker kept {core:.0%} of one core busy; its threads share "
                     f"one GIL, so at {per_answer:.2f} ms of CPU per answer one worker tops out "
                     f"near {1000 / per_answer:,.0f} req/s: more gunicorn workers, not more "
                     f"threads, raise that ceiling.")
        if ceiling:
            text += (f" Waiting alone would allow {ceiling:,.0f} req/s ({concurrency} clients / "
                     f"{latency} ms); the bridge reached {bridge['rps'] / ceiling:.0%} of it.")
        out.append(text)
    losses: dict[str, list[tuple[int, int, float, float, str]]] = {}
    ties: list[str] = []
    for entry in load_modes(document):
        if server_of(entry["mode"])["mode"] in ("bridge", ONLOOP):  # the bridge, however served
            continue
        for point in entry["points"]:
            b = point_at(document, "bridge", point["concurrency"], point["latency_ms"])
            if not b or not point["rps"]:
                continue
            ratio = b["rps"] / point["rps"]
            if ratio < 1 - TIE:
                losses.setdefault(entry["mode"], []).append(
                    (point["latency_ms"], point["concurrency"], point["rps"], b["rps"],
                     ratio_text(b, point)))  # fmt: skip
            elif ratio < 1:
                ties.append(f"{entry['mode']} at {point['latency_ms']} ms/"
                            f"{point['concurrency']} clients ({ratio_text(b, point)})")  # fmt: skip
    if not losses:
        out.append(f"The bridge's req/s was never more than {TIE:.0%} below another mode at "
                   f"any measured load point.")  # fmt: skip
    for mode, points in losses.items():
        where = "; ".join(f"{lat} ms upstream, {conc} client{'s' if conc > 1 else ''}: "
                          f"{mode} {rps:,.0f} req/s vs bridge {brps:,.0f} "
                          f"({ratio})" for lat, conc, rps, brps, ratio in points)  # fmt: skip
        reason = _LOSS_REASONS.get(mode, "")
        if reason:
            lat, conc = points[0][0], points[0][1]
            reason = " Why: " + reason.format(when=_when(lat, conc))
        out.append(f"**The bridge loses to {mode}** where {where}.{reason}")
    if ties:
        out.append(f"Within {TIE:.0%} (a tie on this machine): " + ", ".join(ties) + ".")
    return out


def _connection_findings(document: dict[str, Any]) -> list[str]:
    concurrency, latency = target_point(document)
    bridge = point_at(document, "bridge", concurrency, latency)
    thread = point_at(document, "embedded-thread", concurrency, latency)
    out: list[str] = []
    if bridge:
        churn = []
        for mode in ("embedded", "flask-async"):
            p = point_at(document, mode, concurrency, latency)
            if p:
                churn.append(f"{mode} opened {p['upstream_connections']:,} upstream and "
                             f"{p['redis_new_connections']:,} Redis connections for "
                             f"{p['ok']:,} answers")  # fmt: skip
        if churn:
            out.append(f"Connections at the target point: the bridge opened "
                       f"{bridge['upstream_connections']} upstream and "
                       f"{bridge['redis_new_connections']} new Redis connections for "
                       f"{bridge['ok']:,} answers; " + "; ".join(churn) + ".")  # fmt: skip
    if bridge and thread:
        up = (bridge["open_to_upstream_peak"], thread["open_to_upstream_peak"])
        rd = (bridge["redis_clients_peak"], thread["redis_clients_peak"])
        text = (f"Held while loaded, bridge vs embedded-thread: upstream {up[0]} vs {up[1]}, "
                f"Redis {rd[0]} vs {rd[1]}.")
        if up[1] and up[0] / up[1] > 0.125:
            text += (f" HTTP/1.1 carries one request at a time per connection, so "
                     f"{concurrency} concurrent upstream calls need about {concurrency} "
                     f"connections whoever holds them; a bounded pool would hold fewer only "
                     f"by queueing (N connections of {latency} ms calls cap at "
                     f"N / {latency / 1000:g} s requests/s).")
        if rd[1] and rd[0] / rd[1] > 0.125:
            text += (" The Redis pool keeps every connection it ever needed at once: a burst "
                     "of concurrent commands (each /dog sends two at once) grows it to the "
                     "burst's size, and it does not shrink; a bounded pool "
                     "(`max_connections`, blocking) would cap it.")
        out.append(text)
    return out


def _fanout_findings(document: dict[str, Any]) -> list[str]:
    spec = (load_entry(document).get("params") or {}).get("fanout") or {}
    floor = spec.get("seconds", 0.05) * 1000
    bridge = fanout_at(document, "bridge")
    if not bridge or bridge["p50_ms"] is None:
        return []
    text = (f"Fan-out ({spec.get('n')} x {floor:g} ms): the bridge's p50 was "
            f"{bridge['p50_ms']:.1f} ms, {bridge['p50_ms'] - floor:.1f} ms above the "
            f"{floor:g} ms floor")
    others = []
    for mode in MODE_ORDER[:-1]:
        p = fanout_at(document, mode)
        if p and p["p50_ms"] is not None:
            others.append(f"{mode} {p['p50_ms']:.1f} ms")
    others = [", ".join(others)] if others else []
    direct = (load_entry(document).get("result") or {}).get("fanout_direct")
    if direct:
        others.append(f"the load client making the same calls itself, no app in between: "
                      f"{direct['p50_ms']:.1f} ms")
    return [text + (f" ({'; '.join(others)})." if others else ".")]


def _error_findings(document: dict[str, Any]) -> list[str]:
    out = []
    for entry in load_modes(document):
        loads = [*entry["points"], *entry["fanout"], entry["canines"]]
        kinds: dict[str, int] = {}
        for load in loads:
            for kind, count in load["errors_by_kind"].items():
                kinds[kind] = kinds.get(kind, 0) + count
        total = sum(load["requests"] for load in loads)
        if kinds:
            listed = ", ".join(f"{count:,} {kind}" for kind, count in sorted(kinds.items()))
            out.append(f"{entry['mode']}: {sum(kinds.values()):,} errors in {total:,} requests "
                       f"({listed}).")  # fmt: skip
        if entry.get("gunicorn_log_problems"):
            out.append(f"{entry['mode']}: the gunicorn log shows "
                       f"{entry['gunicorn_log_problems']}.")  # fmt: skip
    if not out:
        out.append("No mode had an error in any load of this run.")
    return out


def _overhead_findings(document: dict[str, Any]) -> list[str]:
    rows = (document.get("benchmarks", {}).get("call_overhead") or {}).get("rows") or []
    # The single caller's figures where they are steadiest (one CPU), if measured there.
    placement = "one CPU" if any(r.get("placement") == "one CPU" for r in rows) else "unpinned"
    us = {(r["variant"], r["threads"]): r["us_per_call"] for r in rows
          if r["threads"] > 1 or r.get("placement", "unpinned") == placement}
    out = []
    bridge, loop = us.get(("aiobridge", 1)), us.get(("embedded-loop", 1))
    if bridge and loop and loop < bridge:
        out.append(f"One thread calling a trivial coroutine: a loop reused in that same "
                   f"thread (`run_until_complete`) costs {loop:.1f} µs per call, the bridge "
                   f"{bridge:.1f} µs ({bridge / loop:.1f}x): the bridge pays a hand-off to "
                   f"its loop thread and back, which a single-threaded caller does not need; "
                   f"such a loop cannot be shared by a second thread.")  # fmt: skip
    return out


def _onloop_findings(document: dict[str, Any]) -> list[str]:
    """The Flask app on the server's loop against Quart and the bridge behind granian."""
    _, latency = target_point(document)
    out = []
    for clients in PEER_CONCURRENCY:
        mine = point_at(document, ONLOOP, clients, latency)
        if not mine:
            continue
        parts = []
        for peer, _ in ONLOOP_VERSUS:
            other = point_at(document, peer, clients, latency)
            if other:
                parts.append(f"{ratio_text(mine, other)} {peer}'s req/s ({other['rps']:,.0f}; "
                             f"p99 {other['p99_ms']} ms, worker CPU "
                             f"{cell(other.get('worker_cpu_ms_per_request'), 2)} ms/answer)")
        out.append(f"{ONLOOP} (the Flask app on uvicorn's own loop, uvloop, one greenlet per "
                   f"request) at {clients} clients, {latency} ms upstream: "
                   f"{mine['rps']:,.0f} req/s, p99 {mine['p99_ms']} ms, worker CPU "
                   f"{cell(mine.get('worker_cpu_ms_per_request'), 2)} ms/answer; "
                   + "; ".join(parts) + ".")  # fmt: skip
    rows = (document.get("benchmarks", {}).get("call_overhead") or {}).get("rows") or []
    cpu = {r["variant"]: r.get("cpu_us_per_call") for r in rows
           if r["threads"] == 1 and r.get("placement") == "one CPU"}  # fmt: skip
    switched, handed = cpu.get("aiobridge-onloop-uvloop"), cpu.get("aiobridge-uvloop")
    if switched and handed:
        out.append(f"One bridge call from a request greenlet cost {switched:.1f} µs of CPU (one "
                   f"CPU, uvloop), against {handed:.1f} µs for the same call handed off from a "
                   f"thread ({cpu.get('aiobridge') or 0:.1f} µs on the default loop).")
    profiled = (document.get("benchmarks", {}).get("profile") or {}).get("rows") or []
    return out + profile_findings(profiled)


def _redis_findings(document: dict[str, Any]) -> list[str]:
    rows = (document.get("benchmarks", {}).get("redis") or {}).get("rows") or []
    rate = {(r.get("variant"), r.get("threads")): r.get("gets_per_s") for r in rows}
    ratios = {(r.get("variant"), r.get("threads")): r.get("ratio_to_sync_spread") for r in rows}
    out = []
    for threads in sorted({r.get("threads") for r in rows if r.get("threads")}):
        bridge, sync = rate.get(("aiobridge", threads)), rate.get(("redis-py sync", threads))
        if not bridge or not sync:
            continue
        figures = ratios.get(("aiobridge", threads)) or spread([bridge / sync])
        assert figures is not None
        ratio = text(figures)
        callers = f"{threads} thread{'s' if threads > 1 else ''}"
        # A winner only when every round agrees; a range that crosses 1 is noise.
        if figures["max"] < 1 - TIE:
            why = ("each bridge GET crosses to the loop thread and back, while redis-py "
                   "sends it from the calling thread" if threads == 1 else
                   "the hand-offs to the loop thread cost more than the pool sharing saves")
            out.append(f"**Sequential Redis GETs from {callers}: redis-py sync wins**, "
                       f"{sync:,.0f} GET/s vs the bridge's {bridge:,.0f} "
                       f"({ratio}): {why}. A thread that only makes quick "
                       f"sequential Redis calls is better served by redis-py.")  # fmt: skip
        elif figures["min"] > 1 + TIE:
            out.append(f"Redis GETs from {callers}: the bridge {bridge:,.0f} GET/s vs "
                       f"redis-py sync {sync:,.0f} ({ratio}, faster in every round).")  # fmt: skip
        else:
            out.append(f"Redis GETs from {callers}: no clear winner, the bridge "
                       f"{bridge:,.0f} GET/s vs redis-py sync {sync:,.0f} ({ratio}: the "
                       f"rounds disagree or differ by less than {TIE:.0%}).")  # fmt: skip
    return out


def _missed_findings(document: dict[str, Any]) -> list[str]:
    missed = [t for t in document.get("targets", []) if not t.get("met")]
    if not missed:
        return ["Every target of this run was met."] if document.get("targets") else []
    return ["Targets missed in this run: " + "; ".join(
        f"{t['label']} ({t['benchmark']}): measured {target_value(t)}, target "
        f"{t['target']}" for t in missed) + "."]  # fmt: skip


def findings(document: dict[str, Any]) -> list[str]:
    """The run's results in sentences, each built from the measured values."""
    return [*_load_findings(document), *_connection_findings(document),
            *_onloop_findings(document),
            *_fanout_findings(document), *_overhead_findings(document),
            *_redis_findings(document),
            *_error_findings(document), *_missed_findings(document)]  # fmt: skip
