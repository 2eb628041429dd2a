"""The gate for arithmetic chosen on the running host (engine/compute_gate.py): OpenVINO's bf16 for the fp16 tier and
for the INT8 tier's float layers."""

import json
import os

import pytest

from bit_trt.engine import backends, compare, compute_gate
from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.classifier import Classifier
from bit_trt.engine.errors import BitError
from bit_trt.engine.openvino_runner import arithmetic_for, fp16_arithmetic, import_openvino
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.preprocess import scale_uint8

from .capped_process import run_capped


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "compute-gate"


def _counting(runner):
    calls = []

    def infer(batch):
        calls.append(len(batch))
        return runner.infer(batch)

    return infer, calls


def _kept(own_cache) -> set:
    return set(os.listdir(own_cache)) if own_cache.exists() else set()


def test_a_pass_is_measured_once_and_kept(tiny_bundle, own_cache):
    bundle = load_bundle(str(tiny_bundle))
    with backends.create(bundle, "openvino", "fp16") as runner:
        # On a bf16 CPU the runner gated itself as it started (its own verdict is kept too): this test's checks are
        # told apart from it by their description.
        before = _kept(own_cache)
        infer, calls = _counting(runner)
        verdict = compute_gate.check(bundle, "fp16", infer, "openvino under test")
        assert verdict["passed"] and verdict["rel_l2"] < compare.BF16_PARITY.rel_l2 and calls == [verdict["images"]]
        assert compute_gate.check(bundle, "fp16", infer, "openvino under test") == verdict
        assert len(calls) == 1  # the second start read the verdict
        compute_gate.check(bundle, "fp16", infer, "openvino under test (another runtime)")
        assert len(calls) == 2  # a different runtime, CPU or model is measured again
    kept = _kept(own_cache) - before
    assert len(kept) == 2 and all(json.loads((own_cache / k).read_text())["passed"] is True for k in kept)


def test_a_failure_refuses_and_names_the_measured_error(tiny_bundle, own_cache):
    bundle = load_bundle(str(tiny_bundle))
    with backends.create(bundle, "openvino", "fp16") as runner:
        infer, calls = _counting(runner)
        # The fp16 graph judged by the FP32 bounds: a real, measured miss (rel L2 ~1e-3 > 3e-4).
        for _ in range(2):
            with pytest.raises(BitError, match=r"fails the accuracy gate against TF .*relative L2 [0-9.e-]+ > 0.0003"):
                compute_gate.check(bundle, "fp16", infer, "openvino (bf16)", tolerance=compare.FP32_PARITY)
        assert len(calls) == 1  # a kept failure refuses at once too
        with pytest.raises(BitError) as info:
            compute_gate.check(bundle, "fp16", infer, "openvino (bf16)", tolerance=compare.FP32_PARITY)
    assert "\n" not in str(info.value) and "use --precision fp32 or int8" in str(info.value)


def test_a_damaged_verdict_is_measured_again(tiny_bundle, own_cache):
    bundle = load_bundle(str(tiny_bundle))
    with backends.create(bundle, "openvino", "fp16") as runner:
        before = _kept(own_cache)  # the runner's own verdict, on a bf16 CPU
        infer, calls = _counting(runner)
        compute_gate.check(bundle, "fp16", infer, "x")
        [kept] = _kept(own_cache) - before
        (own_cache / kept).write_text('{"passed": "yes"')
        assert compute_gate.check(bundle, "fp16", infer, "x")["passed"] and len(calls) == 2


def plant_failure(path):
    """Rewrite the kept gate verdict at `path` as a failure ("planted"), as another local user might."""
    verdict = json.loads(path.read_text()) | {"passed": False, "failures": ["planted"]}
    path.write_text(json.dumps(verdict))


def test_only_a_verdict_this_user_alone_may_change_is_taken(tiny_bundle, own_cache):
    """A kept verdict decides only if this user owns it, no one else may write it, and it is no link: in a shared
    $BIT_TRT_CACHE another local user could otherwise make a failing model pass (or a passing one fail)."""
    bundle = load_bundle(str(tiny_bundle))
    with backends.create(bundle, "openvino", "fp16") as runner:
        before = _kept(own_cache)
        infer, calls = _counting(runner)
        compute_gate.check(bundle, "fp16", infer, "y")
        [kept] = _kept(own_cache) - before
        path = own_cache / kept
        assert path.stat().st_mode & 0o777 == 0o600 and own_cache.stat().st_mode & 0o777 == 0o700
        plant_failure(path)
        with pytest.raises(BitError, match="planted"):  # this user's own file is read: the proof the cache is used
            compute_gate.check(bundle, "fp16", infer, "y")
        for mode in (0o620, 0o602):  # group- or world-writable: measured again (and kept again, 0600)
            plant_failure(path)
            path.chmod(mode)
            assert compute_gate.check(bundle, "fp16", infer, "y")["passed"]
            assert path.stat().st_mode & 0o777 == 0o600
        other = own_cache / "another model.json"
        path.rename(other)
        plant_failure(other)
        path.symlink_to(other.name)  # a link to a verdict of this user's
        assert compute_gate.check(bundle, "fp16", infer, "y")["passed"] and not path.is_symlink()
        if os.geteuid() == 0:  # root can give a file away: one owned by another user is measured again too
            plant_failure(path)
            os.chown(path, 65534, 65534)
            assert compute_gate.check(bundle, "fp16", infer, "y")["passed"]
        assert len(calls) == 4 + (os.geteuid() == 0)


