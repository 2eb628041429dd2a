"""What the export does to hold fewer copies of the weights (issue 20, item 5), and that every check it moved or made
cheaper still catches what it caught: the fusion's check now comes from the parity session, the rewrites' ORT
checks feed the weights instead of serializing them, the ONNX is written tensor by tensor."""

import os

import numpy as np
import onnx
import pytest

from bit_trt.engine.errors import BitError
from bit_trt.export import graph_cleanup, tf2onnx_route
from bit_trt.export.ort_logits import ort_logits
from bit_trt.export.parity_images import synthetic_images
from tests.conftest import TINY_RES, export_tiny


@pytest.fixture(scope="module")
def folded(tiny, tiny_weights):
    model = tf2onnx_route.convert(dict(tiny_weights), tiny, TINY_RES)
    graph_cleanup.fuse_group_norms(model)
    model, count = graph_cleanup.folded_copy(model)
    graph_cleanup.remove_dead(model)
    assert count > 0
    return model


def test_fed_weights_answer_as_the_serialized_model(folded):
    images = synthetic_images(3, TINY_RES, seed=5)
    fed = ort_logits(folded, images, low_memory=True)  # the weights fed as inputs, the graph without them
    serialized = ort_logits(folded.SerializeToString(), images, low_memory=True)
    np.testing.assert_array_equal(fed, serialized)
    assert len(folded.graph.input) == 1  # the model itself was not changed


def test_streamed_file_is_the_model(folded, tmp_path):
    path = tmp_path / "m.onnx"
    graph_cleanup.save_streamed(folded, str(path))
    assert onnx.load(str(path)).SerializeToString() == folded.SerializeToString()
    onnx.checker.check_model(str(path))
    again = tmp_path / "again.onnx"
    graph_cleanup.save_streamed(onnx.load(str(path)), str(again))
    assert again.read_bytes() == path.read_bytes()  # byte-stable


def test_folded_copy_is_what_folding_in_place_gives(tiny, tiny_weights):
    model = tf2onnx_route.convert(dict(tiny_weights), tiny, TINY_RES)
    copy, count = graph_cleanup.folded_copy(model)
    in_place = onnx.ModelProto()
    in_place.CopyFrom(model)
    assert graph_cleanup.fold_constants(in_place) == count
    assert in_place.SerializeToString() == copy.SerializeToString()


def test_weights_are_bound_and_handed_over_array_by_array(tiny, tiny_weights):
    weights = dict(tiny_weights)
    model = tf2onnx_route.convert(weights, tiny, TINY_RES, consume=True)
    assert weights == {}  # every array was taken as it became an initializer
    assert {i.name for i in model.graph.initializer} >= set(tiny_weights)


def test_tf_reference_takes_the_weights_and_answers_the_same(tiny, images64):
    from bit_trt.export import sources

    expected = sources.load("synthetic", "tiny", num_classes=10, seed=3).reference(images64)
    loaded = sources.load("synthetic", "tiny", num_classes=10, seed=3)
    weights = loaded.weights
    reference = loaded.take_reference()
    assert loaded.weights is None and weights == {}  # TF holds the only copy now
    np.testing.assert_array_equal(reference(images64), expected)


