"""Plots of a bit-bench result: how latency is distributed, what batching buys, and what concurrency costs.

    from bit_trt.bench.plots import write_plots
    paths = write_plots(result, samples, "out/bench")   # result: bit-bench/1 or /2; samples: id -> latencies (ms)

- latency_cdf.png: the share of requests served within x ms, per configuration (p50 and p99 marked).
- throughput_vs_batch.png: images/s against batch size per backend and precision, at the lowest concurrency.
- latency_vs_throughput.png: median (solid) and p99 (dashed; or the highest percentile asked) latency against
  images/s as concurrency rises.
Every label that shows speed also shows the precision's accuracy cost. Skipped rows are never drawn, and a plot
whose axis would have a single value (one batch size, one concurrency) is not written.
matplotlib (bit-trt[bench]) is imported on first use, with the Agg backend: a server without it imports this module.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..engine.atomic_write import atomic_path
from ..engine.errors import BitError, require

# Up to this many configurations share one CDF plot; beyond it each (batch, concurrency) gets its own subplot.
_CDF_LINES_IN_ONE_PLOT = 5
# An axis is logarithmic when its values span more than this factor: otherwise the fast configurations
# would be squeezed into the left edge by the slowest one.
_LOG_SPAN = 10.0
_MARKERS = "osD^vP*X"
_DPI = 120


def write_plots(result: dict, samples: dict[str, list[float]], out_dir: str) -> list[str]:
    """Write the plots that `result` can make meaningful into `out_dir` (created); return the paths written."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise BitError(f"cannot write plots to {out_dir}: {exc.strerror or exc}") from exc
    plt = _pyplot()
    rows = [row for row in result.get("rows", []) if row.get("status") == "measured"]
    engines = _Engines(rows)
    written = []
    for name, draw in (
        ("latency_cdf.png", lambda: _latency_cdf(plt, result, rows, samples, engines)),
        ("throughput_vs_batch.png", lambda: _throughput_vs_batch(plt, result, rows, engines)),
        ("latency_vs_throughput.png", lambda: _latency_vs_throughput(plt, result, rows, engines)),
    ):
        figure = draw()
        if figure is None:
            continue
        try:
            written.append(_save(figure, os.path.join(out_dir, name)))
        finally:
            plt.close(figure)  # bit-bench may run long: a figure left open keeps its memory until exit
    return written


def _pyplot():
    matplotlib = require("matplotlib")
    # Agg renders files only: no display is needed, and none is opened on a desktop either.
    matplotlib.use("Agg")
    return require("matplotlib.pyplot")


def _save(figure, path: str) -> str:
    # A reader (or a CI artifact upload) never sees half a PNG.
    with atomic_path(path, "plot") as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI)
    return path


# --- labels -----------------------------------------------------------------------------------------------------


def _context(result: dict) -> str:
    """Model, resolution, mode and host: what a plot's numbers depend on, for its title."""
    host = result.get("host", {})
    bundles = list(result["bundles"].values()) if "bundles" in result else [result.get("bundle", {})]
    model = "BiT " + " and ".join(f"{b.get('variant', '?')} at {b.get('resolution', '?')} px" for b in bundles)
    mode = f"{result.get('settings', {}).get('mode', '?')} mode"
    machine = str(host.get("cpu") or "unknown CPU")
    if host.get("cores"):
        machine += f" ({host['cores']} cores)"
    if host.get("gpu"):
        machine += f" + {host['gpu']}"
    return f"{model}, {mode}, {machine}"


def _title(figure, what: str, result: dict) -> None:
    figure.suptitle(f"{what}\n{_context(result)}", fontsize=11)


def _engine(row: dict) -> tuple[str, str]:
    """A line of the plots: one backend and precision, on one bundle where the run measured several."""
    model = f"{row['model']} " if row.get("model") else ""
    return model + row["backend"], row["precision"]


def _group(rows: list[dict], key) -> dict:
    groups: dict = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


class _Engines:
    """Per backend and precision: one color in every plot, so that lines match across the three files, and the
    accuracy cost that goes beside every speed it is shown with."""

    def __init__(self, rows: list[dict]):
        by_engine = _group(rows, _engine)
        self.color = {engine: f"C{i % 10}" for i, engine in enumerate(sorted(by_engine))}
        self.cost = {engine: _accuracy(members) for engine, members in by_engine.items()}

    def label(self, engine: tuple[str, str], detail: str = "") -> str:
        return f"{engine[0]} {engine[1]}{detail} ({self.cost[engine]})"


