"""A plan from another TensorRT version or GPU is refused from the manifest, before TensorRT sees a byte."""

import json

import pytest

from bit_trt.engine import backends
from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.errors import BitError
from bit_trt.engine.plan_check import check_plan

GPU_PLAN = {
    "file": "model.fp32.trt11.0.1.sm90.plan",
    "precision": "fp32",
    "flavour": "fp32",
    "library": "tensorrt",
    "library_version": "11.0.1",
    "from": "model.fp32.onnx",
    "version_compatible": False,
    "hardware_compatibility": "none",
    "target": {"kind": "gpu", "compute_capability": "sm90"},
}
RTX_PLAN = {
    "file": "model.fp16.rtx1.7.1.116.rtx.plan",
    "precision": "fp16",
    "flavour": "fp16",
    "library": "tensorrt_rtx",
    "library_version": "1.7.1.116",
    "from": "model.fp16.onnx",
    "target": {"kind": "rtx", "compute_capabilities": ["library default"]},
}


def test_matching_plan_passes():
    check_plan(GPU_PLAN, "11.0.1", "sm90")
    check_plan(GPU_PLAN, "11.0.1.5", "sm90")  # build number differences do not matter
    check_plan(RTX_PLAN, "1.7.1.116", "sm89")


@pytest.mark.parametrize(
    "art,version,cc,message",
    [
        (GPU_PLAN, "11.1.0", "sm90", "built by tensorrt 11.0.1 but tensorrt 11.1.0 is installed"),
        (GPU_PLAN, "11.0.1", "sm89", "built for sm90 but this GPU is sm89"),
        (GPU_PLAN, None, "sm90", "not installed here; pip install 'bit-trt\\[gpu\\]'"),
        (GPU_PLAN, "11.0.1", None, "no NVIDIA GPU found"),
        ({**GPU_PLAN, "version_compatible": True}, "10.9.0", "sm90", "runs on tensorrt 11.x at or above 11.0.1"),
        ({**GPU_PLAN, "hardware_compatibility": "ampere_plus"}, "11.0.1", "sm75", "Ampere-and-later plan"),
        (RTX_PLAN, "1.7.1.116", "sm90", "RTX-class GPUs only"),
        ({**RTX_PLAN, "target": {"kind": "rtx", "compute_capabilities": ["sm89"]}}, "1.7.1.116", "sm86", "for sm89"),
    ],
)
def test_mismatches_name_the_cause_and_the_rebuild(art, version, cc, message):
    with pytest.raises(BitError, match=message) as err:
        check_plan(art, version, cc, "/srv/bundle")
    if version and cc:  # past the install and GPU checks, every refusal says how to rebuild
        assert f"bit-engine /srv/bundle --engine {art['library']} --precision " in str(err.value)


def test_compatible_plans_run_on_later_versions_and_gpus():
    check_plan({**GPU_PLAN, "version_compatible": True}, "11.2.0", "sm90")
    check_plan({**GPU_PLAN, "hardware_compatibility": "ampere_plus"}, "11.0.1", "sm120")


@pytest.fixture
def rtx_copy(tiny_full_bundle, copy_bundle):
    return copy_bundle(tiny_full_bundle)


def test_truncated_plan_is_refused_before_loading(rtx_copy):
    bundle = load_bundle(str(rtx_copy))
    plan = rtx_copy / bundle.artifacts("engine")["fp32"]["file"]
    plan.write_bytes(plan.read_bytes()[:1000])
    with pytest.raises(BitError, match="does not match its manifest checksum"):
        backends.create(bundle, "trt", "fp32")


def test_manifest_records_what_the_check_needs(tiny_full_bundle):
    engines = json.loads((tiny_full_bundle / "manifest.json").read_text())["artifacts"]
    plans = [a for a in engines if a["kind"] == "engine"]
    assert {a["flavour"] for a in plans} == {"fp32", "fp16", "int8-trt"}
    for art in plans:
        assert art["library"] == "tensorrt_rtx" and art["library_version"] and art["target"]["kind"] == "rtx"
        assert art["tf32"] is False
