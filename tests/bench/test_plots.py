"""bench/plots.py: the three PNGs are written from a bit-bench/1 result, and only when their data means something."""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest

from bit_trt.bench.plots import write_plots
from bit_trt.engine.errors import BitError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = ["latency_cdf.png", "throughput_vs_batch.png", "latency_vs_throughput.png"]
SKIPPED_ID = "openvino/int8/b8/c2"
# Median ms per image at batch 1, concurrency 1: R50x1 at 480 px on two EPYC cores (bench/results/runtime_cpu_*).
MS_PER_IMAGE = {("ort-cpu", "fp32"): 220.0, ("ort-cpu", "int8"): 180.0, ("openvino", "fp32"): 150.0}
MS_PER_IMAGE[("openvino", "int8")] = 62.0
ACCURACY = {
    "fp32": {"rel_l2": 6.6e-6, "cosine": 1.0, "top1_agreement": 1.0, "gate": "pass"},
    "int8": {"rel_l2": 0.031, "cosine": 0.9995, "top1_agreement": 0.984, "gate": "pass"},
}


def synthetic(batches=(1, 8), concurrencies=(1, 2)):
    """2 backends x 2 precisions x batches x concurrency levels, with per-request samples; SKIPPED_ID is skipped."""
    rng = np.random.default_rng(0)
    rows, samples = [], {}
    for (backend, precision), per_image in MS_PER_IMAGE.items():
        for batch in batches:
            for concurrency in concurrencies:
                row_id = f"{backend}/{precision}/b{batch}/c{concurrency}"
                row = {
                    "id": row_id,
                    "backend": backend,
                    "precision": precision,
                    "batch": batch,
                    "concurrency": concurrency,
                    "mode": "model",
                    "status": "measured",
                    "skip_reason": None,
                    "accuracy": ACCURACY[precision],
                }
                if row_id == SKIPPED_ID:
                    row.update(status="skipped", skip_reason="exceeds --max-seconds", accuracy=None)
                    rows.append(row)
                    continue
                # Batching saves a little per image; two requests on two cores mostly queue.
                median = per_image * batch**0.93 * (1 + 0.85 * (concurrency - 1))
                latencies = median * rng.lognormal(0.0, 0.04, 200) + rng.exponential(0.03 * median, 200)
                samples[row_id] = latencies.tolist()
                p = np.percentile(latencies, [50, 90, 95, 99])
                row.update(
                    throughput_ips=batch * concurrency * 1000 / float(latencies.mean()),
                    latency_ms={
                        "min": float(latencies.min()),
                        "mean": float(latencies.mean()),
                        "median": float(p[0]),
                        "p90": float(p[1]),
                        "p95": float(p[2]),
                        "p99": float(p[3]),
                        "max": float(latencies.max()),
                    },
                    stable=row_id != "ort-cpu/fp32/b1/c2",
                    cv=float(latencies.std() / latencies.mean()),
                )
                rows.append(row)
    result = {
        "schema": "bit-bench/1",
        "bundle": {"path": "out/r50x1", "variant": "r50x1", "resolution": 480},
        "host": {"cpu": "AMD EPYC 9B14", "cores": 2, "gpu": None},
        "settings": {"mode": "model", "percentiles": [50, 90, 95, 99]},
        "rows": rows,
    }
    return result, samples


