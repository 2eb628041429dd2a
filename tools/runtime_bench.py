"""Runtime benchmark on the CPU: preprocessing throughput, and end-to-end images/s against pure inference.

    python -m tools.runtime_bench --variant r50x1            # exports a bundle with every precision
    python -m tools.runtime_bench --bundle out/r50x1 --rounds 5

- Preprocessing at the bundle's resolution (480), one thread: from JPEG bytes (decode + resize + scale)
  and from decoded uint8 arrays (resize + scale), on the two real photos of the parity set.
- For each CPU backend (ort-cpu, openvino) and precision (fp32, int8) at batch 1 and 8: pure inference
  (runner.infer on a ready float batch) and end to end (Classifier.predict on JPEG bytes), interleaved
  window by window in one process so that both see the same machine noise. Ratios are read within a run.
  Timed by bit-bench's own loop (bench/measurement.py); bit-bench is the user-facing form of this table.
Writes bench/results/runtime_cpu_<variant>_<resolution>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from bit_trt.engine.memory import gigabytes
from bit_trt.engine.preprocess import read_image
from tools import RESULTS


def preprocessing(spec, photos: list[str], rounds: int) -> dict:
    from bit_trt.engine.preprocess import preprocess, read_image

    jpegs = [open(p, "rb").read() for p in photos]
    arrays = [read_image(p) for p in photos]
    per = 16  # images per timed call
    out = {
        "resolution": spec.resolution,
        "threads": 1,
        "images": [os.path.basename(p) for p in photos],
        "source_sizes": [list(a.shape) for a in arrays],
    }
    import cv2

    from bit_trt.bench.configurations import Configuration
    from bit_trt.bench.measurement import Schedule, Workload, measure

    cv2.setNumThreads(1)
    try:
        for name, data in (("jpeg_bytes", jpegs), ("decoded_uint8", arrays)):
            batch = [data[i % len(data)] for i in range(per)]
            config = Configuration("opencv", name, per, 1, "preprocess")
            work = Workload(config, lambda batch=batch: preprocess(batch, spec))
            measure([work], Schedule(warmup_s=0, iterations=rounds, max_windows=max(rounds, 3)))
            med, lo, hi = statistics.median(work.latencies_ms), min(work.latencies_ms), max(work.latencies_ms)
            out[name] = {
                "images_per_s": round(1000 * per / med, 1),
                "ms_per_image": round(med / per, 2),
                "min_ms_per_image": round(lo / per, 2),
                "max_ms_per_image": round(hi / per, 2),
            }
    finally:
        cv2.setNumThreads(0)
    return out


def backends_table(bundle_path: str, photos: list[str], rounds: int, threads: int) -> list[dict]:
    """Pure inference against end to end per backend, precision and batch, timed by bit-bench's own loop
    (bench/measurement.py): both modes of every combination interleaved window by window."""
    from bit_trt.bench.bit_bench import request_for
    from bit_trt.bench.configurations import Configuration
    from bit_trt.bench.measurement import Schedule, Workload, measure
    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.classifier import Classifier

    bundle = load_bundle(bundle_path)
    encoded = [open(p, "rb").read() for p in photos]
    decoded = [read_image(p) for p in photos]
    combos = [(b, p) for b in ("ort-cpu", "openvino") for p in ("fp32", "int8")]
    classifiers = {c: Classifier(bundle, backend=c[0], precision=c[1], threads=threads).__enter__() for c in combos}
    rows = []
    try:
        for batch in (1, 8):
            workloads = {
                (c, mode): Workload(config, request_for(classifiers[c], config, decoded, encoded))
                for c in combos
                for mode in ("model", "end-to-end")
                for config in [Configuration(c[0], c[1], batch, 1, mode)]
            }
            measure(list(workloads.values()), Schedule(warmup_s=0, iterations=rounds, max_windows=max(rounds, 3)))
            median = {key: statistics.median(w.latencies_ms) / 1000 for key, w in workloads.items()}
            base = median[(("ort-cpu", "fp32"), "model")]
            for c, clf in classifiers.items():
                infer, e2e = median[(c, "model")], median[(c, "end-to-end")]
                model_ms = workloads[(c, "model")].latencies_ms
                rows.append(
                    {
                        "backend": c[0],
                        "precision": c[1],
                        "batch": batch,
                        "described": clf.backend,
                        "infer_ms": round(1000 * infer, 1),
                        "end_to_end_ms": round(1000 * e2e, 1),
                        "infer_images_per_s": round(batch / infer, 2),
                        "end_to_end_images_per_s": round(batch / e2e, 2),
                        "end_to_end_over_infer": round(e2e / infer, 3),
                        "infer_speedup_vs_ort_fp32": round(base / infer, 2),
                        "infer_min_ms": round(min(model_ms), 1),
                        "infer_max_ms": round(max(model_ms), 1),
                    }
                )
    finally:
        for clf in classifiers.values():
            clf.close()
    return rows


def run(variant: str, bundle: str | None, rounds: int, threads: int, out_dir: str) -> dict:
    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.parity_set import real_photo_paths
    from tools.precision_bench import _export, _write

    photos = real_photo_paths()
    with tempfile.TemporaryDirectory() as work:
        export = None
        if bundle is None:
            bundle = os.path.join(work, "b")
            t0 = time.perf_counter()
            m = _export(
                ["--variant", variant, "--precision", "all", "--calib-synthetic", "--engine", "none", "--out", bundle],
                env={"BIT_TRT_CACHE": os.path.join(work, "cache")},
            )
            export = {
                "command": f"bit-export --variant {variant} --precision all --calib-synthetic --engine none",
                "wall_s": round(time.perf_counter() - t0, 1),
                "peak_rss_gb": gigabytes(m["export"]["peak_rss_bytes"]),
                "steps_s": m["export"]["steps_s"],
            }
        b = load_bundle(bundle)
        result = {
            "variant": b.manifest["model"]["variant"],
            "resolution": b.input_spec.resolution,
            "weights": b.manifest["model"]["source"]["kind"],
            "threads": threads,
            "rounds": rounds,
            "export_all": export,
            "preprocessing_cpu": preprocessing(b.input_spec, photos, max(rounds, 5)),
            "backends": backends_table(bundle, photos, rounds, threads),
        }
    _write(os.path.join(out_dir, f"runtime_cpu_{result['variant']}_{result['resolution']}.json"), result)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.runtime_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="r50x1", help="exported here when --bundle is not given")
    p.add_argument("--bundle", help="an existing bundle with fp32 and int8 variants")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args(argv)
    print(json.dumps(run(args.variant, args.bundle, args.rounds, args.threads, args.out), indent=1))


if __name__ == "__main__":
    sys.exit(main())