def test_a_broken_fold_is_still_caught_against_tf_and_nothing_is_written(tmp_path, monkeypatch):
    """The folding's check (ORT on the folded graph, in the fold step): a wrong folded kernel fails, named as the
    folding, before any bundle appears."""
    real = graph_cleanup.folded_copy

    def broken(model, **kw):
        out, count = real(model, **kw)
        conv_weights = {n.input[1] for n in out.graph.node if n.op_type == "Conv"}
        for kernel in [i for i in out.graph.initializer if i.name in conv_weights]:  # noise: GN hides a scale
            array = onnx.numpy_helper.to_array(kernel)
            noise = np.random.default_rng(0).normal(size=array.shape) * array.std()
            kernel.CopyFrom(onnx.numpy_helper.from_array((array + noise).astype(np.float32), kernel.name))
        return out, count

    monkeypatch.setattr(graph_cleanup, "folded_copy", broken)
    out = tmp_path / "b"
    with pytest.raises(BitError, match=r"^constant folding \(weight standardization\) breaks parity"):
        export_tiny(out, engine="none")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_folding_first_gives_the_graph_fusing_first_gave(tiny, tiny_weights):
    """The exporter folds before it fuses, the GroupNorm scopes left whole for the fusion: the same graph as the
    other order, node for node and tensor for tensor."""
    from bit_trt.engine.onnx_order import canonicalize

    converted = tf2onnx_route.convert(dict(tiny_weights), tiny, TINY_RES)  # once: tf2onnx numbers its names per run

    def cleaned(fold_first: bool):
        model = onnx.ModelProto()
        model.CopyFrom(converted)
        if fold_first:
            model, _ = graph_cleanup.folded_copy(model, skip=graph_cleanup.GROUP_NORM_SCOPE)
            graph_cleanup.remove_dead(model)
            assert graph_cleanup.fuse_group_norms(model) > 0
        else:
            assert graph_cleanup.fuse_group_norms(model) > 0
            model, _ = graph_cleanup.folded_copy(model)
            graph_cleanup.remove_dead(model)
        canonicalize(model, initializers=False)
        initializers = sorted((i.name, i.SerializeToString()) for i in model.graph.initializer)
        return [n.SerializeToString() for n in model.graph.node], initializers

    assert cleaned(fold_first=True) == cleaned(fold_first=False)


def test_a_broken_fusion_is_still_caught_against_tf_and_nothing_is_written(tmp_path, monkeypatch):
    """The fusion's check runs in the parity step's session, on the file as written: a wrong fused GroupNorm (its
    gamma off by 20%) fails there, named as the fusion, before any bundle appears."""
    real = graph_cleanup.fuse_group_norms

    def broken(model, **kw):
        count = real(model, **kw)
        for gamma in [i for i in model.graph.initializer if i.name.endswith("_fused/gamma_c11")]:
            gamma.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(gamma) * 1.2, gamma.name))
        return count

    monkeypatch.setattr(graph_cleanup, "fuse_group_norms", broken)
    out = tmp_path / "b"
    with pytest.raises(BitError, match=r"^GroupNorm fusion breaks parity"):
        export_tiny(out, engine="none")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_model_bytes_is_byte_size(folded):
    assert graph_cleanup.model_bytes(folded) == folded.ByteSize()


def test_calibration_reduces_each_tensor_as_it_is_made_and_keeps_orts_ranges(tiny_bundle, tmp_path):
    """ORT's default node order ran the whole activation path before the calibrator's ReduceMin/ReduceMax pairs, so
    every calibrated tensor of an image lived to the end of its run (R50x3: +2.4 GB per image); our session runs in
    priority order. The same kernels on the same inputs: the ranges are those of the default order, exactly."""
    import json

    import onnxruntime
    from onnxruntime.quantization.calibrate import CalibrationCacheEncoder, create_calibrator

    from bit_trt.export import int8

    path = str(tiny_bundle / "model.fp32.onnx")
    images = synthetic_images(3, TINY_RES, seed=2)
    ours = int8.compute_ranges(path, images, "minmax", 1, lambda msg: None)
    theirs = create_calibrator(
        path, list(int8.CALIBRATED_OPS), str(tmp_path / "augmented.onnx"), use_external_data_format=True
    )
    # The low-memory session in ORT's default order (ORT's own session pre-packs the head's MatMul: its last digits
    # differ from any unpacked run)
    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_cpu_mem_arena = False
    opts.add_session_config_entry("session.disable_prepacking", "1")
    theirs.infer_session = onnxruntime.InferenceSession(str(tmp_path / "augmented.onnx"), sess_options=opts)
    theirs.collect_data(int8._Reader(images, "images", 1, lambda msg: None))
    assert ours == json.loads(json.dumps(theirs.compute_data().to_dict(), cls=CalibrationCacheEncoder))
    order = int8._low_memory_session(str(tmp_path / "augmented.onnx")).get_session_options().execution_order
    assert order == onnxruntime.ExecutionOrder.PRIORITY_BASED