@pytest.fixture
def drawn(monkeypatch):
    """Runs write_plots and records, per file name, the title and legend texts of the figure that was saved."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    seen = {}
    save = Figure.savefig

    def recording_savefig(figure, path, **kwargs):
        legends = [ax.get_legend() for ax in figure.axes if ax.get_legend()] + list(figure.legends)
        name = os.path.basename(path).lstrip(".").split(".")[0] + ".png"  # the target's, from its temporary name
        seen[name] = {
            "title": figure.get_suptitle(),
            "labels": [text.get_text() for legend in legends for text in legend.get_texts()],
        }
        return save(figure, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)

    def run(result, samples, out_dir):
        return write_plots(result, samples, str(out_dir)), seen

    return run


def _assert_png(path):
    from matplotlib.image import imread

    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, path
    image = imread(path)
    height, width = image.shape[:2]
    assert 400 <= height <= 3000 and 600 <= width <= 3000, (path, image.shape)
    assert image[..., :3].std() > 0.05, f"{path} is blank"


def test_all_three_plots_are_written_as_pngs(drawn, tmp_path):
    result, samples = synthetic()
    out_dir = tmp_path / "new" / "plots"
    paths, seen = drawn(result, samples, out_dir)
    assert [os.path.basename(p) for p in paths] == ALL_PLOTS
    for path in paths:
        assert os.path.dirname(path) == str(out_dir)
        _assert_png(path)
    assert sorted(os.listdir(out_dir)) == sorted(ALL_PLOTS), "a temporary file was left behind"
    for name in ALL_PLOTS:
        title = seen[name]["title"]
        assert all(part in title for part in ("r50x1", "480", "model", "AMD EPYC 9B14")), title


def test_speed_is_labelled_with_its_accuracy_cost(drawn, tmp_path):
    result, samples = synthetic()
    _, seen = drawn(result, samples, tmp_path)
    throughput = seen["throughput_vs_batch.png"]["labels"]
    assert "openvino int8 (top-1 98.4%, rel L2 0.031)" in throughput, throughput
    assert "ort-cpu fp32 (top-1 100.0%, rel L2 6.6e-06)" in throughput, throughput
    assert "openvino int8 b1 (top-1 98.4%, rel L2 0.031)" in seen["latency_vs_throughput.png"]["labels"]


def test_a_failed_gate_and_missing_accuracy_are_said(drawn, tmp_path):
    result, samples = synthetic()
    for row in result["rows"]:
        if row["backend"] == "openvino" and row["precision"] == "int8" and row["status"] == "measured":
            row["accuracy"] = dict(ACCURACY["int8"], gate="fail")
        if row["backend"] == "ort-cpu" and row["precision"] == "int8":
            row["accuracy"] = None
    _, seen = drawn(result, samples, tmp_path)
    labels = seen["throughput_vs_batch.png"]["labels"]
    assert "openvino int8 (top-1 98.4%, rel L2 0.031, FAILS gate)" in labels, labels
    assert "ort-cpu int8 (accuracy not measured)" in labels, labels


def test_skipped_rows_and_rows_without_samples_are_not_drawn(drawn, tmp_path):
    result, samples = synthetic()
    # A skipped row may carry leftovers (zeros, samples of an aborted run): none of it may reach a plot.
    skipped = next(row for row in result["rows"] if row["id"] == SKIPPED_ID)
    skipped.update(throughput_ips=0.0, latency_ms=None)
    samples[SKIPPED_ID] = [1.0, 2.0]
    del samples["openvino/fp32/b8/c1"]
    samples["ort-cpu/int8/b1/c1"] = []
    paths, seen = drawn(result, samples, tmp_path)
    assert [os.path.basename(p) for p in paths] == ALL_PLOTS
    # openvino int8 at batch 8 is left with concurrency 1 alone: no line for it.
    labels = seen["latency_vs_throughput.png"]["labels"]
    assert "openvino int8 b1 (top-1 98.4%, rel L2 0.031)" in labels
    assert not [label for label in labels if label.startswith("openvino int8 b8")], labels


def test_one_cdf_plot_is_labelled_by_configuration_id(drawn, tmp_path):
    result, samples = synthetic(batches=(1,), concurrencies=(1,))
    first = next(row for row in result["rows"] if row["id"] == "ort-cpu/fp32/b1/c1")
    first.update(status="skipped", skip_reason="exceeds --max-seconds")  # its samples stay in the dict
    del samples["ort-cpu/int8/b1/c1"]
    paths, seen = drawn(result, samples, tmp_path)
    assert [os.path.basename(p) for p in paths] == ["latency_cdf.png"]
    _assert_png(paths[0])
    assert seen["latency_cdf.png"]["labels"] == [
        "openvino/fp32/b1/c1 (top-1 100.0%, rel L2 6.6e-06)",
        "openvino/int8/b1/c1 (top-1 98.4%, rel L2 0.031)",
    ]


def test_many_cdf_lines_share_one_legend_by_backend_and_precision(drawn, tmp_path):
    result, samples = synthetic()
    _, seen = drawn(result, samples, tmp_path)
    assert seen["latency_cdf.png"]["labels"] == [
        "openvino fp32 (top-1 100.0%, rel L2 6.6e-06)",
        "openvino int8 (top-1 98.4%, rel L2 0.031)",
        "ort-cpu fp32 (top-1 100.0%, rel L2 6.6e-06)",
        "ort-cpu int8 (top-1 98.4%, rel L2 0.031)",
    ]


def test_a_single_batch_size_writes_no_throughput_vs_batch(drawn, tmp_path):
    result, samples = synthetic(batches=(8,))
    paths, _ = drawn(result, samples, tmp_path)
    assert [os.path.basename(p) for p in paths] == ["latency_cdf.png", "latency_vs_throughput.png"]
    assert not (tmp_path / "throughput_vs_batch.png").exists()


def test_a_single_concurrency_writes_no_latency_vs_throughput(drawn, tmp_path):
    result, samples = synthetic(concurrencies=(1,))
    paths, _ = drawn(result, samples, tmp_path)
    assert [os.path.basename(p) for p in paths] == ["latency_cdf.png", "throughput_vs_batch.png"]


def test_nothing_measured_writes_nothing(drawn, tmp_path):
    result, _ = synthetic()
    for row in result["rows"]:
        row["status"] = "skipped"
    assert drawn(result, {}, tmp_path)[0] == []
    assert os.listdir(tmp_path) == []


def test_an_unwritable_out_dir_is_a_one_line_bit_error(tmp_path):
    pytest.importorskip("matplotlib")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result, samples = synthetic()
    with pytest.raises(BitError) as info:
        write_plots(result, samples, str(blocker / "plots"))
    message = str(info.value)
    assert message.startswith(f"cannot write plots to {blocker / 'plots'}: ") and "\n" not in message, message


def test_the_input_is_not_changed(drawn, tmp_path):
    result, samples = synthetic()
    before = copy.deepcopy((result, samples))
    drawn(result, samples, tmp_path)
    assert (result, samples) == before


def test_missing_matplotlib_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result, samples = synthetic()
    with pytest.raises(BitError) as info:
        write_plots(result, samples, str(tmp_path))
    assert str(info.value) == "matplotlib is not installed; install it with: pip install 'bit-trt[bench]'"


def test_importing_the_module_does_not_import_matplotlib():
    code = "import sys, bit_trt.bench.plots; print('matplotlib' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
