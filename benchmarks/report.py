"""``report.md`` from a run's ``results.json``: tables, targets and findings.

Every number in the report, including the sentences of "Where the bridge
wins, and where it does not", is taken from the run's measurements: a
sentence is only written when the numbers say it, and phrased from them.
The "headline" block (between ``HEADLINE_START`` and ``HEADLINE_END``) is
what :mod:`benchmarks.readme` pastes into the README.

Run ``python -m benchmarks.report results/results.json`` to re-render a report
from a saved run.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

from .load_analysis import find_point
from .load_plan import server_of
from .report_peers import best_label, choose, peer_section
from .results import (
    MODE_ORDER,
    cell,
    markdown_table,
    numeric_align,
    rps_ratio,
    spread,
    text,
)

__all__ = ("HEADLINE_END", "HEADLINE_START", "findings", "headline", "render")

HEADLINE_START = "<!-- benchmarks:headline:start -->"
HEADLINE_END = "<!-- benchmarks:headline:end -->"
#: Differences in req/s smaller than this fraction are called a tie (run-to-run noise).
TIE = 0.05
def _load(document: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = document.get("benchmarks", {}).get("load_demo") or {}
    return result


def _modes(document: dict[str, Any]) -> list[dict[str, Any]]:
    modes: list[dict[str, Any]] = (_load(document).get("result") or {}).get("modes", [])
    return modes


def _target_point(document: dict[str, Any]) -> tuple[int, int]:
    point = (_load(document).get("params") or {}).get("target_point") or {}
    return int(point.get("concurrency", 32)), int(point.get("latency_ms", 20))


def _point(document: dict[str, Any], mode: str, concurrency: int,
           latency: int) -> dict[str, Any] | None:  # fmt: skip
    return find_point(_load(document).get("result") or {}, mode, concurrency, latency)


def _fanout(document: dict[str, Any], mode: str, concurrency: int = 1) -> dict[str, Any] | None:
    for entry in _modes(document):
        if entry["mode"] == mode:
            for point in entry["fanout"]:
                if point["concurrency"] == concurrency:
                    return dict(point)
    return None


def _machine_line(document: dict[str, Any]) -> str:
    m = document.get("machine", {})
    return (f"{m.get('cpu_model', '?')}, {m.get('logical_cores', '?')} logical cores, "
            f"{m.get('ram_gb', '?')} GB RAM, {m.get('os', '?')}, {m.get('python', '?')}")


def _rps_ratio(point: dict[str, Any] | None, other: dict[str, Any] | None) -> str:
    """``point``'s req/s over ``other``'s as "median (min-max, N rounds)"."""
    return text(rps_ratio(point, other))


def _command(document: dict[str, Any]) -> str:
    return str(document.get("command") or "python -m benchmarks")


def _run_line(document: dict[str, Any]) -> str:
    git = document.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" (modified)" if git.get("modified") else "")
    return (f"`{_command(document)}` on {document.get('started')}, "
            f"commit {commit}, {document.get('seconds', '?')} s")  # fmt: skip


# -- headline ---------------------------------------------------------------------------


def headline(document: dict[str, Any], chart: str | None = "headline.png", *,
             machine: bool = True) -> str:  # fmt: skip
    """The block the README shows: the target point per mode, the machine, the command.

    ``machine=False`` leaves the machine and run lines out (the report states
    them once, at its top).
    """
    concurrency, latency = _target_point(document)
    params = _load(document).get("params") or {}
    bridge = _point(document, "bridge", concurrency, latency)
    rows = []
    for mode in MODE_ORDER:
        p = _point(document, mode, concurrency, latency)
        if p is None:
            continue
        rss = next((m["rss_end_mb"] for m in _modes(document) if m["mode"] == mode), None)
        rows.append([f"**{mode}**" if mode == "bridge" else mode, p["rps"],
                     _rps_ratio(bridge, p), p["p50_ms"], p["p99_ms"],
                     p["errors"], p["upstream_connections"], p["redis_clients_peak"],
                     p["redis_new_connections"], rss])  # fmt: skip
    best = best_label(document)
    deployed = _point(document, best, concurrency, latency) if best else None
    if best and best != "bridge" and deployed:
        rss = next((m["rss_end_mb"] for m in _modes(document) if m["mode"] == best), None)
        rows.append([f"**{best}** (best deployment)", deployed["rps"],
                     _rps_ratio(bridge, deployed), deployed["p50_ms"], deployed["p99_ms"],
                     deployed["errors"], deployed["upstream_connections"],
                     deployed["redis_clients_peak"], deployed["redis_new_connections"], rss])
    if not rows:
        return f"{HEADLINE_START}\n(no load test in this run)\n{HEADLINE_END}"
    headers = ["mode", "req/s", "bridge ÷ mode (min-max over rounds)", "p50 ms", "p99 ms",
               "errors",
               "upstream conns opened", "Redis conns held", "Redis conns opened",
               "worker RSS MB"]  # fmt: skip
    lines = [
        HEADLINE_START,
        f"`GET /dog` with {concurrency} concurrent clients and a {latency} ms upstream, "
        f"{params.get('workers', 1)} gunicorn gthread worker x {params.get('threads', 32)} "
        f"threads, {params.get('duration', '?')} s per load:",
        "",
        markdown_table(headers, rows, numeric_align(headers, 1)),
        "",
    ]
    fanout = [(mode, _fanout(document, mode)) for mode in MODE_ORDER]
    fanout_text = ", ".join(f"{mode} {p['p50_ms']:.0f} ms" for mode, p in fanout
                            if p and p["p50_ms"] is not None)  # fmt: skip
    if fanout_text:
        spec = params.get("fanout") or {}
        lines += [f"Fan-out of {spec.get('n', '?')} upstream calls of "
                  f"{spec.get('seconds', 0) * 1000:g} ms per request (p50, 1 client): "
                  f"{fanout_text}.", ""]  # fmt: skip
    if any(_point(document, m, concurrency, latency) for m in ("quart", "gevent", "flask-recipe")):
        lines += [f"Which should I choose: {choose(document)}", ""]
    lines += _headline_targets(document)
    if chart:
        lines += [f"![requests/s per mode]({chart})", ""]
    if machine:
        lines += [f"Machine: {_machine_line(document)}. Run: {_run_line(document)}.", ""]
    lines += [f"Reproduce: `{_command(document)}` (then `python -m benchmarks.readme "
              f"RESULTS_DIR` to put this block in the README).", HEADLINE_END]  # fmt: skip
    return "\n".join(lines)


def _headline_targets(document: dict[str, Any]) -> list[str]:
    """Each load-test target met or missed, in one paragraph: the claims the README may make."""
    targets = [t for t in document.get("targets", []) if t.get("benchmark") == "load_demo"]
    if not targets:
        return []
    met = [t for t in targets if t.get("met")]
    missed = [t for t in targets if not t.get("met")]
    text_ = f"Targets of the load test: {len(met)} of {len(targets)} met."
    if missed:
        text_ += " Missed: " + "; ".join(
            f"{t['label']}: measured {_target_value(t)}" for t in missed) + "."
    return [text_, ""]


def _target_value(target: dict[str, Any]) -> str:
    """A target's measured value, with its spread over rounds when it has one."""
    figures = target.get("spread")
    if figures:
        return text(figures, unit="")
    return cell(target.get("value"), 3)


