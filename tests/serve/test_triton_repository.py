"""bit-triton: the repository's layout, every config.pbtxt read back with Triton's own schema
(tritonclient.grpc.model_config_pb2), the files it places, and its refusals."""

import json
import os

import pytest
from google.protobuf import text_format

from bit_trt.engine.bundle import file_record, load_bundle, sha256_file
from tests.conftest import TINY_RES, run_cli

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] not installed")


def bit_triton(*args):
    return run_cli("bit_trt.serve.triton_cli", *map(str, args))


def read_config(path) -> "model_config_pb2.ModelConfig":
    """Parse with Triton's schema: an unknown field, a wrong type or a bad enum raises ParseError."""
    with open(path, encoding="utf-8") as f:
        return text_format.Parse(f.read(), model_config_pb2.ModelConfig())


def read_repository(out) -> dict:
    return {name: read_config(out / name / "config.pbtxt") for name in sorted(os.listdir(out)) if (out / name).is_dir()}


def one_error_line(result) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bit-triton: error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def repository(tiny_full_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "models"
    result = bit_triton(tiny_full_bundle, out, "--backend", "onnxruntime,openvino")
    assert result.returncode == 0, result.stderr
    return out


def test_every_config_parses_with_tritons_schema_and_says_what_the_manifest_says(repository, tiny_full_bundle):
    configs = read_repository(repository)
    bundle = load_bundle(str(tiny_full_bundle))
    classifiers = {f"bit_tiny_{b}_{p}" for b in ("onnxruntime", "openvino") for p in ("fp32", "fp16", "int8")}
    assert set(configs) == classifiers | {f"{c}_image" for c in classifiers} | {"bit_tiny_preprocess"}
    for name in classifiers:
        config = configs[name]
        assert config.name == name
        assert (config.platform, config.backend) in {("onnxruntime_onnx", ""), ("", "openvino")}
        # OpenVINO reads its IR with the GroupNorms rewritten (test_openvino_models_are_the_rewritten_ir)
        assert config.default_model_filename == ("model.xml" if config.backend == "openvino" else "model.onnx")
        assert config.max_batch_size == 8
        (inp,) = config.input
        assert (inp.name, list(inp.dims), inp.data_type) == (
            "images",
            [TINY_RES, TINY_RES, 3],
            model_config_pb2.TYPE_FP32,
        )
        assert inp.format == model_config_pb2.ModelInput.FORMAT_NHWC
        (out,) = config.output
        assert (out.name, list(out.dims), out.label_filename) == ("logits", [bundle.num_classes], "labels.txt")
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000  # serve/batching.py
        assert list(config.dynamic_batching.preferred_batch_size) == [8]
        assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)]
        assert [w.batch_size for w in config.model_warmup] == [1, 8]
        assert all(w.inputs["images"].zero_data for w in config.model_warmup)
    assert configs["bit_tiny_openvino_fp32"].parameters["PERFORMANCE_HINT"].string_value == "LATENCY"


def test_ensembles_wire_preprocessing_to_each_classifier_by_names_that_exist(repository):
    configs = read_repository(repository)
    pre = configs["bit_tiny_preprocess"]
    assert pre.backend == "python"
    assert (pre.input[0].name, pre.input[0].data_type, list(pre.input[0].dims)) == (
        "image",
        model_config_pb2.TYPE_STRING,
        [1],
    )
    assert json.loads(pre.parameters["input_spec"].string_value)["resolution"] == TINY_RES
    assert pre.parameters["max_image_pixels"].string_value == str(16384 * 16384)  # the engine's defaults
    assert pre.parameters["max_decode_mb"].string_value == "2048"
    assert (repository / "bit_tiny_preprocess" / "1" / "model.py").is_file()
    warmup = pre.model_warmup[0].inputs["image"].input_data_file
    assert (repository / "bit_tiny_preprocess" / "warmup" / warmup).is_file()
    for name, config in configs.items():
        if config.platform != "ensemble":
            continue
        assert (repository / name / "1").is_dir()  # Triton refuses a model without a version folder
        first, second = config.ensemble_scheduling.step
        assert first.model_name == "bit_tiny_preprocess" and second.model_name == name.removesuffix("_image")
        classifier = configs[second.model_name]
        # every mapped name is a real input/output of the model it is mapped on
        assert set(first.input_map) == {i.name for i in pre.input} and set(first.output_map) == {
            o.name for o in pre.output
        }
        assert set(second.input_map) == {i.name for i in classifier.input}
        assert set(second.output_map) == {o.name for o in classifier.output}
        assert first.output_map["images"] == second.input_map["images"]
        assert config.max_batch_size <= min(pre.max_batch_size, classifier.max_batch_size)
        assert config.output[0].label_filename == "labels.txt" and (repository / name / "labels.txt").is_file()


