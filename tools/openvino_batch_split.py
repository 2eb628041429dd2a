"""Does OpenVINO run a batch faster as one request or as one request per image? (issue 20, batch 8 on the CPU)

For each file of a bundle, a model compiled for the whole batch and one compiled for a single image (both static
shapes, LATENCY hint, the given threads, the file's arithmetic: bf16 for the fp16 file where the CPU has it), then
`--rounds` paired rounds: the batch as one request, then the same images one request at a time, each round's two
adjacent in time so that the host's drift over seconds falls on both. Reports milliseconds per image, each round's
ratio (batch over split: above 1, splitting is faster) and their median, and how far the two ways' logits differ
(relative to the largest logit: float sums in another order, nothing more).

    python -m tools.openvino_batch_split BUNDLE [--flavours fp32,fp16,int8-ort] [--batch 8] [--rounds 6]
        [--threads 2] [--json OUT]

Maintainers' measurement, not part of the installed package: the answer decides whether the OpenVINO runner should
split batches, and on which models and hosts.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bit_trt.engine.bundle import Bundle, load_bundle
from bit_trt.engine.openvino_runner import import_openvino
from tools.openvino_study import arguments, arithmetic, compiled, write_result


def measure(bundle: Bundle, flavour: str, batch: int, rounds: int, threads: int, fp16_in=None) -> dict:
    ov = import_openvino()
    core = ov.Core()
    resolution = bundle.input_spec.resolution
    precision = arithmetic(core, flavour, fp16_in)
    path = bundle.artifact_path(flavour)
    whole = compiled(core, path, [batch, resolution, resolution, 3], precision, threads).create_infer_request()
    single = compiled(core, path, [1, resolution, resolution, 3], precision, threads).create_infer_request()
    images = np.random.default_rng(0).random((batch, resolution, resolution, 3), dtype=np.float32)

    def one_request():
        return whole.infer({0: images})[0]

    def per_image():
        return np.concatenate([single.infer({0: images[i : i + 1]})[0] for i in range(batch)])

    for _ in range(2):  # first-inference setup of both
        together, apart = one_request(), per_image()
    # the same computation both ways: the logits may differ only in the order of float sums
    difference = float(np.abs(together - apart).max() / max(float(np.abs(together).max()), 1e-12))
    batched, split = [], []
    for _ in range(rounds):
        for run, into in ((one_request, batched), (per_image, split)):
            start = time.perf_counter()
            run()
            into.append(round((time.perf_counter() - start) * 1000 / batch, 2))
    ratios = [round(b / s, 3) for b, s in zip(batched, split)]
    return {
        "flavour": flavour,
        "inference_precision": precision,
        "batch": batch,
        "threads": threads,
        "ms_per_image_batched": batched,
        "ms_per_image_split": split,
        "median_batched": statistics.median(batched),
        "median_split": statistics.median(split),
        "batched_over_split": ratios,
        "median_ratio": statistics.median(ratios),
        "max_difference_over_max_logit": round(difference, 6),
    }


def main(argv=None) -> None:
    args = arguments(__doc__, argv, ("--batch", 8))
    bundle = load_bundle(args.bundle)
    rows = []
    for flavour in args.flavours.split(","):
        row = measure(bundle, flavour, args.batch, args.rounds, args.threads, args.fp16_in)
        print(
            f"{flavour} ({row['inference_precision']}) batch {args.batch}: {row['median_batched']:.1f} ms/image as one "
            f"request, {row['median_split']:.1f} one image at a time; batch over split {row['median_ratio']:.2f} "
            f"(rounds {min(row['batched_over_split']):.2f}-{max(row['batched_over_split']):.2f})",
            flush=True,
        )
        rows.append(row)
    write_result("openvino_batch_split", argv, args.bundle, bundle, rows, args.json)


if __name__ == "__main__":
    main()