# -- findings ---------------------------------------------------------------------------

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
    concurrency, latency = _target_point(document)
    bridge = _point(document, "bridge", concurrency, latency)
    if bridge:
        parts = []
        for mode in MODE_ORDER[:-1]:
            other = _point(document, mode, concurrency, latency)
            if other and other["rps"]:
                parts.append(f"{_rps_ratio(bridge, other)} {mode} "
                             f"({other['rps']:,.0f} req/s)")  # fmt: skip
        out.append(f"At the target point ({concurrency} clients, {latency} ms upstream) the "
                   f"bridge served {bridge['rps']:,.0f} req/s: " + ", ".join(parts) + ".")
    if bridge and bridge.get("cpu_seconds"):
        per_mode = []
        for mode in MODE_ORDER:
            p = _point(document, mode, concurrency, latency)
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
    for entry in _modes(document):
        if server_of(entry["mode"])["mode"] == "bridge":  # the bridge itself, or a deployment
            continue
        for point in entry["points"]:
            b = _point(document, "bridge", point["concurrency"], point["latency_ms"])
            if not b or not point["rps"]:
                continue
            ratio = b["rps"] / point["rps"]
            if ratio < 1 - TIE:
                losses.setdefault(entry["mode"], []).append(
                    (point["latency_ms"], point["concurrency"], point["rps"], b["rps"],
                     _rps_ratio(b, point)))  # fmt: skip
            elif ratio < 1:
                ties.append(f"{entry['mode']} at {point['latency_ms']} ms/"
                            f"{point['concurrency']} clients ({_rps_ratio(b, point)})")  # fmt: skip
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
    concurrency, latency = _target_point(document)
    bridge = _point(document, "bridge", concurrency, latency)
    thread = _point(document, "embedded-thread", concurrency, latency)
    out: list[str] = []
    if bridge:
        churn = []
        for mode in ("embedded", "flask-async"):
            p = _point(document, mode, concurrency, latency)
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
    spec = (_load(document).get("params") or {}).get("fanout") or {}
    floor = spec.get("seconds", 0.05) * 1000
    bridge = _fanout(document, "bridge")
    if not bridge or bridge["p50_ms"] is None:
        return []
    text = (f"Fan-out ({spec.get('n')} x {floor:g} ms): the bridge's p50 was "
            f"{bridge['p50_ms']:.1f} ms, {bridge['p50_ms'] - floor:.1f} ms above the "
            f"{floor:g} ms floor")
    others = []
    for mode in MODE_ORDER[:-1]:
        p = _fanout(document, mode)
        if p and p["p50_ms"] is not None:
            others.append(f"{mode} {p['p50_ms']:.1f} ms")
    others = [", ".join(others)] if others else []
    direct = (_load(document).get("result") or {}).get("fanout_direct")
    if direct:
        others.append(f"the load client making the same calls itself, no app in between: "
                      f"{direct['p50_ms']:.1f} ms")
    return [text + (f" ({'; '.join(others)})." if others else ".")]


