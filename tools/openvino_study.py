"""What the OpenVINO study tools share (tools/openvino_batch_split.py, tools/openvino_group_norm.py,
tools/openvino_pad_pool.py): a bundle file compiled for one static shape on latency settings, two forms of one
file timed in alternating rounds, and the result record each writes."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

from bit_trt.bench.bit_bench import host
from bit_trt.engine.bundle import Bundle, load_bundle
from bit_trt.engine.compare import measure as agreement
from bit_trt.engine.cpu_host import onednn_host
from bit_trt.engine.openvino_runner import arithmetic_for, import_openvino
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.precision import precision_of
from bit_trt.engine.preprocess import scale_uint8


def compiled(core, path: str, shape: list[int], precision: str, threads: int, edit=None, profile: bool = False):
    """The file at `path` compiled for `shape` (LATENCY hint, `threads`, INFERENCE_PRECISION_HINT `precision`);
    `edit`, if given, changes the read ov.Model first (called as edit(model, bf16): whether `precision` is bf16, for
    edits that rewrite as the runner does for that arithmetic); `profile` turns OpenVINO's performance counters on."""
    model = core.read_model(path)
    if edit is not None:
        edit(model, precision == "bf16")
    model.reshape(shape)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision}
    if profile:
        config["PERF_COUNT"] = True
    return core.compile_model(model, "CPU", config)


def profile(compiled, images) -> dict:
    """The layout Reorders one profiled inference executes and their share of its time, and the time's split by
    layer type and the precision each ran in (OpenVINO's names: "Convolution I8", "Subgraph f32", ...; shares of
    at least 0.5%), which says what an INT8 or bf16 model spends its time on besides its convolutions."""
    request = compiled.create_infer_request()
    for _ in range(2):
        request.infer({0: images})
    executed = [p for p in request.profiling_info if p.status == p.Status.EXECUTED]
    total = sum(p.real_time.total_seconds() for p in executed)
    reorders = [p for p in executed if p.node_type == "Reorder"]
    share = sum(p.real_time.total_seconds() for p in reorders) / total if total else 0.0
    by_type: dict[str, float] = {}
    for p in executed:
        key = f"{p.node_type} {p.exec_type.rsplit('_', 1)[-1]}"
        by_type[key] = by_type.get(key, 0.0) + p.real_time.total_seconds()
    shares = {
        k: round(t / total, 3)
        for k, t in sorted(by_type.items(), key=lambda kv: -kv[1])
        if total and t >= 0.005 * total
    }
    return {"reorders": len(reorders), "reorder_share_of_time": round(share, 3), "share_by_layer_type": shares}


def arithmetic(core, flavour: str, fp16_in: str | None = None) -> str:
    """The inference precision a study compiles `flavour`'s file in: the runner's (bf16 for the fp16 and INT8 files
    where it computes faster than f32 here, else f32), or `fp16_in` for the fp16 file where one is given (--fp16-in)."""
    return fp16_in if flavour == "fp16" and fp16_in else arithmetic_for(core, precision_of(flavour))


def paired_forms(
    bundle: Bundle, flavour: str, batch: int, rounds: int, threads: int, forms, count_key: str, fp16_in=None
) -> dict:
    """Two forms of one bundle file, `forms` = ((name, edit or None), (name, edit)), each compiled for [batch, R, R,
    3] (LATENCY hint, `threads`, `arithmetic`),
    timed in `rounds` paired rounds that alternate which goes first. Each form's record: `count_key`, what its edit
    returned (an int: how many it rewrote), its profile (above), its agreement with TF on the bundle's parity set,
    and its milliseconds per image; then each round's ratio (first over second: above 1, the second is faster)
    and their median."""
    core = import_openvino().Core()
    resolution = bundle.input_spec.resolution
    precision = arithmetic(core, flavour, fp16_in)
    path = bundle.artifact_path(flavour)
    shape = [batch, resolution, resolution, 3]
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    parity, _, tf_logits = load_parity_set(bundle)
    row: dict = {"flavour": flavour, "inference_precision": precision, "batch": batch, "threads": threads}
    names = [name for name, _ in forms]
    requests = {}
    for name, edit in forms:
        counts = []

        # the first call's count: the file is not read to count
        def edit_counted(model, bf16, edit=edit, counts=counts):
            counts.append(edit(model, bf16))

        counted = edit_counted if edit is not None else None
        requests[name] = compiled(core, path, shape, precision, threads, counted).create_infer_request()
        for _ in range(2):  # first-inference setup
            requests[name].infer({0: images})
        profiled = compiled(core, path, shape, precision, threads, counted, profile=True)
        # the parity set on the dynamic model: its size is not the timed batch
        dynamic = compiled(core, path, [-1, resolution, resolution, 3], precision, threads, counted)
        logits = dynamic.create_infer_request().infer({0: scale_uint8(parity)})[0]
        vs_tf = agreement(logits, tf_logits)
        row[name] = {
            count_key: counts[0] if counts else 0,
            **profile(profiled, images),
            "vs_tf": {k: round(float(vs_tf[k]), 6) for k in ("rel_l2", "cosine_min", "top1_agreement")},
            "ms_per_image": [],
        }
        del profiled, dynamic
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            requests[name].infer({0: images})
            row[name]["ms_per_image"].append(round((time.perf_counter() - start) * 1000 / batch, 2))
    times = [row[name]["ms_per_image"] for name in names]
    ratios = [round(a / b, 3) for a, b in zip(*times)]
    row |= {
        "median_ms_per_image": {name: statistics.median(t) for name, t in zip(names, times)},
        f"{names[0]}_over_{names[1]}": ratios,
        "median_ratio": statistics.median(ratios),
    }
    return row


