"""`bit-export` as a user runs it: a fresh process, its output, its exit code, and what it leaves on disk."""

import json
import resource
import signal
import subprocess
import sys

import numpy as np

from bit_trt.export.bit_tf import BiTModule, forward
from bit_trt.export.tensorflow_import import import_tensorflow
from tests.conftest import TINY_ARGS, TINY_ARGS_NO_PARITY, run_cli

EXPORT = "bit_trt.export.cli"


def _one_line_error(proc):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("bit-export: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _nothing_left(parent, name):
    return [p.name for p in parent.iterdir() if name in p.name] == []


def test_export_prints_progress_and_summary(tmp_path):
    out = tmp_path / "b"
    proc = run_cli(EXPORT, *TINY_ARGS, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "converting tiny with tf2onnx" in proc.stderr and "parity" in proc.stderr
    assert "oneDNN" not in proc.stderr  # TF's start-up chatter is kept out of the progress
    s = proc.stdout
    assert "SYNTHETIC weights: NOT trained" in s and "model.fp32.onnx" in s and "PASS" in s and "peak RSS" in s
    assert len(s.splitlines()) <= 24  # one screen
    assert (out / "manifest.json").is_file()


def test_help_is_enough_to_use_it():
    proc = run_cli(EXPORT, "--help")
    assert proc.returncode == 0
    for word in ("--model", "--variant", "--precision", "--out", "synthetic", "SavedModel", ".npz", "examples"):
        assert word in proc.stdout


def test_same_input_same_bytes_whatever_the_hash_seed(tmp_path):
    """The calibration cache is keyed by the FP32 model's checksum: exports must be byte-reproducible."""
    digests = []
    for seed in ("1", "2"):
        out = tmp_path / f"b{seed}"
        proc = run_cli(
            EXPORT,
            "--variant",
            "tiny",
            "--resolution",
            "32",
            "--num-classes",
            "10",
            "--out",
            out,
            "--engine",
            "none",
            "--parity-images",
            "2",
            env={"PYTHONHASHSEED": seed},
        )
        assert proc.returncode == 0, proc.stderr
        digests.append(json.loads((out / "manifest.json").read_text())["artifacts"][0]["sha256"])
    assert digests[0] == digests[1]


def test_unknown_variant(tmp_path):
    proc = run_cli(EXPORT, "--variant", "r50x2", "--out", tmp_path / "x")
    assert proc.returncode != 0
    assert "unknown variant 'r50x2'" in _one_line_error(proc)


def test_existing_output_is_never_overwritten(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    proc = run_cli(EXPORT, "--variant", "tiny", "--out", tmp_path / "taken")
    assert proc.returncode == 1 and "already exists" in _one_line_error(proc)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_unwritable_output():
    proc = run_cli(EXPORT, *TINY_ARGS_NO_PARITY, "--out", "/proc/bit-trt-bundle")
    assert proc.returncode == 1 and "/proc" in _one_line_error(proc)


def test_corrupt_savedmodel(tmp_path):
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"\x08\x01garbage")
    proc = run_cli(EXPORT, "--model", sm, "--out", tmp_path / "b")
    assert proc.returncode == 1 and "not a loadable SavedModel" in _one_line_error(proc)
    assert _nothing_left(tmp_path, "b")


def test_bad_npz(tmp_path, tiny_weights):
    w = dict(tiny_weights)
    w.pop("resnet/head/conv2d/bias")
    np.savez(tmp_path / "bad.npz", **w)
    proc = run_cli(EXPORT, "--model", tmp_path / "bad.npz", "--out", tmp_path / "b")
    assert proc.returncode == 1 and "missing key 'resnet/head/conv2d/bias'" in _one_line_error(proc)


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # make the kernel return EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))


def test_disk_full_mid_write_leaves_nothing(tmp_path):
    """A 2 MB file-size limit: the 12 MB ONNX write fails part way, like a full disk."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            EXPORT,
            "--variant",
            "tiny",
            "--resolution",
            "64",
            "--out",
            str(tmp_path / "b"),
            "--parity-images",
            "2",
        ],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        timeout=600,
    )
    assert proc.returncode == 1
    assert "disk full" in _one_line_error(proc)
    assert list(tmp_path.iterdir()) == []


class _WrongContract(BiTModule):
    """A SavedModel that expects [-1,1] inputs while our export assumes TF Hub's [0,1]: parity must catch it."""

    @import_tensorflow().function(input_signature=[import_tensorflow().TensorSpec([None, None, None, 3], "float32")])
    def __call__(self, images):
        return forward(self.weights, (images + 1.0) / 2.0, self._variant, "NHWC")


def test_parity_breach_fails_with_report_and_writes_nothing(tmp_path, tiny, tiny_weights):
    tf = import_tensorflow()
    tf.saved_model.save(_WrongContract(tiny_weights, tiny), str(tmp_path / "sm"))
    proc = run_cli(EXPORT, "--model", tmp_path / "sm", "--resolution", "64", "--out", tmp_path / "b")
    assert proc.returncode == 1
    assert "breaks parity" in _one_line_error(proc)
    assert "parity report:" in proc.stderr and "rel_l2=" in proc.stderr
    assert _nothing_left(tmp_path, "b")


def test_fine_tuned_head_with_own_labels(tmp_path):
    labels = tmp_path / "flowers.txt"
    labels.write_text("daisy\ndandelion\nrose\nsunflower\ntulip\n")
    out = tmp_path / "b"
    proc = run_cli(EXPORT, *TINY_ARGS, "--num-classes", "5", "--labels", labels, "--out", out)
    assert proc.returncode == 0, proc.stderr
    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.parity_set import real_photo_paths

    bundle = load_bundle(str(out))
    assert bundle.num_classes == 5 and bundle.manifest["labels"]["kind"] == "custom"
    assert [entry["name"] for entry in bundle.labels()] == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    shown = run_cli("bit_trt.engine.classify_cli", out, real_photo_paths()[0], "--top", "3").stdout.splitlines()
    assert len(shown) == 4 and all(
        line.split("%", 1)[1].strip() in {"daisy", "dandelion", "rose", "sunflower", "tulip"} for line in shown[1:]
    )


def test_labels_count_must_match_head(tmp_path):
    labels = tmp_path / "two.txt"
    labels.write_text("a\nb\n")
    proc = run_cli(EXPORT, *TINY_ARGS_NO_PARITY, "--num-classes", "5", "--labels", labels, "--out", tmp_path / "b")
    assert proc.returncode == 1 and "has 2 names; the model has 5 classes" in _one_line_error(proc)


def test_cli_defaults_are_the_options_defaults():
    """bit-export with only --out asks for exactly ExportOptions(out=...): no default is written twice."""
    from bit_trt.export.cli import build_parser, options_from_args
    from bit_trt.export.exporter import ExportOptions

    assert options_from_args(build_parser().parse_args(["--out", "x"])) == ExportOptions(out="x")


def test_cli_flags_reach_the_options():
    from bit_trt.export.cli import build_parser, options_from_args

    o = options_from_args(
        build_parser().parse_args(
            [
                "--out",
                "x",
                "--precision",
                "all",
                "--calib-method",
                "entropy",
                "--calib-batch",
                "3",
                "--max-batch",
                "16",
                "--rtx-cc",
                "SM89",
                "--rtx-cc",
                "SM120",
                "--hardware-compat",
                "ampere_plus",
                "--labels",
                "l.txt",
                "--parity-images",
                "0",
                "--builder-opt-level",
                "5",
                "--int8-sensitivity",
            ]
        )
    )
    assert o.precisions == ("fp32", "fp16", "int8") and o.labels_file == "l.txt" and o.parity_synthetic == 0
    assert o.int8.method == "entropy" and o.int8.calib_batch == 3 and o.int8.force_sensitivity
    assert o.build.max_batch == 16 and o.build.rtx_compute_capabilities == ("SM89", "SM120")
    assert o.build.hardware_compatibility == "ampere_plus" and o.build.optimization_level == 5
