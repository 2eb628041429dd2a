"""ModelOpt side by side (issue 19, item 5): NVIDIA ModelOpt's ONNX INT8 PTQ of a bundle's FP32 ONNX, calibrated
on the very images our int8-trt graph was calibrated on, set beside our int8-trt graph.

    python -m tools.modelopt_compare --bundle out/r50x1 --make-bundle --install

A maintainer's script, never run in CI. ModelOpt lives in its own venv (its [onnx] extra pins onnx and
onnxruntime-gpu versions of its own, and it needs torch): this script runs in the main venv and calls that venv's
python for the quantization step only (`python -m modelopt.onnx.quantization`), so nothing of ModelOpt is imported
here. `--install` (re)creates that venv from tools/modelopt-requirements.txt and times it; without it the install
record of the previous results file is kept when the ModelOpt version is the same.

What it records, for both graphs:
- placement: Q/DQ counts, the op types whose activation input is a DequantizeLinear (and those whose weights
  are), which convolutions only one of the two quantizes, how the weights are stored;
- NVIDIA's parser (TensorRT-RTX) type table, `bit_trt.export.trt_layer_types.precision_mix`, of the graph as
  written and of its native-GroupNorm form (what bit-export builds plans from by default), with the done
  criterion's two measures: int8_conv_mac_share and fp16_non_conv_share;
- accuracy against TF, both graphs on ONNX Runtime CPU: the bundle's parity set plus `--eval-synthetic` seeded
  synthetic images that neither calibration saw, with TF's logits computed for them (the FP32 ONNX is run too,
  as the anchor that the TF logits are right).
The verdict: ours must be at least as low-precision as ModelOpt's (both shares >= theirs) at equal or better
accuracy against TF (rel L2 <=, min cosine >=, top-1 agreement >=).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

import numpy as np

from bit_trt.engine.atomic_write import write_json_atomic
from bit_trt.engine.errors import BitError
from bit_trt.engine.memory import gigabytes
from tools import REPO, RESULTS

SCHEMA = "modelopt-compare/1"
VENV = ".venv-modelopt"
REQUIREMENTS = os.path.join("tools", "modelopt-requirements.txt")
MODELOPT_PACKAGES = ("nvidia-modelopt", "onnx", "onnxruntime-gpu", "torch", "numpy")
EVAL_SEED = 20_000  # synthetic evaluation images: neither the parity set's seed (1234) nor calibration's (10_000+)
BUNDLE_COMMAND = (
    "bit-export --variant {variant} --resolution {resolution} --precision all --calib-synthetic "
    "--engine tensorrt_rtx --out {out} --quiet"
)


def _run_sampled(command: list[str], log_path: str, env=None) -> tuple[int, float, int]:
    """Run `command` with its output in `log_path`; (exit status, wall seconds, its peak RSS in bytes, from the
    child's own VmHWM sampled every half second: the high-water mark only grows, so the last sample is close)."""
    peak = [0]
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

        def sample():
            while proc.poll() is None:
                try:
                    with open(f"/proc/{proc.pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                peak[0] = max(peak[0], int(line.split()[1]) * 1024)
                except (OSError, ValueError):
                    pass
                time.sleep(0.5)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        returncode = proc.wait()
        watcher.join()
    return returncode, round(time.perf_counter() - start, 1), peak[0]


def _tail(path: str, chars: int = 1500) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-chars:]


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _du_bytes(path: str) -> int:
    out = subprocess.run(["du", "-sk", path], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) * 1024


# ---------------------------------------------------------------------------------------------- the ModelOpt venv


def _venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def install(venv: str) -> dict:
    """A fresh ModelOpt venv from tools/modelopt-requirements.txt: wall time (no pip cache, so downloads count)
    and disk size."""
    if os.path.exists(venv):
        shutil.rmtree(venv)
    commands = [
        ["python3.11", "-m", "venv", venv],
        [_venv_python(venv), "-m", "pip", "install", "--no-cache-dir", "-r", os.path.join(REPO, REQUIREMENTS)],
    ]
    log_path = os.path.join(tempfile.gettempdir(), "modelopt-install.log")
    wall = 0.0
    for command in commands:
        code, seconds, _ = _run_sampled(command, log_path)
        wall += seconds
        if code != 0:
            raise SystemExit(f"installing ModelOpt failed ({shlex.join(command)}):\n{_tail(log_path)}")
    with open(log_path, errors="replace") as f:
        retries = sum("Retrying (Retry(" in line for line in f)
    record = {
        "commands": [shlex.join(c).replace(REPO + os.sep, "") for c in commands],
        "wall_s": round(wall, 1),
        "venv_du_gb": gigabytes(_du_bytes(venv)),
        "requirements": _requirements(),
    }
    if retries:
        record["index_retries"] = retries
        record["note"] = (
            f"pip retried an unreachable index {retries} times (this host reaches PyPI only: the CPU torch wheel "
            "came from a local wheel directory), which is part of wall_s"
        )
    return record


def _requirements() -> list[str]:
    with open(os.path.join(REPO, REQUIREMENTS)) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def _require_modelopt(python: str) -> None:
    if not os.path.exists(python):
        raise SystemExit(
            f"no ModelOpt python at {python}: create it with `python3.11 -m venv {VENV} && "
            f"{VENV}/bin/pip install -r {REQUIREMENTS}` (or pass --install)"
        )


def modelopt_versions(python: str) -> dict:
    code = (
        f"import json, importlib.metadata as m\nprint(json.dumps({{n: m.version(n) for n in {MODELOPT_PACKAGES!r}}}))"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{python} cannot report ModelOpt's version:\n{proc.stderr[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- the two graphs


def make_bundle(out: str, variant: str, resolution: int) -> dict:
    command = BUNDLE_COMMAND.format(variant=variant, resolution=resolution, out=out)
    argv = shlex.split(command)
    argv[0] = os.path.join(os.path.dirname(sys.executable), "bit-export")  # the main venv's
    log_path = os.path.join(tempfile.gettempdir(), "modelopt-compare-export.log")
    code, wall, _ = _run_sampled(argv, log_path)
    if code != 0:
        raise SystemExit(f"export failed:\n{_tail(log_path)}")
    with open(os.path.join(out, "manifest.json")) as f:
        export = json.load(f)["export"]
    return {
        "command": command,
        "wall_s": wall,
        "peak_rss_gb": gigabytes(export["peak_rss_bytes"]),
        "peak_rss_tf_reference_gb": gigabytes(export["peak_rss_tf_reference_bytes"]),
    }


def calibration_images(bundle, record: dict) -> np.ndarray:
    """The uint8 images our int8-trt graph was calibrated on, regenerated from its manifest record and checked
    against the record's sha256."""
    from bit_trt.export import calibration

    spec = bundle.input_spec
    if record["kind"] == "synthetic":
        images, again = calibration.synthetic(spec, record["count"], record["seed"])
    else:
        images, again = calibration.load(record["path"], spec, record["count"], record["seed"])
    if again["sha256"] != record["sha256"]:
        raise SystemExit(
            f"the calibration images regenerated from the manifest ({record['kind']}, {record['count']} images, "
            f"seed {record['seed']}) do not match its sha256: cannot give ModelOpt the same set"
        )
    return images


def run_modelopt(python: str, fp32_onnx: str, calib_u8: np.ndarray, work: str, method: str) -> dict:
    """ModelOpt's INT8 PTQ (its CLI) on a copy of the FP32 ONNX: ModelOpt 0.47 writes shape inference back into
    the file it is given (onnx.shape_inference.infer_shapes_path in place), which would break the bundle's sha256."""
    from bit_trt.engine.preprocess import scale_uint8

    model = os.path.join(work, "model.fp32.onnx")
    shutil.copyfile(fp32_onnx, model)
    data = os.path.join(work, "calibration.npy")
    np.save(data, scale_uint8(calib_u8))  # [N, H, W, 3] float32; ModelOpt feeds it one image per step
    out = os.path.join(work, "model.int8-modelopt.onnx")
    command = [
        python,
        "-m",
        "modelopt.onnx.quantization",
        "--onnx_path",
        model,
        "--quantize_mode",
        "int8",
        "--calibration_data_path",
        data,
        "--calibration_method",
        method,
        "--calibration_eps",
        "cpu",
        "--high_precision_dtype",
        "fp16",
        "--output_path",
        out,
    ]
    log_path = os.path.join(work, "modelopt.log")
    code, wall, peak = _run_sampled(command, log_path)
    shown = shlex.join(command).replace(work, "$WORK").replace(REPO + os.sep, "")
    record = {"command": shown, "wall_s": wall, "peak_rss_gb": gigabytes(peak)}
    # ModelOpt 0.47 writes shape inference back into the file it is given (infer_shapes_path in place)
    record["rewrote_its_input_file"] = _sha256(model) != _sha256(fp32_onnx)
    if code != 0 or not os.path.exists(out):
        record["failed"] = _tail(log_path)
        return record
    with open(log_path, errors="replace") as f:
        record["log_warnings"] = sorted({line.split(" - ", 3)[-1].strip() for line in f if " - WARNING - " in line})
    record["output"] = out
    return record


def placement(path: str) -> dict:
    """Where a Q/DQ graph quantizes: Q/DQ counts, the op types reading a DequantizeLinear (activations and weights
    apart), which convolutions read one, and how the weights are stored."""
    import onnx

    model = onnx.load(path)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def weight_dq(dq) -> bool:  # DQ of an initializer, or of a Q of one (float weights quantized at run time)
        source = producer.get(dq.input[0])
        return dq.input[0] in inits or (
            source is not None and source.op_type == "QuantizeLinear" and source.input[0] in inits
        )

    activation_ops: Counter = Counter()
    weight_ops: Counter = Counter()
    int8_convs = []
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        feeds = [producer.get(name) for name in node.input]
        dqs = [p for p in feeds if p is not None and p.op_type == "DequantizeLinear"]
        if any(not weight_dq(p) for p in dqs):
            kind = node.op_type
            if kind == "Reshape" and any(c.op_type == "InstanceNormalization" for c in consumers[node.output[0]]):
                kind = "GroupNorm (its Reshape)"
            activation_ops[kind] += 1
            if node.op_type == "Conv":
                int8_convs.append(node.name)
        if any(weight_dq(p) for p in dqs):
            weight_ops[node.op_type] += 1
    ops = Counter(n.op_type for n in graph.node)
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    weight_storage = Counter(
        "int8 initializer" if n.input[0] in inits else "float initializer, quantized by a QuantizeLinear"
        for n in dequantize
        if weight_dq(n)
    )
    return {
        "bytes": os.path.getsize(path),
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "nodes": len(graph.node),
        "quantize_linear": ops["QuantizeLinear"],
        "dequantize_linear": ops["DequantizeLinear"],
        "activation_dequantize": sum(not weight_dq(n) for n in dequantize),
        "weight_dequantize": sum(weight_dq(n) for n in dequantize),
        "weights": dict(weight_storage),
        "quantized_ops": dict(sorted(activation_ops.items())),
        "quantized_weights": dict(sorted(weight_ops.items())),
        "int8_convolutions": len(int8_convs),
        "convolutions": ops["Conv"],
        "float_convolutions": sorted(n.name for n in graph.node if n.op_type == "Conv" and n.name not in int8_convs),
        "_int8_convs": int8_convs,
    }


def parser_tables(path: str) -> dict:
    """TensorRT-RTX's parser type table (precision_mix) of the graph as written and of its native-GroupNorm form,
    parsed as bit_trt.export.trt_engine.build parses (strongly typed network, errors kept)."""
    import onnx

    from bit_trt.engine.tensorrt_library import ErrorLog, try_import
    from bit_trt.export.group_norm_form import to_native
    from bit_trt.export.trt_engine import network_creation_flags
    from bit_trt.export.trt_layer_types import precision_mix

    trt = try_import("tensorrt_rtx")
    if trt is None:
        return {"error": "tensorrt_rtx is not installed in this venv"}

    def parse(data: bytes) -> dict:
        log = ErrorLog(trt)
        builder = trt.Builder(log.logger)
        network = builder.create_network(network_creation_flags(trt))
        parser = trt.OnnxParser(network, log.logger)
        if not parser.parse(data, os.path.dirname(path)):
            return {"error": "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors)) or log.last()}
        mix = precision_mix(network, trt)
        return {k: mix[k] for k in ("int8_conv_mac_share", "fp16_non_conv_share", "summary", "layer_types") if k in mix}

    model = onnx.load(path)
    tables = {"library": f"tensorrt_rtx {trt.__version__}", "as_written": parse(model.SerializeToString())}
    counts = to_native(model)
    tables["native_group_norm"] = {**counts, **parse(model.SerializeToString())}
    return tables


# ---------------------------------------------------------------------------------------------- accuracy


def eval_set(bundle, extra: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The bundle's parity set (with its TF logits) plus `extra` seeded synthetic images with TF logits computed
    here, when the bundle's weights can be loaded again (synthetic, or a local file)."""
    from bit_trt.export.parity_images import synthetic_images
    from bit_trt.export.tf_reference import tf_reference_logits

    with np.load(os.path.join(bundle.path, "parity_inputs.npz")) as parity:
        images, logits = parity["images"], parity["tf_logits"]
    record: dict = {"parity_set": int(len(images))}
    source = bundle.manifest["model"]["source"]
    local = "synthetic" if source["kind"] == "synthetic" else source.get("path")
    if extra and local and (local == "synthetic" or os.path.exists(local)):
        more = synthetic_images(extra, bundle.input_spec.resolution, seed=EVAL_SEED)
        start = time.perf_counter()
        more_logits, child_peak = tf_reference_logits(
            local,
            None,
            bundle.manifest["model"]["variant"],
            bundle.num_classes,
            int(source.get("seed", 0)),
            more,
        )
        record.update(
            {
                "synthetic": extra,
                "synthetic_seed": EVAL_SEED,
                "tf_reference_s": round(time.perf_counter() - start, 1),
                "tf_reference_peak_rss_gb": gigabytes(child_peak),
            }
        )
        images, logits = np.concatenate([images, more]), np.concatenate([logits, more_logits])
    elif extra:
        record["synthetic"] = f"none: the weights ({source['kind']}) cannot be loaded again here for TF's logits"
    record["images"] = int(len(images))
    return images, logits, record


def accuracy(paths: dict[str, str], images: np.ndarray, tf_logits: np.ndarray, threads: int | None) -> dict:
    from bit_trt.engine import compare
    from bit_trt.export.ort_logits import ort_logits

    keys = ("rel_l2", "cosine_min", "top1_agreement", "top5_overlap", "max_abs", "mean_abs")
    rows, logits = {}, {}
    for name, path in paths.items():
        start = time.perf_counter()
        logits[name] = ort_logits(path, images, batch=2, threads=threads)
        m = compare.measure(logits[name], tf_logits)
        rows[name] = {k: round(m[k], 6) for k in keys} | {"ort_s": round(time.perf_counter() - start, 1)}
    if "ours" in logits and "modelopt" in logits:
        m = compare.measure(logits["ours"], logits["modelopt"])
        rows["ours_vs_modelopt"] = {k: round(m[k], 6) for k in keys}
    return rows


# ---------------------------------------------------------------------------------------------- verdict


def verdict(tables: dict, acc: dict) -> dict:
    """Ours at least as low-precision as ModelOpt's (both shares, in the form plans are built from) at equal or
    better accuracy against TF."""
    checks = {}
    for form in ("native_group_norm", "as_written"):
        ours, theirs = tables["ours"].get(form, {}), tables["modelopt"].get(form, {})
        for key in ("int8_conv_mac_share", "fp16_non_conv_share"):
            if key in ours and key in theirs:
                checks[f"{key} ({form})"] = {
                    "ours": round(ours[key], 4),
                    "modelopt": round(theirs[key], 4),
                    "ok": ours[key] >= theirs[key],
                }
    a, b = acc.get("ours"), acc.get("modelopt")
    if a and b:
        for key, better in (("rel_l2", min), ("cosine_min", max), ("top1_agreement", max)):
            checks[f"{key} vs TF"] = {"ours": a[key], "modelopt": b[key], "ok": better(a[key], b[key]) == a[key]}
    precision_ok = all(v["ok"] for k, v in checks.items() if "share" in k) and any("share" in k for k in checks)
    accuracy_ok = all(v["ok"] for k, v in checks.items() if "vs TF" in k) and any("vs TF" in k for k in checks)
    return {
        "checks": checks,
        "at_least_as_low_precision": precision_ok,
        "at_least_as_accurate": accuracy_ok,
        "passed": precision_ok and accuracy_ok,
    }


def differences(ours: dict, theirs: dict) -> dict:
    only_theirs = sorted(set(theirs["_int8_convs"]) - set(ours["_int8_convs"]))
    only_ours = sorted(set(ours["_int8_convs"]) - set(theirs["_int8_convs"]))
    ops = sorted(set(theirs["quantized_ops"]) | set(ours["quantized_ops"]))
    return {
        "int8_convolutions_only_modelopt": only_theirs,
        "int8_convolutions_only_ours": only_ours,
        "quantized_ops_ours_vs_modelopt": {
            op: [ours["quantized_ops"].get(op, 0), theirs["quantized_ops"].get(op, 0)] for op in ops
        },
    }


# ---------------------------------------------------------------------------------------------- main


def compare_bundle(args) -> dict:
    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.tool_versions import tool_versions

    python = os.path.abspath(args.modelopt_python)
    result: dict = {"schema": SCHEMA, "command": "python -m tools.modelopt_compare " + shlex.join(args.argv)}
    if args.install:
        print(f"installing ModelOpt into {VENV} ...", file=sys.stderr)
        result["install"] = install(os.path.dirname(os.path.dirname(python)))
    _require_modelopt(python)
    result["modelopt"] = modelopt_versions(python)
    if not args.install:
        result["install"] = _previous_install(args.out, result["modelopt"]) or {
            "venv_du_gb": gigabytes(_du_bytes(os.path.dirname(os.path.dirname(python)))),
            "wall_s": "not measured in this run (pass --install)",
        }
    if args.make_bundle:
        if os.path.exists(args.bundle):
            raise SystemExit(f"--make-bundle: {args.bundle} exists; remove it or drop --make-bundle")
        print(f"exporting {args.variant} to {args.bundle} ...", file=sys.stderr)
        result["bundle_export"] = make_bundle(args.bundle, args.variant, args.resolution)
    else:
        result["bundle_export"] = {"command": None, "note": "an existing bundle: not made by this run"}
    try:
        bundle = load_bundle(args.bundle)
        fp32_path = bundle.artifact_path("fp32")  # verifies the sha256: the files are the manifest's
        ours_path = bundle.artifact_path("int8-trt")
    except BitError as exc:
        raise SystemExit(str(exc)) from None
    record = bundle.artifacts()["int8-trt"]
    m = bundle.manifest
    result["bundle"] = {
        "path": args.bundle,
        "variant": m["model"]["variant"],
        "resolution": m["input"]["resolution"],
        "weights": m["model"]["source"].get("description", m["model"]["source"]["kind"]),
        "created": m.get("created"),
        "fp32_sha256": bundle.artifacts()["fp32"]["sha256"],
        "int8_trt_sha256": record["sha256"],
    }
    calib = record["calibration"]
    result["calibration"] = {
        k: calib[k] for k in ("kind", "count", "seed", "sha256", "method", "path") if k in calib
    } | {
        "modelopt_method": args.calibration_method,
        "same_images": "regenerated from the int8-trt record and matched to its sha256; ModelOpt gets them "
        "scaled by scale_uint8 (float32 NHWC [0, 1]), one image per calibration step as ours (--calib-batch 1)",
    }
    images_u8 = calibration_images(bundle, calib)

    work = tempfile.mkdtemp(prefix="modelopt-compare-", dir=args.work)
    try:
        print(f"ModelOpt INT8 PTQ on {len(images_u8)} images ...", file=sys.stderr)
        run = run_modelopt(python, fp32_path, images_u8, work, args.calibration_method)
        del images_u8
        theirs_path = run.pop("output", None)
        result["modelopt_run"] = run
        print("placement and parser tables ...", file=sys.stderr)
        graphs = {"ours": placement(ours_path)}
        if theirs_path:
            graphs["modelopt"] = placement(theirs_path)
        result["differences"] = differences(graphs["ours"], graphs["modelopt"]) if theirs_path else None
        result["placement"] = {k: {f: v for f, v in g.items() if not f.startswith("_")} for k, g in graphs.items()}
        tables = {"ours": parser_tables(ours_path)}
        if theirs_path:
            tables["modelopt"] = parser_tables(theirs_path)
        result["parser"] = tables
        print("accuracy against TF ...", file=sys.stderr)
        images, tf_logits, result["eval_set"] = eval_set(bundle, args.eval_synthetic)
        paths = {"fp32": fp32_path, "ours": ours_path}
        if theirs_path:
            paths["modelopt"] = theirs_path
        result["accuracy_vs_tf"] = {"runtime": "onnxruntime CPU", **accuracy(paths, images, tf_logits, args.threads)}
        result["verdict"] = verdict(tables, result["accuracy_vs_tf"]) if theirs_path else {"passed": None}
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for name in ("model.int8-modelopt.onnx", "modelopt.log"):
                if os.path.exists(os.path.join(work, name)):
                    shutil.copy(os.path.join(work, name), args.keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["measured"] = time.strftime("%Y-%m-%d", time.gmtime())
    result["tools"] = tool_versions()
    return result


def _previous_install(path: str, versions: dict) -> dict | None:
    try:
        with open(path) as f:
            previous = json.load(f)
    except (OSError, ValueError):
        return None
    if previous.get("modelopt", {}).get("nvidia-modelopt") == versions.get("nvidia-modelopt"):
        return previous.get("install")
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m tools.modelopt_compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="a --precision all bundle (its fp32 and int8-trt ONNX)")
    p.add_argument("--make-bundle", action="store_true", help="export the bundle first (it must not exist)")
    p.add_argument("--variant", default="r50x1", help="--make-bundle: the variant")
    p.add_argument("--resolution", type=int, default=480, help="--make-bundle: the resolution")
    p.add_argument("--modelopt-python", default=os.path.join(VENV, "bin", "python"))
    p.add_argument("--install", action="store_true", help=f"(re)create {VENV} from {REQUIREMENTS}, timed")
    p.add_argument("--calibration-method", default="max", help="ModelOpt's (max: our exporter's minmax)")
    p.add_argument("--eval-synthetic", type=int, default=58, help="synthetic images added to the parity set")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", help="where the temporary folder goes (default: the system's)")
    p.add_argument("--keep", help="a folder to keep ModelOpt's graph and log in")
    p.add_argument("--out", help="results file (default bench/results/int8_trt_vs_modelopt_<variant>.json)")
    args = p.parse_args(argv)
    args.argv = argv
    if args.modelopt_python == p.get_default("modelopt_python"):
        args.modelopt_python = os.path.join(REPO, args.modelopt_python)  # the repository's venv, wherever we run
    if not args.out:
        try:
            with open(os.path.join(args.bundle, "manifest.json")) as f:
                variant = json.load(f)["model"]["variant"]
        except (OSError, ValueError, KeyError):
            variant = args.variant
        args.out = os.path.join(RESULTS, f"int8_trt_vs_modelopt_{variant}.json")
    result = compare_bundle(args)
    write_json_atomic(args.out, result, "ModelOpt comparison")
    print(f"wrote {args.out}", file=sys.stderr)
    print(json.dumps(result["verdict"], indent=1))


if __name__ == "__main__":
    main()