def test_the_fp16_tier_on_openvino_runs_bf16_only_where_the_cpu_has_it(tiny_bundle, own_cache):
    with Classifier(str(tiny_bundle), backend="openvino", precision="fp16") as clf:
        if arithmetic_for(import_openvino().Core(), "fp16") == "bf16":
            assert clf.compute == "bf16" and clf.backend.endswith(", bf16)")
            assert len(os.listdir(own_cache)) == 1  # gated before it served
        else:
            assert clf.compute == "f32"
            assert f"fp16 runs as f32: {fp16_arithmetic(import_openvino().Core())[1]}" in clf.backend
            assert not own_cache.exists()  # f32 is the arithmetic the export checked: no gate to run
    with Classifier(str(tiny_bundle), backend="openvino", precision="fp32") as clf:
        assert clf.compute == "f32" and "runs as f32" not in clf.backend


_FP16_UNDER_CAP = """
import json, sys
from bit_trt.engine.classifier import Classifier
from bit_trt.engine.openvino_runner import import_openvino
with Classifier(sys.argv[1], backend="openvino", precision="fp16") as clf:
    offered = "BF16" in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    print(json.dumps([clf.compute, clf.backend, offered]))
"""


@pytest.mark.parametrize("cap", ["AVX512_CORE_VNNI", "AVX512_CORE_BF16"])
def test_under_an_isa_cap_the_fp16_tier_runs_what_the_capped_cpu_computes_faster(tiny_bundle, own_cache, cap):
    """oneDNN's cap makes OpenVINO dispatch as a CPU without AMX (and, at AVX512_CORE_VNNI, without bf16: a Cascade
    Lake or Ice Lake Xeon). OpenVINO still offers bf16 there, and emulates it (R50x1: 3.9x slower than f32): the
    fp16 tier must run f32 on such a CPU, and say why; and bf16 only where the capped CPU's bf16 path out-computes
    its f32 one (engine/cpu_peak.bf16_pays)."""
    from bit_trt.engine.cpu_host import this_host
    from bit_trt.engine.cpu_peak import bf16_pays

    (compute, described, offered), environ = run_capped(_FP16_UNDER_CAP, cap, tiny_bundle)
    pays, why = bf16_pays(this_host().under_isa_cap(environ))
    assert compute == ("bf16" if pays else "f32"), described
    if cap == "AVX512_CORE_VNNI":
        assert offered and not pays  # OpenVINO would have compiled bf16: the runner chose f32
        assert (
            f"fp16 runs as f32: this CPU has no native bf16 (amx_bf16 or avx512_bf16, under ONEDNN_MAX_CPU_ISA={cap})"
            in (described)
        )
    elif not pays:
        assert f"fp16 runs as f32: {why}" in described


def test_the_int8_tier_on_openvino_runs_its_float_layers_in_bf16_only_where_it_pays(tiny_full_bundle, own_cache):
    """INT8's convolutions run INT8 either way; its GroupNorm statistics, residual sums and quantize steps run in bf16
    where the fp16 tier would (1.1-1.2x faster with AMX, docs/cpu.md), gated against TF by INT8_BF16_PARITY."""
    from bit_trt.engine.parity_set import check

    with Classifier(str(tiny_full_bundle), backend="openvino", precision="int8") as clf:
        if arithmetic_for(import_openvino().Core(), "int8") == "bf16":
            assert clf.compute == "int8+bf16" and clf.backend.endswith(", int8, float layers bf16)")
            assert len(os.listdir(own_cache)) == 1  # gated before it served
            assert check(clf, "int8", "stored")["tolerance"] == compare.INT8_BF16_PARITY.to_dict()
        else:
            assert clf.compute == "int8"
            assert f"int8's float layers run as f32: {fp16_arithmetic(import_openvino().Core())[1]}" in clf.backend
            assert not own_cache.exists()
    with Classifier(str(tiny_full_bundle), backend="openvino", precision="int8", inference_precision="f32") as clf:
        assert clf.compute == "int8" and "int8, float layers f32; int8's float layers run as f32: f32 was asked" in (
            clf.backend
        )


def test_an_int8_failure_in_bf16_names_what_else_runs(tiny_full_bundle, own_cache):
    bundle = load_bundle(str(tiny_full_bundle))
    with backends.create(bundle, "openvino", "int8", inference_precision="bf16") as runner:
        with pytest.raises(BitError) as info:  # the INT8 graph judged by the FP32 bounds: a measured miss
            compute_gate.check(bundle, "int8-ort", runner.infer, "openvino (int8, bf16)", tolerance=compare.FP32_PARITY)
    assert "\n" not in str(info.value) and "use inference precision f32, or --precision fp32" in str(info.value)