def _accuracy(rows: list[dict]) -> str:
    """The accuracy cost of a precision, the worst over `rows` (one backend and precision, several configurations)."""
    measured = [row["accuracy"] for row in rows if row.get("accuracy")]
    if not measured:
        return "accuracy not measured"
    top1 = min(a["top1_agreement"] for a in measured)
    rel_l2 = max(a["rel_l2"] for a in measured)
    text = f"top-1 {top1:.1%}, rel L2 {rel_l2:.2g}"
    if any(a.get("gate") == "fail" for a in measured):
        text += ", FAILS gate"
    return text


def _footnotes(figure, result: dict, rows_with_hollow_markers: list[dict] | None = None) -> None:
    """What is missing from the plot, and what a hollow marker means, in a strip below the axes."""
    left = right = ""
    skipped = [row["id"] for row in result.get("rows", []) if row.get("status") != "measured"]
    if skipped:
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        left = f"Not measured (skipped; reasons in the result): {', '.join(skipped[:3])}{more}"
    if any(row.get("stable") is False for row in rows_with_hollow_markers or []):
        right = "hollow marker: unstable (its last windows disagree by over 10%)"
    if not (left or right):
        return
    # The layout engine places axes and legends only: keep a strip free for the notes, or they overlap x labels.
    strip = 0.3 / figure.get_figheight()
    figure.get_layout_engine().set(rect=(0, strip, 1, 1 - strip))  # left, bottom, width, height
    figure.text(0.01, strip / 3, left, fontsize=8, color="0.35")
    figure.text(0.99, strip / 3, right, fontsize=8, color="0.35", ha="right")


def _scale_axis(ax, axis: str, values: list[float]) -> None:
    positive = [v for v in values if v > 0]
    if not (positive and len(positive) == len(values) and max(positive) / min(positive) > _LOG_SPAN):
        return
    ticker = require("matplotlib.ticker")
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    # Plain numbers at 1-2-5 steps: decade ticks alone (10^2, 10^3) leave a latency axis nearly unlabelled.
    which = ax.xaxis if axis == "x" else ax.yaxis
    which.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    which.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    which.set_minor_formatter(ticker.NullFormatter())


def _hollow_if_unstable(ax, rows: list[dict], x: list, y: list, marker: str, color: str) -> None:
    # A number from a noisy run is drawn, but hollow: the reader sees it and knows not to trust it.
    for row, xi, yi in zip(rows, x, y):
        if row.get("stable") is False:
            ax.plot(xi, yi, marker, color=color, markerfacecolor="white", zorder=3)


# --- latency CDF --------------------------------------------------------------------------------------------------


def _latency_cdf(plt, result: dict, rows: list[dict], samples: dict, engines: _Engines):
    lines = [(row, np.sort(np.asarray(samples[row["id"]], dtype=float))) for row in rows if samples.get(row["id"])]
    if not lines:
        return None
    one_plot = len(lines) <= _CDF_LINES_IN_ONE_PLOT
    groups: dict = {}
    for row, latencies in sorted(lines, key=lambda line: (line[0]["batch"], line[0]["concurrency"])):
        groups.setdefault(None if one_plot else (row["batch"], row["concurrency"]), []).append((row, latencies))
    ncols = 1 if len(groups) == 1 else 2  # one group: no empty second column beside it
    nrows = math.ceil(len(groups) / ncols)
    size = (10, 5) if one_plot else (12, 5.5) if ncols == 1 else (13.5, 1.2 + 3.6 * nrows)
    figure, axes = plt.subplots(nrows, ncols, figsize=size, sharey=True, layout="constrained", squeeze=False)
    for ax, (group, members) in zip(axes.flat, groups.items()):
        unstable_notes = 0
        for row, latencies in members:
            engine = _engine(row)
            color = engines.color[engine]
            fraction = np.arange(1, len(latencies) + 1) / len(latencies)
            ax.plot(
                latencies, fraction, drawstyle="steps-post", color=color, label=f"{row['id']} ({engines.cost[engine]})"
            )
            p50, p99 = np.percentile(latencies, [50, 99])
            ax.plot([p50, p99], [0.5, 0.99], "o", color=color, markersize=4)
            if row.get("stable") is False:
                note = f"unstable (CV {row.get('cv', 0):.0%})"
                # On a white box: the note sits between curves and must stay readable where one crosses it.
                box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
                # stacked, one line per note: two unstable curves often share a median
                offset = (5, -14 - 11 * unstable_notes)
                unstable_notes += 1
                ax.annotate(
                    note, (p50, 0.5), xytext=offset, textcoords="offset points", fontsize=7, color=color, bbox=box
                )
        for level in (0.5, 0.99):
            ax.axhline(level, color="0.75", linewidth=0.8, linestyle=":", zorder=0)
        _scale_axis(ax, "x", [float(latencies[i]) for _, latencies in members for i in (0, -1)])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("latency per request (ms)")
        ax.grid(True, which="major", alpha=0.3)
        if group is not None:
            ax.set_title(f"batch {group[0]}, concurrency {group[1]}", fontsize=10)
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of requests")
        ax.set_yticks([0, 0.25, 0.5, 0.75, 0.9, 0.99], ["0", "0.25", "p50", "0.75", "p90", "p99"])
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    # Steep CDF curves can cross any corner of the axes: the legend goes outside, where it covers nothing.
    if one_plot:
        axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    else:
        # The subplot title says batch and concurrency; the color says backend and precision: one legend for all.
        shown = sorted({_engine(row) for row, _ in lines})
        handles = [plt.Line2D([], [], color=engines.color[engine]) for engine in shown]
        labels = [engines.label(engine) for engine in shown]
        # Beside the grid at mid height: "outside upper" legends share the suptitle's band and can cover it.
        figure.legend(handles, labels, loc="outside right center", fontsize=8)
    _title(figure, "Latency distribution per configuration", result)
    _footnotes(figure, result)
    return figure