def test_the_native_check_and_the_parsers_file_copy_no_weights(tiny_bundle):
    """The native rewrite is written as its graph alone, and ORT's check and the parser read the variant's own bytes
    for its weights: no serialized copy of them on disk, none as arrays in Python (R50x3: 870 MB each)."""
    from bit_trt.export import group_norm_form

    source = tiny_bundle / "model.fp32.onnx"
    parity = np.load(tiny_bundle / "parity_inputs.npz")
    with group_norm_form.native_graph(str(source), "fp32", (parity["images"], parity["tf_logits"])) as (path, record):
        assert record["parity"]["passed"]
        assert os.path.getsize(path) < os.path.getsize(source) / 20
        model = onnx.load(path, load_external_data=False)
        referred = [i for i in model.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
        assert sum(int(e.value) for i in referred for e in i.external_data if e.key == "length") > 0.95 * (
            os.path.getsize(source)
        )
        weights = next(p for p in os.listdir(os.path.dirname(path)) if p != os.path.basename(path))
        assert os.path.samefile(os.path.join(os.path.dirname(path), weights), source)  # a link, not a copy
    assert not os.path.exists(path) and os.stat(source).st_nlink == 1


def test_a_plan_is_handed_over_without_a_copy(tiny_bundle):
    """build() returns a view of the builder's buffer: bytes() of it would hold the plan twice (R50x3: 870 MB)."""
    rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is part of the CI install (.[rtx])")
    from bit_trt.export import trt_engine

    options = trt_engine.BuildOptions(min_batch=1, opt_batch=1, max_batch=1)
    plan, _ = trt_engine.build(str(tiny_bundle / "model.fp32.onnx"), "images", TINY_RES, options, rtx)
    assert isinstance(plan, memoryview) and plan.nbytes > 1_000_000


def test_the_checkers_parse_is_handed_back_before_parity_runs(tmp_path, monkeypatch):
    """onnx.checker parses the whole written file (R50x3: 870 MB) and frees it: the heap is trimmed after it, not
    before, so that the parity session does not find it resident under its own peak."""
    from bit_trt.export import exporter

    calls = []
    check, release, logits = onnx.checker.check_model, exporter.release_memory, exporter.ort_logits
    monkeypatch.setattr(onnx.checker, "check_model", lambda *a, **kw: (calls.append("check"), check(*a, **kw))[1])
    monkeypatch.setattr(exporter, "release_memory", lambda: (calls.append("release"), release())[1])

    def ort(model, *a, **kw):  # the parity step's is the first ORT run on the written file (a path)
        calls.append("parity" if isinstance(model, str) else "rewrite check")
        return logits(model, *a, **kw)

    monkeypatch.setattr(exporter, "ort_logits", ort)
    export_tiny(tmp_path / "b", engine="none")
    first_parity = calls.index("parity")
    assert "check" in calls[:first_parity]
    assert "release" in calls[calls.index("check") : first_parity]


def test_the_trace_splits_the_int8_and_engines_steps_where_their_progress_lines_say():
    from tools.export_bench import substeps

    lines = [
        (10.0, "[ 10.0s] INT8 variants: minmax calibration on 64 images, Q/DQ ..., accuracy gate ..."),
        (20.0, "[ 20.0s] calibration ranges computed (/cache/x.json)"),
        (25.0, "[ 25.0s] int8 stem root_block/Conv2D: 1.0% of the MACs, 3.8% of the INT8 error -> kept in float"),
        (30.0, "[ 30.0s] int8 head head/MatMul: 0.0% of the MACs, 1.5% of the INT8 error -> kept in float"),
        (32.0, "[ 32.0s] int8-trt: top-1 agreement with TF 0.9 on 3 confident samples (drop +0.1), ... over the gate"),
        (36.0, "[ 36.0s] int8-trt: 2 layers kept in float -> top-1 drop +0.000"),
        (40.0, "[ 40.0s] int8-ort: top-1 agreement with TF 1.000 on 0 confident samples (drop +0.000), ... -> PASS"),
        (41.0, "[ 41.0s] TensorRT plans from the ONNX variants ..."),
        (
            45.0,
            "[ 45.0s] model.fp32.onnx: 49 GroupNorms native (opset 21), on ONNX Runtime rel L2 1e-05 against TF -> ok",
        ),
        (50.0, "[ 50.0s] model.fp32.rtx1.7.1.116.rtx.plan: built in 9.0 s"),
    ]
    samples = [(t, t * 1e8) for t in range(0, 51)]  # the tree's RSS grows 0.1 GB a second: a window's end is its peak
    parts = substeps(lines, samples)
    assert [(p["s"], p["peak_rss_tree_gb"]) for p in parts.values()] == [
        (10.0, 2.0),
        (5.0, 2.5),
        (5.0, 3.0),
        (6.0, 3.6),  # the TensorRT gate's part ends at its last line (the fallback's)
        (4.0, 4.0),
        (4.0, 4.5),
        (5.0, 5.0),
    ]
    assert list(parts)[-2:] == ["engines: fp32 native GroupNorm graph checked on ORT", "engines: fp32 parse and build"]
    assert substeps(lines[-3:], samples) == {k: v for k, v in parts.items() if k.startswith("engines")}


def test_the_exporter_converts_without_importing_tf(tmp_path):
    """tf2onnx's tracing runs in the TF child (TF keeps ~1 GB of it for R50x3), before the reference: the exporting
    process reads synthetic weights and binds them into the child's weightless graph without ever importing TF, and
    the model computes what converting in-process gives (tf2onnx's generated constant names differ from one process
    to the next)."""
    import subprocess
    import sys

    from bit_trt.export import sources, tf2onnx_route

    script = (
        "import sys\n"
        "import numpy as np\n"
        "from bit_trt.export import sources, tf2onnx_route\n"
        "from bit_trt.export.tf_reference import tf_work\n"
        f"images = np.zeros((1, {TINY_RES}, {TINY_RES}, 3), np.uint8)\n"
        f"work = tf_work('synthetic', None, 'tiny', 10, 3, images, graph=({TINY_RES}, 17))\n"
        "assert work.graph_s > 0 and work.peak_rss > 0 and work.logits.shape == (1, 10), work\n"
        "loaded = sources.load('synthetic', 'tiny', num_classes=10, seed=3)\n"
        "model = tf2onnx_route.bind_graph(work.graph, loaded.weights)\n"
        "assert loaded.weights == {}, loaded.weights\n"
        f"open({str(tmp_path / 'child.onnx')!r}, 'wb').write(model.SerializeToString())\n"
        "print('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "no tensorflow"
    loaded = sources.load("synthetic", "tiny", num_classes=10, seed=3)
    in_process = tf2onnx_route.convert(loaded.weights, loaded.variant, TINY_RES, 17)
    import numpy as np
    import onnxruntime

    child = onnx.load(str(tmp_path / "child.onnx"))
    assert [n.op_type for n in child.graph.node] == [n.op_type for n in in_process.graph.node]
    images = np.random.default_rng(0).random((2, TINY_RES, TINY_RES, 3), dtype=np.float32)
    outputs = [
        onnxruntime.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"images": images}
        )[0]
        for m in (child, in_process)
    ]
    np.testing.assert_array_equal(outputs[0], outputs[1])
