"""How a `bit-bench` result is shown and kept: the terminal table, JSON, CSV and per-request times.

bench/cli.py writes every file with engine/atomic_write.py (a temporary name beside its target, renamed into
place), so a failed run never leaves half a report. The JSON is the result as it is (schema in docs/bench.md); the
CSV has one flat row per configuration with the same names, dotted for nested fields (latency_ms.p99,
accuracy.rel_l2).
"""

from __future__ import annotations

import csv
import io
import json
import os

from ..engine.errors import BitError


def check_writable(path: str | None, what: str) -> None:
    """Refuse an output path before measuring, rather than lose a long run at the end."""
    if not path:
        return
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise BitError(f"{what} {path!r} is a directory; give a file name")
    if not os.path.isdir(parent):
        raise BitError(f"{what} {path!r}: folder {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise BitError(f"{what} {path!r}: folder {parent!r} is not writable")


def to_json(result: dict) -> str:
    return json.dumps(result, indent=1) + "\n"


def _flatten(row: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if key == "windows":
            flat["windows"] = len(value)
        elif isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = "; ".join(map(str, value))
        else:
            flat[name] = value
    return flat


def to_csv(result: dict) -> str:
    rows = [_flatten(r) for r in result["rows"]]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    out.write(f"# {result['schema']} {result['command']}\n")
    writer = csv.DictWriter(out, columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


TRTEXEC_PHASES = {"enqueue_ms": "enqueueMs", "h2d_ms": "h2dMs", "compute_ms": "computeMs", "d2h_ms": "d2hMs"}


def to_times(result: dict, times: dict) -> str:
    """Per-request times, one list per configuration, in trtexec's --exportTimes field names: startMs and endMs
    from the measurement's start, latencyMs, and on the trt backend enqueueMs, h2dMs, computeMs and d2hMs
    (CPU backends have no separate phases to report). An open-loop request adds its scheduledMs and
    scheduleLagMs, and its latencyMs counts from the schedule, as its row's does."""

    def record(window, thread, start, end, phases, scheduled):
        out = {"window": window, "thread": thread, "startMs": start, "endMs": end, "latencyMs": round(end - start, 4)}
        if scheduled is not None:
            out |= {"scheduledMs": scheduled, "scheduleLagMs": round(start - scheduled, 4)}
            out["latencyMs"] = round(end - scheduled, 4)
        for key, name in TRTEXEC_PHASES.items():
            if phases and key in phases:
                out[name] = round(phases[key], 4)
        return out

    body = {
        "schema": result["schema"],
        "command": result["command"],
        "configurations": {config_id: [record(*r) for r in records] for config_id, records in times.items()},
    }
    return json.dumps(body) + "\n"


def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _throughput_lines(result: dict) -> list[str]:
    """The best throughput configuration, and benchmark_app's throughput on the same files where it ran."""
    best = result.get("best_throughput")
    if not best:
        return []
    out = ["", f"best throughput: {best['id']} {best['throughput_ips']:.2f} img/s ({best['described']})"]
    several = len(result.get("bundles") or {}) > 1  # then each peer says whose file it ran
    for peer in result.get("throughput_peers") or []:
        model = f"{peer['model']}'s " if several and peer.get("model") else ""
        what = f"  {peer['tool']} on {model}{peer['flavour']} b{peer['batch']} ({peer['inference_precision']})"
        if "error" in peer:
            out.append(f"{what}: {peer['error']}")
        else:
            out.append(
                f"{what}: {peer['throughput_ips']:.2f} img/s with {peer.get('requests', '?')} requests; "
                f"ours {peer['ours_throughput_ips']:.2f} ({peer['ours_best']}), {peer['ours_over_peer']:.2f}x"
                + _peer_range(peer)
            )
    return out


def _peer_range(peer: dict) -> str:
    """The rounds' least and greatest ratio (results before bit-bench/2's paired rounds have none)."""
    low_high = peer.get("ours_over_peer_range")
    return f" (rounds {low_high[0]:.2f}-{low_high[1]:.2f})" if low_high else ""


def _engine_set_lines(result: dict) -> list[str]:
    """Where the models did not all fit in memory at once: which were measured together (interleaved)."""
    sets = result.get("engine_sets") or []
    split = [s for s in sets if sum(t["throughput"] == s["throughput"] for t in sets) > 1]
    if not split:
        return []
    out = ["", "memory: not every model fit at once; each set below was measured interleaved, one set after another:"]
    out += [f"  {', '.join(s['configurations'])} (RSS {s['rss_gb']} GB)" for s in split]
    return out


def table(result: dict) -> str:
    """The terminal view: speed, its ratio to the baseline, latency percentiles, noise, and accuracy beside it."""
    pcts = [p for p in result["settings"]["percentiles"] if p != 50]
    head = ["configuration", "img/s", "x base", "median ms"] + [f"p{p:g} ms" for p in pcts]
    head += ["CV %", "stable", "rel L2", "top-1", "gate", "% peak", "CPU ms/req", "host util %"]
    lines, skipped, loadgen = [], {}, []
    for row in result["rows"]:
        if row["status"] != "measured":
            # one line per backend and reason, not one per batch and concurrency
            skipped.setdefault((row["backend"], row["skip_reason"]), []).append(row["precision"])
            continue
        if "loadgen" in row:
            loadgen.append(row)
            continue
        lat = row["latency_ms"]
        acc = row.get("accuracy") or {}
        roof = row.get("roofline") or {}
        lines.append(
            [
                row["id"],
                _fmt(row["throughput_ips"], 2),
                _fmt(row.get("vs_baseline", {}).get("throughput"), 2),
                _fmt(lat["median"], 2),
                *[_fmt(lat.get(f"p{p:g}".replace(".", "_")), 2) for p in pcts],
                _fmt(100 * row["cv"], 1),
                {True: "yes", False: "NO", None: "n/a"}[row["stable"]],
                _fmt(acc.get("rel_l2"), 4),
                _fmt(acc.get("top1_agreement"), 3),
                acc.get("gate") or "-",
                _fmt(roof.get("percent_of_peak"), 0),
                *_cpu_cells(row),
            ]
        )
    out = _columns(head, lines) if lines else []
    out += _loadgen_lines(loadgen)
    out += _open_loop_lines(result["rows"])
    for (backend, reason), precisions in skipped.items():
        out.append(f"{backend}/{','.join(dict.fromkeys(precisions))}: skipped: {reason}")
    warnings = [f"  {row['id']}: {w}" for row in result["rows"] for w in row.get("warnings", [])]
    if warnings:
        out += ["", "warnings:", *warnings]
    out += _throughput_lines(result)
    out += _engine_set_lines(result)
    if any(row.get("cpu", {}).get("server_cpu_s") is not None for row in result["rows"]):
        out.append("CPU ms/req counts the server's process tree too where it runs on this host (the `cpu` field)")
    based = next((r for r in result["rows"] if "vs_baseline" in r), None)
    base = based["vs_baseline"]["baseline"].rsplit("/", 2)[0] if based else None
    if base and based.get("model") and base.startswith(based["model"] + "/"):  # several bundles: each its own
        base = base.removeprefix(based["model"] + "/") + " on the row's own bundle"
    out += [
        "",
        f"x base: throughput over {base or 'no baseline'} at the same batch and concurrency; "
        "rel L2 / top-1: agreement with TF on the bundle's parity set",
    ]
    return "\n".join(out)


def _columns(head: list[str], lines: list[list[str]]) -> list[str]:
    widths = [max([len(head[i])] + [len(r[i]) for r in lines]) for i in range(len(head))]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    for r in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return out


def _cpu_cells(row: dict) -> list[str]:
    """CPU milliseconds per request (this process, plus a local server's tree) and the host's utilization."""
    cpu = row.get("cpu") or {}
    per = cpu.get("process_cpu_s_per_request")
    if per is not None and cpu.get("server_cpu_s_per_request") is not None:
        per += cpu["server_cpu_s_per_request"]
    util = cpu.get("system_utilization")
    return [_fmt(None if per is None else 1000 * per, 2), _fmt(None if util is None else 100 * util, 0)]


def _loadgen_lines(rows: list[dict]) -> list[str]:
    """LoadGen's rows: its verdict as it gives it, the scenario's metric, and whether MLPerf's minimums were met."""
    if not rows:
        return []
    head = ["configuration", "scenario", "result", "metric", "early stopping", "MLPerf minimums"]
    head += ["CPU ms/req", "host util %"]
    lines, why = [], []
    for row in rows:
        lg = row["loadgen"]
        m = lg["metric"]
        text = f"{m['name']} {_fmt(m['value'], 3)} {m['unit']}"
        if "latency_bound_ms" in m:
            pct = next(k for k in m if k.endswith("_latency_ms"))
            text += f" (scheduled {_fmt(m['scheduled_samples_per_second'], 3)}; {pct.removesuffix('_latency_ms')} "
            text += f"{_fmt(m[pct], 2)} ms, bound {_fmt(m['latency_bound_ms'], 1)})"
        estimates = ", ".join(
            f"{k.removesuffix('_ms')} {v:.2f} ms" for k, v in lg["early_stopping"]["estimates_ms"].items()
        )
        early = estimates or {True: "met", False: "NOT met", None: "-"}[lg["early_stopping"]["met"]]
        lines.append(
            [row["id"], lg["scenario"], lg["result"] or "-", text, early]
            + ["met" if lg["meets_mlperf_minimums"] else "NOT met (quick run)", *_cpu_cells(row)]
        )
        why += [f"  {row['id']}: {line}" for line in lg["verdict"]]
        needed = lg["settings"].get("early_stopping_min_queries")
        if needed and (lg["queries"] or 0) < needed and not lg["early_stopping"]["met"]:
            why.append(
                f"  {row['id']}: early stopping at p{100 * lg['settings']['latency_percentile']:g} needs at least "
                f"{needed} queries in bound; this test ran {lg['queries']} (--min-query-count)"
            )
        if "find_peak" in lg:
            fp = lg["find_peak"]
            steps = ", ".join(f"{s['target_qps']:g} {s['result']}" for s in fp["steps"])
            why.append(
                f"  {row['id']}: --find-peak: highest VALID {fp['peak_qps']} qps ({steps}; stopped: {fp['stopped']})"
            )
        for figure in lg.get("accuracy") or []:
            why.append(
                f"  {row['id']}: accuracy on {figure['samples']} samples vs {figure['reference']}: "
                f"rel L2 {figure['rel_l2']:.4g}, top-1 {figure['top1_agreement']:.3f}"
            )
    return ["", "MLPerf LoadGen:", *_columns(head, lines), "", "LoadGen's verdict:", *why]


def _open_loop_lines(rows: list[dict]) -> list[str]:
    """Open-loop rows: latency counted from the schedule, and how late the client started requests."""
    loop = [r for r in rows if r.get("open_loop")]
    if not loop:
        return []
    out = ["", "open loop (latency from each request's scheduled time):"]
    for row in loop:
        o = row["open_loop"]
        lag = o["schedule_lag_ms"]
        out.append(
            f"  {row['id']}: {o['arrival']} {o['rate']:g} req/s asked, {o['achieved_rate']:.2f} achieved; "
            f"schedule lag median {lag['median']:.2f} ms, max {lag['max']:.2f} ms, "
            f"first tenth {lag['first_tenth_mean']:.2f} -> last tenth {lag['last_tenth_mean']:.2f} ms"
            + (" (growing: the client fell behind)" if lag["growing"] else "")
        )
    return out