# --- throughput against batch size --------------------------------------------------------------------------------


def _throughput_vs_batch(plt, result: dict, rows: list[dict], engines: _Engines):
    if not rows:
        return None
    # Batching is compared without queueing on top: at concurrency 1, or the lowest that was measured.
    concurrency = min(row["concurrency"] for row in rows)
    at_level = [row for row in rows if row["concurrency"] == concurrency]
    batches = sorted({row["batch"] for row in at_level})
    if len(batches) < 2:
        return None
    figure, ax = plt.subplots(figsize=(10, 5.5), layout="constrained")
    by_engine = _group(at_level, _engine)
    for i, (engine, members) in enumerate(sorted(by_engine.items())):
        members.sort(key=lambda row: row["batch"])
        color = engines.color[engine]
        x = [row["batch"] for row in members]
        y = [row["throughput_ips"] for row in members]
        marker = _MARKERS[i % len(_MARKERS)]
        ax.plot(x, y, color=color, marker=marker, label=engines.label(engine))
        _hollow_if_unstable(ax, members, x, y, marker, color)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()  # log2 minor ticks would suggest batch sizes that were not measured
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (images/s)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="backend precision (accuracy cost)")
    _title(figure, f"Throughput against batch size, concurrency {concurrency}", result)
    _footnotes(figure, result, at_level)
    return figure


# --- latency against throughput -----------------------------------------------------------------------------------


def _tail_key(latency_ms: dict) -> str:
    """The highest percentile the run asked for (p99 by default; --percentiles may leave it out)."""
    keys = [k for k in latency_ms if k.startswith("p")]
    return max(keys, key=lambda k: float(k[1:].replace("_", "."))) if keys else "max"


def _latency_vs_throughput(plt, result: dict, rows: list[dict], engines: _Engines):
    by_config = _group(rows, lambda row: (*_engine(row), row["batch"]))
    # A line needs two concurrency levels to show anything; single points would only repeat the batch plot.
    lines = {key: members for key, members in by_config.items() if len({row["concurrency"] for row in members}) > 1}
    if not lines:
        return None
    batches = sorted({key[2] for key in lines})
    figure, ax = plt.subplots(figsize=(11, 6), layout="constrained")
    latencies = []
    for (backend, precision, batch), members in sorted(lines.items()):
        members.sort(key=lambda row: row["concurrency"])
        color = engines.color[(backend, precision)]
        marker = _MARKERS[batches.index(batch) % len(_MARKERS)]
        x = [row["throughput_ips"] for row in members]
        median = [row["latency_ms"]["median"] for row in members]
        tail = _tail_key(members[0]["latency_ms"])
        p99 = [row["latency_ms"][tail] for row in members]
        latencies += median + p99
        ax.plot(x, median, color=color, marker=marker, label=engines.label((backend, precision), f" b{batch}"))
        ax.plot(x, p99, color=color, marker=marker, markersize=4, linestyle="--", alpha=0.5)
        _hollow_if_unstable(ax, members, x, median, marker, color)
        for row, xi, yi in zip(members, x, median):
            ax.annotate(f"c{row['concurrency']}", (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=7)
    _scale_axis(ax, "y", latencies)
    ax.set_xlabel("throughput (images/s)")
    ax.set_ylabel("latency per request (ms)")
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    # Explain the two line styles once, in the legend, instead of doubling every entry.
    handles += [plt.Line2D([], [], color="0.3"), plt.Line2D([], [], color="0.3", linestyle="--", alpha=0.5)]
    labels += ["median (cN: concurrency N)", _tail_key(rows[0]["latency_ms"])]
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    _title(figure, "Latency against throughput as concurrency rises", result)
    _footnotes(figure, result, [row for members in lines.values() for row in members])
    return figure
