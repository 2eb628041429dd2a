"""Does INT8 on OpenVINO run faster with its float layers in bf16? (issue 20: the best INT8 against the best bf16)

The int8-ort file through the openvino runner three ways, each as bit-classify runs it (the runner's graph
rewrites, static shapes, LATENCY hint, the given threads): its float layers (GroupNorm statistics, residual sums,
the quantize before each convolution) in f32, the same in bf16, and beside them the fp16 tier in bf16. Per batch
size the three are timed in `--rounds` rounds, the order reversed every other round, and each is held against TF's
stored logits on the bundle's parity set (and the bf16 INT8 against the f32 INT8, to show how far bf16 moves it).

    python -m tools.openvino_int8_bf16 BUNDLE [--batches 1,8] [--rounds 6] [--threads 2] [--json OUT]

Maintainers' measurement, not part of the installed package: the answer decides which arithmetic the runner's INT8
tier takes on a CPU where bf16 pays (engine/openvino_runner.py; docs/cpu.md, "INT8's float layers in bf16").
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bit_trt.engine import backends, compare
from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.preprocess import scale_uint8
from tools.openvino_study import arguments, write_result

WAYS = {"int8 f32": ("int8", "f32"), "int8 bf16": ("int8", "bf16"), "fp16 bf16": ("fp16", "bf16")}


def measure(bundle, batch: int, rounds: int, threads: int, parity) -> dict:
    images, tf_logits = parity
    batch_images = np.ascontiguousarray(np.resize(images, (batch,) + images.shape[1:]))
    runners = {
        way: backends.create(bundle, "openvino", precision, threads=threads, inference_precision=arithmetic)
        for way, (precision, arithmetic) in WAYS.items()
    }
    try:
        logits, described = {}, {}
        for way, runner in runners.items():
            runner.activate()
            logits[way], described[way] = runner.infer(images), runner.describe()
            for _ in range(2):  # the second call compiles the model for this batch shape alone
                runner.infer(batch_images)
        times = {way: [] for way in runners}
        for k in range(rounds):
            for way, runner in list(runners.items())[:: -1 if k % 2 else 1]:
                start = time.perf_counter()
                runner.infer(batch_images)
                times[way].append(round((time.perf_counter() - start) * 1000 / batch, 2))
    finally:
        for runner in runners.values():
            runner.deactivate()
    median = {way: statistics.median(t) for way, t in times.items()}

    def vs(test, reference):
        m = compare.measure(test, reference)
        return {k: round(float(m[k]), 6) for k in ("rel_l2", "cosine_min", "max_abs", "logit_scale")}

    return {
        "batch": batch,
        "threads": threads,
        "described": described,
        "ms_per_image": times,
        "median_ms_per_image": median,
        "int8_bf16_over_int8_f32": round(median["int8 f32"] / median["int8 bf16"], 3),
        "int8_bf16_over_fp16_bf16": round(median["fp16 bf16"] / median["int8 bf16"], 3),
        "vs_tf": {way: vs(logits[way], tf_logits) for way in runners},
        "int8_bf16_vs_int8_f32": vs(logits["int8 bf16"], logits["int8 f32"]),
    }


def main(argv=None) -> None:
    args = arguments(__doc__, argv, ("--batches", "1,8"))
    bundle = load_bundle(args.bundle)
    images, _, tf_logits = load_parity_set(bundle)
    parity = (scale_uint8(images), tf_logits)
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        row = measure(bundle, batch, args.rounds, args.threads, parity)
        med = row["median_ms_per_image"]
        print(
            f"batch {batch}: ms/image "
            + ", ".join(f"{way} {ms:.1f}" for way, ms in med.items())
            + f"; int8 bf16 over int8 f32 {row['int8_bf16_over_int8_f32']:.2f}, over fp16 bf16 "
            f"{row['int8_bf16_over_fp16_bf16']:.2f}; rel L2 vs TF "
            + ", ".join(f"{way} {m['rel_l2']:.3f}" for way, m in row["vs_tf"].items()),
            flush=True,
        )
        rows.append(row)
    write_result("openvino_int8_bf16", argv, args.bundle, bundle, rows, args.json)


if __name__ == "__main__":
    main()