def test_model_files_are_the_bundles_verified_files_and_labels_its_labels(repository, tiny_full_bundle):
    bundle = load_bundle(str(tiny_full_bundle))
    onnx = bundle.artifacts("onnx")
    for precision, variant in (("fp32", "fp32"), ("fp16", "fp16"), ("int8", "int8-ort")):
        placed = repository / f"bit_tiny_onnxruntime_{precision}" / "1" / "model.onnx"
        assert sha256_file(placed) == onnx[variant]["sha256"]
    lines = (repository / "bit_tiny_onnxruntime_fp32" / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert lines == [entry["name"] for entry in bundle.labels()]
    umask = os.umask(0)
    os.umask(umask)
    assert repository.stat().st_mode & 0o777 == 0o777 & ~umask  # readable by a server's own user
    readme = (repository / "README.md").read_text(encoding="utf-8")
    assert "tritonserver --model-repository=/models" in readme and "bit_tiny_openvino_int8_image" in readme


@pytest.mark.parametrize(("precision", "variant"), [("fp32", "fp32"), ("fp16", "fp16"), ("int8", "int8-ort")])
def test_openvino_models_are_the_rewritten_ir(repository, tiny_full_bundle, precision, variant):
    """Triton's OpenVINO backend compiles the IR as it reads it: the IR must be the bundle's file with the runner's
    rewrites (engine/openvino_graph.py), computing what the runner computes from that file, and naming what it does
    in the README."""
    import onnx as onnx_lib
    import openvino as ov

    from bit_trt.engine.compare import measure
    from bit_trt.engine.openvino_graph import read
    from bit_trt.engine.parity_set import load_parity_set
    from bit_trt.engine.preprocess import scale_uint8

    bundle = load_bundle(str(tiny_full_bundle))
    version = repository / f"bit_tiny_openvino_{precision}" / "1"
    assert sorted(os.listdir(version)) == ["model.bin", "model.xml"]
    norms = sum(n.op_type == "InstanceNormalization" for n in onnx_lib.load(bundle.artifact_path(variant)).graph.node)
    core = ov.Core()
    ir = core.read_model(str(version / "model.xml"))
    kinds = {op.get_type_name() for op in ir.get_ops()}
    assert norms > 0 and "MVN" not in kinds and "ReduceMean" in kinds and "Pad" not in kinds
    images, _, tf_logits = load_parity_set(bundle)
    f32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    logits = core.compile_model(ir, "CPU", f32).create_infer_request().infer({0: scale_uint8(images)})[0]
    runner_model, rewrites = read(core, bundle.artifact_path(variant), bf16=True)  # as the runner reads it for bf16
    expected = core.compile_model(runner_model, "CPU", f32).create_infer_request().infer({0: scale_uint8(images)})[0]
    assert (logits == expected).all()
    if precision == "fp32":
        assert measure(logits, tf_logits)["rel_l2"] < 1e-4
    readme = (repository / "README.md").read_text(encoding="utf-8")
    (line,) = [x for x in readme.splitlines() if x.startswith(f"- `bit_tiny_openvino_{precision}`:")]
    rewritten = f"{norms} GroupNorms on channel statistics, {norms} with gamma and beta in one multiply-add"
    rewritten += ", 1 zero Pad in its MaxPool"
    if precision == "int8":  # and its residual sums from the convolutions' float outputs
        assert rewrites.requantized_sums > 0 and rewrites.sums_written_once > 0
        rewritten += f", {rewrites.requantized_sums} sums of convolutions without their Q/DQ"
        rewritten += f", {rewrites.sums_written_once} of them through one reader"
        assert "FakeQuantize" in kinds  # its convolutions' inputs stay quantized
    assert f"OpenVINO IR of {os.path.basename(bundle.artifact_path(variant))}, {rewritten}" in line
    assert "bf16" in line  # what Triton's OpenVINO computes in is said, since its backend can't pin f32


def test_without_openvino_the_openvino_models_are_the_onnx_and_the_readme_says_why(tiny_full_bundle, tmp_path):
    """Where bit-triton runs without OpenVINO installed (a serving venv of '.[serve]'), it can't write the IR: the
    model is the bundle's verified ONNX, and the README says what that costs. OpenVINO is made unimportable for
    that one process by a package of its name, first on the path, whose import fails as a missing one would."""
    blocker = tmp_path / "no-openvino" / "openvino"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'openvino'\", name='openvino')\n")
    out = tmp_path / "models"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(blocker.parent), os.environ.get("PYTHONPATH")]))}
    result = run_cli(
        "bit_trt.serve.triton_cli", tiny_full_bundle, out, "--backend", "openvino", "--precision", "fp32", env=env
    )
    assert result.returncode == 0, result.stderr
    version = out / "bit_tiny_openvino_fp32" / "1"
    assert os.listdir(version) == ["model.onnx"]
    bundle = load_bundle(str(tiny_full_bundle))
    assert sha256_file(version / "model.onnx") == bundle.artifacts("onnx")["fp32"]["sha256"]
    assert read_config(out / "bit_tiny_openvino_fp32" / "config.pbtxt").default_model_filename == "model.onnx"
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "model.fp32.onnx as exported: OpenVINO is not installed where bit-triton ran" in readme


