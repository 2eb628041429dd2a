"""Runtime benchmark on the CPU: preprocessing throughput, and end-to-end images/s against pure inference.

    python -m bit_trt.bench.runtime_bench --variant r50x1            # exports a bundle with every precision
    python -m bit_trt.bench.runtime_bench --bundle out/r50x1 --rounds 5

- Preprocessing at the bundle's resolution (480), one thread: from JPEG bytes (decode + resize + scale)
  and from decoded uint8 arrays (resize + scale), on the two real photos of the parity set.
- For each CPU backend (ort-cpu, openvino) and precision (fp32, int8) at batch 1 and 8: pure inference
  (runner.infer on a ready float batch) and end to end (Classifier.predict on JPEG bytes), interleaved
  round by round in one process so that both see the same machine noise. Ratios are read within a run.
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

from ..export.resources import gigabytes

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def _median_s(fn, rounds: int) -> tuple[float, float, float]:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), max(times)


def preprocessing(spec, photos: list[str], rounds: int) -> dict:
    from ..engine.preprocess import preprocess, read_image

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

    cv2.setNumThreads(1)
    for name, data in (("jpeg_bytes", jpegs), ("decoded_uint8", arrays)):
        batch = [data[i % len(data)] for i in range(per)]
        preprocess(batch, spec)
        med, lo, hi = _median_s(lambda batch=batch: preprocess(batch, spec), rounds)
        out[name] = {
            "images_per_s": round(per / med, 1),
            "ms_per_image": round(1000 * med / per, 2),
            "min_ms_per_image": round(1000 * lo / per, 2),
            "max_ms_per_image": round(1000 * hi / per, 2),
        }
    cv2.setNumThreads(0)
    return out


def backends_table(bundle_path: str, photos: list[str], rounds: int, threads: int) -> list[dict]:
    from ..engine.bundle import load_bundle
    from ..engine.classifier import Classifier
    from ..engine.preprocess import preprocess

    bundle = load_bundle(bundle_path)
    jpegs = [open(p, "rb").read() for p in photos]
    combos = [(b, p) for b in ("ort-cpu", "openvino") for p in ("fp32", "int8")]
    rows = []
    classifiers = {c: Classifier(bundle, backend=c[0], precision=c[1], threads=threads).__enter__() for c in combos}
    try:
        for batch in (1, 8):
            encoded = [jpegs[i % len(jpegs)] for i in range(batch)]
            ready = preprocess(encoded, bundle.input_spec)
            times = {(c, kind): [] for c in combos for kind in ("infer", "end_to_end")}
            for clf in classifiers.values():  # warm-up
                clf.predict(encoded)
            for _ in range(rounds):
                for c, clf in classifiers.items():
                    t = time.perf_counter()
                    clf.runner.infer(ready)
                    times[(c, "infer")].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    clf.predict(encoded)
                    times[(c, "end_to_end")].append(time.perf_counter() - t)
            base = statistics.median(times[(("ort-cpu", "fp32"), "infer")])
            for c, clf in classifiers.items():
                infer = statistics.median(times[(c, "infer")])
                e2e = statistics.median(times[(c, "end_to_end")])
                rows.append(
                    {
                        "backend": c[0],
                        "precision": c[1],
                        "batch": batch,
                        "described": clf.runner.describe(),
                        "infer_ms": round(1000 * infer, 1),
                        "end_to_end_ms": round(1000 * e2e, 1),
                        "infer_images_per_s": round(batch / infer, 2),
                        "end_to_end_images_per_s": round(batch / e2e, 2),
                        "end_to_end_over_infer": round(e2e / infer, 3),
                        "infer_speedup_vs_ort_fp32": round(base / infer, 2),
                        "infer_min_ms": round(1000 * min(times[(c, "infer")]), 1),
                        "infer_max_ms": round(1000 * max(times[(c, "infer")]), 1),
                    }
                )
    finally:
        for clf in classifiers.values():
            clf.close()
    return rows


def run(variant: str, bundle: str | None, rounds: int, threads: int, out_dir: str) -> dict:
    from ..bench.precision_bench import _export, _write
    from ..engine.bundle import load_bundle
    from ..export.parity_images import real_photo_paths

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
    p = argparse.ArgumentParser(prog="python -m bit_trt.bench.runtime_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="r50x1", help="exported here when --bundle is not given")
    p.add_argument("--bundle", help="an existing bundle with fp32 and int8 variants")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args(argv)
    print(json.dumps(run(args.variant, args.bundle, args.rounds, args.threads, args.out), indent=1))


if __name__ == "__main__":
    sys.exit(main())