_INT8_UNDER_CAP = """
import json, sys
from bit_trt.engine.classifier import Classifier
with Classifier(sys.argv[1], backend="openvino", precision="int8") as clf:
    print(json.dumps([clf.compute, clf.backend, True]))
"""


def test_under_an_isa_cap_without_bf16_the_int8_tier_keeps_its_float_layers_in_f32(tiny_full_bundle, own_cache):
    (compute, described, _), _ = run_capped(_INT8_UNDER_CAP, "AVX512_CORE_VNNI", tiny_full_bundle)
    assert compute == "int8" and "int8's float layers run as f32: this CPU has no native bf16" in described


def test_int8_that_misses_its_bf16_gate_runs_its_float_layers_in_f32(tiny_full_bundle, own_cache):
    """bf16 float layers are a saving for INT8, not the precision asked for: where they miss the gate, INT8 runs them
    in f32 (as the export gated it) and says why; asked for bf16 outright, it is refused."""
    if arithmetic_for(import_openvino().Core(), "int8") != "bf16":
        pytest.skip("INT8's float layers run f32 on this CPU: no bf16 gate to miss")
    with Classifier(str(tiny_full_bundle), backend="openvino", precision="int8") as clf:
        assert clf.compute == "int8+bf16" and "without their Q/DQ" in clf.backend
    [kept] = os.listdir(own_cache)
    plant_failure(own_cache / kept)
    with Classifier(str(tiny_full_bundle), backend="openvino", precision="int8") as clf:
        assert clf.compute == "int8"
        assert "int8's float layers run as f32: in bf16 it fails the accuracy gate against TF (planted)" in clf.backend
        assert "without their Q/DQ" not in clf.backend  # read again without the rewrite that pays only in bf16
        images, _, tf_logits = load_parity_set(load_bundle(str(tiny_full_bundle)))
        assert not compare.INT8_CHECK.check(compare.measure(clf.infer(scale_uint8(images)), tf_logits))
    with pytest.raises(BitError, match=r"fails the accuracy gate .*\(planted\).*use inference precision f32"):
        _ = Classifier(str(tiny_full_bundle), backend="openvino", precision="int8", inference_precision="bf16").compute


def test_a_bundle_whose_int8_record_holds_no_bf16_gate_runs_it_in_f32(tiny_full_bundle, own_cache, tmp_path):
    """As the C++ library does (tests/cpp): the record holds the bound, and an older bundle has none."""
    import shutil

    bundle = tmp_path / "old"
    shutil.copytree(tiny_full_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    int8 = next(a for a in manifest["artifacts"] if a["file"] == "model.int8-ort.onnx")
    assert int8.pop("bf16_tolerance") == compare.INT8_BF16_PARITY.to_dict()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with Classifier(str(bundle), backend="openvino", precision="int8") as clf:
        assert clf.compute == "int8"
        assert "int8's float layers run as f32: model.int8-ort.onnx records no bf16_tolerance (exported before" in (
            clf.backend
        )
    with pytest.raises(BitError, match="model.int8-ort.onnx records no bf16_tolerance, the gate a bf16 run is held"):
        _ = Classifier(str(bundle), backend="openvino", precision="int8", inference_precision="bf16").compute


def test_upgrade_manifest_gives_an_older_bundle_its_bf16_gate_bounds(tiny_full_bundle, own_cache, tmp_path, capsys):
    """What the f32 line above tells the user to run: the records gain the bounds bit-export writes now, nothing
    else changes, and the openvino runner then takes the gate (bf16 only where it pays on this CPU)."""
    import shutil

    from bit_trt.export import engine_cli

    bundle = tmp_path / "old"
    shutil.copytree(tiny_full_bundle, bundle)
    original = json.loads((bundle / "manifest.json").read_text())
    manifest = json.loads(json.dumps(original))
    for art in manifest["artifacts"]:
        art.pop("bf16_tolerance", None)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with Classifier(str(bundle), backend="openvino", precision="fp16") as clf:
        assert "records no bf16_tolerance" in clf.backend and "--upgrade-manifest" in clf.backend
    assert engine_cli.main([str(bundle), "--upgrade-manifest"]) == 0
    said = capsys.readouterr().out.strip()
    assert said == (
        f"{bundle}: the bf16 gate's bound added to model.fp16.onnx, model.int8-ort.onnx, as bit-export writes it now"
    )
    assert json.loads((bundle / "manifest.json").read_text()) == original
    with Classifier(str(bundle), backend="openvino", precision="int8") as clf:
        assert "records no bf16_tolerance" not in clf.backend
    assert engine_cli.main([str(bundle), "--upgrade-manifest"]) == 0
    assert "every bf16 gate bound recorded; nothing to do" in capsys.readouterr().out