def test_an_onnx_openvino_cannot_read_is_one_line_and_leaves_nothing(tiny_full_bundle, copy_bundle, tmp_path):
    """A bundle whose fp32 file (its checksum recorded as is) OpenVINO can't read: one line, no repository."""
    bundle = copy_bundle(tiny_full_bundle)
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    (record,) = [a for a in manifest["artifacts"] if a.get("file") == "model.fp32.onnx"]
    (bundle / "model.fp32.onnx").write_bytes(b"not an ONNX model")
    record.update(file_record(str(bundle), "model.fp32.onnx"))
    manifest_path.write_text(json.dumps(manifest))
    out = tmp_path / "models"
    result = bit_triton(bundle, out, "--backend", "openvino", "--precision", "fp32")
    # OpenVINO tries every frontend on a file it can't read, and TensorFlow's logs its attempt to stderr first
    ours = [x for x in result.stderr.splitlines() if x.startswith("bit-triton:")]
    assert result.returncode != 0 and "Traceback" not in result.stderr and len(ours) == 1
    assert ours[0].startswith("bit-triton: error: OpenVINO could not write its IR of ") and "model.fp32.onnx" in ours[0]
    assert "Unable to read the model" in ours[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".models.partial-")]


def _add_tensorrt_plans(bundle_dir, ccs):
    """Give a bundle copy fp16 TensorRT plan records as bit-engine writes them, one per GPU architecture.
    bit-triton places plan files without reading them, so their bytes here are a labelled stand-in."""
    manifest_path = bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for cc in ccs:
        name = f"model.fp16.tensorrt-11.4.0.sm{cc}.plan"
        (bundle_dir / name).write_bytes(f"stand-in plan for sm{cc}".encode())
        manifest["artifacts"].append(
            {
                **file_record(str(bundle_dir), name),
                "kind": "engine",
                "precision": "fp16",
                "flavour": "fp16",
                "library": "tensorrt",
                "library_version": "11.4.0.106",
                "profile": {"min": 1, "opt": 4, "max": 16},
                "target": {"kind": "gpu", "compute_capability": f"sm{cc}"},
            }
        )
    manifest_path.write_text(json.dumps(manifest))


def test_tensorrt_models_name_a_plan_per_compute_capability_and_take_the_profile(
    tiny_full_bundle, copy_bundle, tmp_path
):
    bundle = copy_bundle(tiny_full_bundle)
    _add_tensorrt_plans(bundle, ("89", "90"))
    out = tmp_path / "trt"
    result = bit_triton(bundle, out, "--precision", "fp16")  # auto: the bundle has TensorRT plans
    assert result.returncode == 0, result.stderr
    configs = read_repository(out)
    assert set(configs) == {"bit_tiny_tensorrt_fp16", "bit_tiny_tensorrt_fp16_image", "bit_tiny_preprocess"}
    config = configs["bit_tiny_tensorrt_fp16"]
    assert config.platform == "tensorrt_plan"
    assert dict(config.cc_model_filenames) == {"8.9": "model_sm89.plan", "9.0": "model_sm90.plan"}
    for cc, file in config.cc_model_filenames.items():
        assert (
            out / "bit_tiny_tensorrt_fp16" / "1" / file
        ).read_bytes() == f"stand-in plan for sm{cc.replace('.', '')}".encode()
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 1)]
    assert "TensorRT 11.4.0.106" in (out / "README.md").read_text()

    too_big = bit_triton(bundle, tmp_path / "too-big", "--precision", "fp16", "--max-batch", "32")
    assert one_error_line(too_big) == (
        "bit-triton: error: --max-batch 32 is above the fp16 TensorRT plans' profile max 16; "
        "rebuild with bit-engine --max-batch 32, or ask for at most 16"
    )
    assert not (tmp_path / "too-big").exists()