def _error_findings(document: dict[str, Any]) -> list[str]:
    out = []
    for entry in _modes(document):
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
        f"{t['label']} ({t['benchmark']}): measured {_target_value(t)}, target "
        f"{t['target']}" for t in missed) + "."]  # fmt: skip


def findings(document: dict[str, Any]) -> list[str]:
    """The run's results in sentences, each built from the measured values."""
    return [*_load_findings(document), *_connection_findings(document),
            *_fanout_findings(document), *_overhead_findings(document),
            *_redis_findings(document),
            *_error_findings(document), *_missed_findings(document)]  # fmt: skip


# -- detail tables ----------------------------------------------------------------------


def _targets_table(document: dict[str, Any]) -> str:
    rows = [[t["benchmark"], t["label"], _target_value(t), t["target"],
             "met" if t["met"] else "**missed**"] for t in document.get("targets", [])]  # fmt: skip
    if not rows:
        return "No benchmark of this run declares targets."
    return ("A ratio is the median of its per-round ratios, with the lowest and highest "
            "round: a target met by the median but not by every round is within this "
            "machine's noise.\n\n"
            + markdown_table(["benchmark", "target", "measured (min-max over rounds)", "bound",
                      "result"], rows))


def _load_tables(document: dict[str, Any]) -> list[str]:
    modes = _modes(document)
    if not modes:
        return []
    out = ["## Load test: the demo under gunicorn", ""]
    params = _load(document).get("params") or {}
    out.append(f"{params.get('workers')} gthread worker(s) x {params.get('threads')} threads "
               f"per mode, all modes up side by side and loaded in turn; closed-loop aiohttp "
               f"clients, {params.get('duration')} s or {params.get('max_requests'):,} "
               f"requests per point and round, whichever ends first; "
               f"{params.get('rounds', 1)} round(s) per point, interleaved across modes: "
               f"the figures are the median round's (by req/s), errors are summed over all "
               f"rounds; "
               f"request timeout {params.get('request_timeout')} s. \"Held\": peak open "
               f"connections of the worker while loaded (psutil on the worker's sockets). "
               f"\"Opened\": distinct upstream client connections "
               f"(upstream's /connections) and Redis total_connections_received during the "
               f"point.")  # fmt: skip
    latencies = sorted({p["latency_ms"] for m in modes for p in m["points"]})
    headers = ["mode", "clients", "req/s", "req/s per round", "p50 ms", "p99 ms", "max ms",
               "errors",
               "upstream held", "upstream opened", "Redis held", "Redis opened",
               "worker CPU ms/answer", "machine CPU %", "RSS MB before → after"]  # fmt: skip
    for latency in latencies:
        rows = []
        for entry in modes:
            for p in entry["points"]:
                if p["latency_ms"] == latency:
                    errors = ", ".join(f"{c} {k}" for k, c in p["errors_by_kind"].items()) or 0
                    per_round = " / ".join(f"{r:,.0f}" for r in p.get("rps_rounds", []))
                    rows.append([entry["mode"], p["concurrency"], p["rps"], per_round, p["p50_ms"],
                                 p["p99_ms"], p["max_ms"], errors, p["open_to_upstream_peak"],
                                 p["upstream_connections"], p["redis_clients_peak"],
                                 p["redis_new_connections"],
                                 cell(p.get("worker_cpu_ms_per_request"), 2),
                                 p.get("machine_cpu_percent"),
                                 f"{p['rss_before_mb']:.1f} → {p['rss_after_mb']:.1f}"])
        out += ["", f"### /dog, upstream latency {latency} ms", "",
                markdown_table(headers, rows, numeric_align(headers, 1))]
    spec = params.get("fanout") or {}
    floor = spec.get("seconds", 0.05) * 1000
    rows = [[entry["mode"], p["concurrency"], p["ok"], p["p50_ms"], p["p99_ms"], p["max_ms"],
             None if p["p50_ms"] is None else f"{p['p50_ms'] / floor:.2f}x", p["errors"]]
            for entry in modes for p in entry["fanout"]]  # fmt: skip
    direct = (_load(document).get("result") or {}).get("fanout_direct")
    if direct:
        rows.append(["(load client, no app)", 1, direct["requests"], direct["p50_ms"], None,
                     direct["max_ms"], f"{direct['p50_ms'] / floor:.2f}x", 0])  # fmt: skip
    headers = ["mode", "clients", "answers", "p50 ms", "p99 ms", "max ms", "p50 ÷ floor",
               "errors"]  # fmt: skip
    out += ["", f"### Fan-out: /delay?seconds={spec.get('seconds')}&n={spec.get('n')} "
            f"(floor {floor:g} ms)", "", markdown_table(headers, rows, numeric_align(headers, 1))]
    rows = [[entry["mode"], entry["canines"]["requests"], entry["canines"]["ok"],
             f"{entry['canines']['seconds']:.3f}", entry["canines"]["p50_ms"],
             entry["canines"]["mean_ms"], entry["canines"]["stdev_ms"],
             entry["canines"]["errors"]] for entry in modes]  # fmt: skip
    headers = ["mode", "total requests", "ok", "total s", "median ms", "mean ms", "stdev ms",
               "errors"]  # fmt: skip
    out += ["", f"### Canines as a Service: {params.get('canines_requests')} requests of "
            f"/dog?latency={params.get('canines_latency_ms')} from "
            f"{params.get('canines_concurrency')} clients", "",
            markdown_table(headers, rows, numeric_align(headers, 1))]  # fmt: skip
    rows = [[entry["mode"], entry["rss_start_mb"], entry["rss_end_mb"], entry["rss_growth_mb"],
             entry["gunicorn_exit_code"], entry["gunicorn_log_problems"] or "none"]
            for entry in modes]  # fmt: skip
    headers = ["mode", "RSS after warm-up MB", "RSS at end MB", "growth MB",
               "gunicorn exit code", "log problems"]  # fmt: skip
    out += ["", "### Worker memory over the whole run of each mode", "",
            markdown_table(headers, rows, numeric_align(headers, 1))]
    return out