def elementwise_line(forms, count_key: str, what: str):
    """An `extra` for paired_main: both forms' share of their time in elementwise Subgraphs (OpenVINO's Snippets, by
    each form's profile), then how many of the first form's `count_key` the second has: "elementwise Subgraphs 45.1%
    -> 41.0% of the time, 16 of 16 sums through one reader" (`what`: "sums through one reader")."""
    (first, _), (second, _) = forms

    def line(row: dict) -> str:
        shares = [
            sum(share for kind, share in row[form]["share_by_layer_type"].items() if kind.startswith("Subgraph "))
            for form in (first, second)
        ]
        return (
            f"elementwise Subgraphs {shares[0]:.1%} -> {shares[1]:.1%} of the time, "
            f"{row[second][count_key]} of {row[first][count_key]} {what}"
        )

    return line


def arguments(doc: str, argv, batches: tuple[str, object]):
    """The study tools' command line: BUNDLE, --flavours, the batch option `batches` ("--batches" with "1,8", or
    "--batch" with 8), --rounds, --threads, --fp16-in, --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--flavours", default="fp32,fp16,int8-ort")
    option, default = batches
    parser.add_argument(option, default=default, type=type(default))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--fp16-in", choices=("bf16", "f32"), help="the fp16 file's arithmetic (default: the runner's choice here)"
    )
    parser.add_argument("--json")
    return parser.parse_args(argv)


def paired_main(tool: str, doc: str, argv, forms, count_key: str, extra, flavours: str | None = None) -> None:
    """A paired-forms tool's run: every --flavours file (`flavours` where the command line names none, and the
    record's command says so) at every --batches size through paired_forms, one line printed for each (both forms'
    times, the ratio and its rounds' range, both forms' rel L2 against TF, then what `extra(row)` adds), then the
    record written."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if flavours and not any(a == "--flavours" or a.startswith("--flavours=") for a in argv):
        argv += ["--flavours", flavours]
    args = arguments(doc, argv, ("--batches", "1,8"))
    bundle = load_bundle(args.bundle)
    rows = []
    for flavour in args.flavours.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            row = paired_forms(bundle, flavour, batch, args.rounds, args.threads, forms, count_key, args.fp16_in)
            (first, _), (second, _) = forms
            ratios = row[f"{first}_over_{second}"]
            print(
                f"{flavour} ({row['inference_precision']}) batch {batch}: ms/image {first} "
                f"{row['median_ms_per_image'][first]:.1f}, {second} {row['median_ms_per_image'][second]:.1f}; "
                f"{first} over {second} {row['median_ratio']:.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f}); "
                f"rel L2 vs TF {row[first]['vs_tf']['rel_l2']:.2e} / {row[second]['vs_tf']['rel_l2']:.2e}; "
                f"{extra(row)}",
                flush=True,
            )
            rows.append(row)
    write_result(tool, argv, args.bundle, bundle, rows, args.json)


def write_result(tool: str, argv, bundle_path: str, bundle: Bundle, rows: list, json_path: str | None) -> dict:
    """The record of one run of `tool` (its command, time, bundle, host, OpenVINO version, rows), written to
    `json_path` if one is given."""
    # oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI, say) makes this host run as one without AMX or bf16
    # would: the record says so, since the host's flags do not
    cap = onednn_host().isa_cap
    env = dict([cap.split("=", 1)]) if cap else {}
    result = {
        "command": (f"{cap} " if cap else "")
        + f"python -m tools.{tool} "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": bundle_path,
        "variant": bundle.manifest["model"]["variant"],
        "host": host(),
        "openvino": import_openvino().__version__,
        **({"isa_cap": env} if env else {}),
        "rows": rows,
    }
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    return result