def test_rtx_engines_and_missing_variants_are_refused_in_one_line(tiny_full_bundle, tiny_bundle, tmp_path):
    rtx = one_error_line(bit_triton(tiny_full_bundle, tmp_path / "a", "--backend", "tensorrt", "--precision", "fp32"))
    assert "TensorRT-RTX engines" in rtx and "bit-engine" in rtx
    missing = one_error_line(bit_triton(tiny_bundle, tmp_path / "b", "--backend", "onnxruntime", "--precision", "int8"))
    assert "no int8-ort ONNX model" in missing
    unknown = one_error_line(bit_triton(tiny_bundle, tmp_path / "c", "--backend", "tensorflow"))
    assert "unknown Triton backend 'tensorflow'" in unknown
    no_bundle = one_error_line(bit_triton(tmp_path / "nothing", tmp_path / "d"))
    assert "does not exist" in no_bundle
    bad_preferred = bit_triton(tiny_bundle, tmp_path / "e", "--preferred-batch", "4,64")
    assert "--preferred-batch 64 is outside 1..8" in one_error_line(bad_preferred)
    assert sorted(os.listdir(tmp_path)) == []  # nothing written, no partial folder left


def test_an_existing_repository_needs_force_and_a_failed_write_leaves_it_as_it_was(tiny_bundle, copy_bundle, tmp_path):
    out = tmp_path / "models"
    assert bit_triton(tiny_bundle, out, "--backend", "onnxruntime", "--precision", "fp32").returncode == 0
    before = read_repository(out)
    assert "already exists" in one_error_line(bit_triton(tiny_bundle, out))

    damaged = copy_bundle(tiny_bundle)
    with open(damaged / "model.fp16.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 16)
    result = bit_triton(damaged, out, "--backend", "onnxruntime", "--force")
    assert "does not match its manifest checksum" in one_error_line(result)
    assert read_repository(out) == before  # the old repository is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle-copy", "models"]  # no partial folder

    result = bit_triton(tiny_bundle, out, "--backend", "onnxruntime", "--force")
    assert result.returncode == 0, result.stderr
    assert set(read_repository(out)) > set(before)  # now fp16 too


def test_cli_defaults_are_the_options_defaults():
    """bit-triton with only BUNDLE and OUT asks for exactly RepositoryOptions(): no default is written twice."""
    from bit_trt.serve.triton_cli import options_from_args, parser
    from bit_trt.serve.triton_repository import RepositoryOptions

    assert options_from_args(parser().parse_args(["bundle", "out"])) == RepositoryOptions()


def test_cli_flags_reach_the_options():
    from bit_trt.serve.triton_cli import options_from_args, parser
    from bit_trt.serve.triton_models import ImageLimits

    args = ["bundle", "out", "--backend", "tensorrt,openvino", "--precision", "fp16", "--name", "m"]
    args += ["--max-batch", "4", "--preferred-batch", "2,4", "--max-queue-delay-us", "500", "--instances", "3"]
    args += ["--preprocess-instances", "5", "--onnxruntime-device", "gpu", "--openvino-hint", "THROUGHPUT"]
    args += ["--no-ensembles", "--max-image-pixels", "1000", "--max-decode-mb", "7"]
    o = options_from_args(parser().parse_args(args))
    assert (o.backends, o.precisions, o.name, o.max_batch, o.preferred_batch) == (
        ("tensorrt", "openvino"),
        ("fp16",),
        "m",
        4,
        (2, 4),
    )
    assert (o.max_queue_delay_us, o.instances, o.preprocess_instances) == (500, 3, 5)
    assert (o.onnxruntime_device, o.openvino_hint, o.ensembles) == ("gpu", "THROUGHPUT", False)
    assert o.image_limits == ImageLimits(max_image_pixels=1000, max_decode_mb=7)


def test_the_serve_command_publishes_on_loopback_and_locks_triton_down(tmp_path):
    """What bit-triton prints (and writes into the repository's README), as bash reads it: the ports published on
    127.0.0.1 only, the models fixed and Triton's admin APIs closed as bit-serve closes them, the header's newline
    intact."""
    import subprocess

    from bit_trt.serve import triton_lockdown
    from bit_trt.serve.triton_repository import serve_command

    command = serve_command(str(tmp_path / "models"))
    assert command.startswith("docker run ") and "\n" not in command  # one line to copy
    printed = subprocess.run(
        ["bash", "-c", "printf '%s\\0' " + command.removeprefix("docker ")], capture_output=True, check=True, timeout=30
    )
    args = printed.stdout.decode().split("\0")[:-1]
    published = [args[i + 1] for i, arg in enumerate(args) if arg == "-p"]
    assert published == [f"127.0.0.1:{port}:{port}" for port in (8000, 8001, 8002)]
    assert args[args.index("tritonserver") :] == [
        "tritonserver",
        "--model-repository=/models",
        *triton_lockdown.arguments(),
    ]
