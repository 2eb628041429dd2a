"""TensorRT plans through the one build path: TensorRT-RTX on this CPU-only host, TensorRT on a GPU host."""

import json
import os

import onnx
import pytest
from onnx import helper

from bit_trt.engine.errors import BitError
from bit_trt.export import trt_engine
from tests.conftest import TINY_ARGS, TINY_RES, run_cli

rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is part of the CI install (.[rtx])")


def test_every_variant_builds(tiny_bundle, tmp_path):
    cache = tmp_path / "timing.cache"
    options = trt_engine.BuildOptions(min_batch=1, opt_batch=2, max_batch=4, timing_cache=str(cache))
    for precision in ("fp32", "fp16"):
        plan, record = trt_engine.build(str(tiny_bundle / f"model.{precision}.onnx"), "images", TINY_RES, options, rtx)
        assert len(plan) > 1_000_000
        assert record["library"] == "tensorrt_rtx" and record["profile"] == {"min": 1, "opt": 2, "max": 4}
        assert record["strongly_typed"] is True  # as the network reports it
        assert record["timing_cache"] == "not supported (TensorRT-RTX compiles tactics at run time)"
    assert not cache.exists()  # TensorRT-RTX has no timing cache: none is pretended


def _tensorrt_of_version(version: str):
    """The two names the flag decision reads from the `tensorrt` module, as 10.16 and 11.4 both define them."""
    import types

    creation = types.SimpleNamespace(STRONGLY_TYPED=1)
    return types.SimpleNamespace(__name__="tensorrt", __version__=version, NetworkDefinitionCreationFlag=creation)


def test_strongly_typed_flag_only_where_weak_typing_exists():
    """TensorRT 10 needs STRONGLY_TYPED; 11.4 keeps it deprecated and ignored; TensorRT-RTX is never asked."""
    assert trt_engine.network_creation_flags(_tensorrt_of_version("10.16.1.11")) == 1 << 1
    assert trt_engine.network_creation_flags(_tensorrt_of_version("11.4.0.106")) == 0
    assert trt_engine.strongly_typed(_tensorrt_of_version("11.4.0.106"), network=None) is True
    assert trt_engine.network_creation_flags(rtx) == 0


def test_timing_cache_record_says_why_none_was_used():
    assert trt_engine._timing_cache_state("tensorrt", used=False, hit=False) == "not used"
    assert trt_engine._timing_cache_state("tensorrt", used=True, hit=True) == "reused"
    assert "TensorRT-RTX" in trt_engine._timing_cache_state("tensorrt_rtx", used=False, hit=False)


def test_rtx_targets_with_tensorrt_name_the_real_flag(tmp_path):
    proc = run_cli("bit_trt.export.cli", "--engine", "tensorrt", "--rtx-cc", "SM89", "--out", tmp_path / "b")
    assert proc.returncode == 1 and "--rtx-cc applies to TensorRT-RTX engines only" in proc.stderr
    assert "--rtx-compute-capability" not in proc.stderr and not (tmp_path / "b").exists()


def test_export_records_engines(tmp_path):
    out = tmp_path / "b"
    proc = run_cli(
        "bit_trt.export.cli",
        *TINY_ARGS,
        "--precision",
        "fp16",
        "--out",
        out,
        "--max-batch",
        "4",
        "--opt-batch",
        "2",
        env={"BIT_TRT_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "manifest.json").read_text())
    plans = [a for a in m["artifacts"] if a["kind"] == "engine"]
    assert sorted(p["precision"] for p in plans) == ["fp16", "fp32"]
    for p in plans:
        assert p["file"] == f"model.{p['precision']}.rtx{rtx.__version__}.rtx.plan"
        assert os.path.getsize(out / p["file"]) == p["bytes"] and p["from"] == f"model.{p['precision']}.onnx"
    assert "tensorrt_rtx" in proc.stdout


def test_parse_failure_names_the_node(tmp_path):
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["images"], ["r"], name="fine"),
            helper.make_node("StringNormalizer", ["r"], ["logits"], name="the_culprit"),
        ],
        "g",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [None, 8, 8, 3])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [None, 8, 8, 3])],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(BitError, match="cannot parse bad.onnx: node the_culprit"):
        trt_engine.build(str(path), "images", 8, trt_engine.BuildOptions(), rtx)


def test_bad_profile_is_refused(tiny_bundle):
    with pytest.raises(BitError, match="1 <= min <= opt <= max"):
        trt_engine.build(
            str(tiny_bundle / "model.fp32.onnx"),
            "images",
            TINY_RES,
            trt_engine.BuildOptions(min_batch=8, opt_batch=4, max_batch=2),
            rtx,
        )


def test_unknown_rtx_compute_capability(tiny_bundle):
    with pytest.raises(BitError, match="unknown compute capability 'SM99'"):
        trt_engine.build(
            str(tiny_bundle / "model.fp32.onnx"),
            "images",
            TINY_RES,
            trt_engine.BuildOptions(rtx_compute_capabilities=("SM99",)),
            rtx,
        )


def test_without_any_builder_onnx_is_still_written(tmp_path):
    """A host with neither library: shadow both with modules that fail to import, as when absent."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    for name in ("tensorrt", "tensorrt_rtx"):
        (shadow / f"{name}.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": f"{shadow}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = tmp_path / "b"
    proc = run_cli("bit_trt.export.cli", *TINY_ARGS, "--out", out, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "no TensorRT or TensorRT-RTX on this host" in proc.stderr
    assert (out / "model.fp32.onnx").is_file() and not list(out.glob("*.plan"))
    strict = run_cli("bit_trt.export.cli", *TINY_ARGS, "--out", tmp_path / "c", "--require-engine", env=env)
    assert strict.returncode == 1 and "--require-engine" in strict.stderr and not (tmp_path / "c").exists()


def test_tensorrt_requested_where_missing(tmp_path):
    proc = run_cli(
        "bit_trt.export.cli",
        *TINY_ARGS,
        "--out",
        tmp_path / "b",
        "--engine",
        "tensorrt",
        env={"PYTHONPATH": _shadow(tmp_path, "tensorrt")},
    )
    assert proc.returncode == 1 and "pip install 'bit-trt[gpu]'" in proc.stderr


def _shadow(tmp_path, name):
    d = tmp_path / f"shadow_{name}"
    d.mkdir()
    (d / f"{name}.py").write_text("raise ImportError('not installed')\n")
    return str(d)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_plan_on_a_gpu_host(tiny_bundle, tmp_path):
    trt = pytest.importorskip("tensorrt", reason="needs TensorRT (pip install 'bit-trt[gpu]')")

    options = trt_engine.BuildOptions(max_batch=4, opt_batch=2, timing_cache=str(tmp_path / "timing.cache"))
    plan, record = trt_engine.build(str(tiny_bundle / "model.fp16.onnx"), "images", TINY_RES, options, trt)
    assert record["target"]["compute_capability"].startswith("sm") and record["timing_cache"] == "created"
    _, again = trt_engine.build(str(tiny_bundle / "model.fp16.onnx"), "images", TINY_RES, options, trt)
    assert again["timing_cache"] == "reused"
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan)
    assert engine is not None and engine.num_io_tensors == 2