def _generic_rows(rows: list[dict[str, Any]]) -> str:
    headers = list(dict.fromkeys(key for row in rows for key in row))
    return markdown_table(headers, ([row.get(h) for h in headers] for row in rows))


def _micro_tables(document: dict[str, Any]) -> list[str]:
    out = []
    for name, result in document.get("benchmarks", {}).items():
        if name in ("load_demo", "faults"):  # faults: in the section on the real alternatives
            continue
        out += ["", f"## {name}", ""]
        if "error" in result:
            out += ["Failed:", "", "```", str(result["error"]).strip()[-2000:], "```"]
            continue
        params = result.get("params") or {}
        out.append("Parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()) + ".")
        rows = result.get("rows") or []
        if not rows:
            continue
        try:
            module = importlib.import_module(f"{__package__}.bm_{name}")
            table = module.format_table(rows) if hasattr(module, "format_table") else None
        except Exception:  # a table is not worth failing the report
            table = None
        out += ["", table or _generic_rows(rows)]
    return out


def render(document: dict[str, Any], charts: list[str],
           headline_chart: str | None = "headline.png") -> str:  # fmt: skip
    """The whole report as markdown (``charts``: PNG file names beside it)."""
    machine = document.get("machine", {})
    load_before = machine.get("load_average")
    load_after = document.get("load_average_after")
    lines = [
        "# aiobridge benchmarks",
        "",
        f"Run: {_run_line(document)}{' (--quick)' if document.get('quick') else ''}"
        f"{' (--tiny: a smoke test, not a measurement)' if document.get('tiny') else ''}.",
        f"Machine: {_machine_line(document)}. Load average (1/5/15 min) before: "
        f"{load_before}, after: {load_after}: other work on the machine during the run "
        f"makes the figures noisier, not the ratios taken within one run.",
        "",
        *([f"**Stopped early**: {document['watchdog']}.", ""] if document.get("watchdog")
          else []),
        "## Headline",
        "",
        headline(document, headline_chart, machine=False),
        "",
        "## Targets",
        "",
        _targets_table(document),
        "",
        "## Where the bridge wins, and where it does not",
        "",
        *[f"- {sentence}" for sentence in findings(document)],
        "",
        *peer_section(document),
    ]
    lines += _load_tables(document)
    lines += _micro_tables(document)
    if charts:
        lines += ["", "## Charts", ""] + [f"![{name}]({name})" for name in charts]
    versions = document.get("packages") or {}
    lines += ["", "## Versions", "",
              ", ".join(f"{k} {v}" for k, v in versions.items() if v) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "results/results.json")
    data = json.loads(source.read_text(encoding="utf-8"))
    names = sorted(path.name for path in source.parent.glob("*.png"))
    (source.parent / "report.md").write_text(render(data, names), encoding="utf-8")
    print(source.parent / "report.md")
