"""`bit-classify BUNDLE INPUT... --ray ADDRESS --out results.parquet`: bulk classification on a Ray cluster.

bit-classify hands its command line here when it holds --ray (engine/classify_cli.py, by name: engine/ never
imports Ray). The job itself is scale/bulk.py.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..engine.errors import BitError
from .ray_cluster import LOCAL, connect

PROG = "bit-classify --ray"

EPILOG = f"""\
INPUT: image files, directories (their image files, recursively), globs ('photos/**/*.jpg', quoted) or @FILE (one
path per line). Every node reads the images and the bundle at the same paths: a shared volume (docs/scaling.md).

--out is a directory of Parquet shards (part-NNNNN.parquet, each written whole or not at all) and _job.json. A
rerun with the same --out and job does only the shards not written yet; an --out of another bundle or job is
refused. Read it with pyarrow.parquet.read_table(OUT) or pandas.read_parquet(OUT).

ADDRESS: host:port of the cluster's GCS, ray://host:port, auto, or {LOCAL} (a one-node Ray started here).
"""


def build_parser() -> argparse.ArgumentParser:
    from ..engine.classify_cli import add_backend_arguments, add_image_limit_arguments, positive_int

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Classify many images on a Ray cluster (Ray Data, an actor pool of Classifiers).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", help="bundle directory written by bit-export (the same path on every node)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories, globs or @FILE lists")
    p.add_argument("--ray", required=True, metavar="ADDRESS", help=f"the Ray cluster: host:port, auto or {LOCAL}")
    p.add_argument("--out", required=True, help="output directory of Parquet shards (resumable)")
    p.add_argument("--top", type=positive_int, default=5, help="classes per row (default 5)")
    p.add_argument("--logits", action="store_true", help="keep every image's logits too")
    p.add_argument("--workers", type=positive_int, default=2, help="Classifier actors (default 2)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each actor asks Ray for (default 1)")
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs each actor asks Ray for (default: 1 for trt, ort-trt and ort-cuda, else 0)",
    )
    p.add_argument("--shard-size", type=positive_int, default=64, help="images per output shard (default 64)")
    p.add_argument(
        "--start-timeout-s",
        type=float,
        default=300.0,
        help="how long to wait for every worker to start (resources, the bundle checked) (default %(default)s)",
    )
    add_backend_arguments(p)
    add_image_limit_arguments(p)
    return p


class Progress:
    """One line on stderr, rewritten in place on a terminal, a line per tenth of the job elsewhere (logs)."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.start, self.last_tenth = stream, time.monotonic(), -1

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.start
        line = f"{PROG}: {done}/{total} shards ({done / total:.0%}) in {elapsed:.0f} s"
        if self.stream.isatty():
            print("\r" + line, end="" if done < total else "\n", file=self.stream, flush=True)
        elif done * 10 // total > self.last_tenth:
            self.last_tenth = done * 10 // total
            print(line, file=self.stream, flush=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from ..engine.backends import gpus_for
        from . import bulk

        args.gpus_per_worker = gpus_for(args.backend, args.gpus_per_worker)
        for name in ("cpus_per_worker", "gpus_per_worker"):
            if not getattr(args, name) >= 0:
                raise BitError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(args, name)}")
        paths = bulk.collect_inputs(args.inputs)
        job = bulk.plan_job(args.bundle, paths, args.backend, args.precision, args.top, args.logits, args.shard_size)
        bulk.prepare_out(args.out, job, create=False)  # a foreign --out is refused before a cluster is touched
        connect(args.ray)
        summary = bulk.run(
            job,
            paths,
            args.out,
            args.workers,
            args.cpus_per_worker,
            args.gpus_per_worker,
            args.threads,
            args.max_image_pixels,
            args.max_decode_mb,
            progress=Progress(),
            start_timeout_s=args.start_timeout_s,
            static_shapes=args.static_shapes,
        )
    except BitError as exc:
        if args.debug:
            raise
        print(f"bit-classify: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{PROG}: {summary['images']} image(s) in {summary['written']} new shard(s) "
        f"({summary['skipped']} already done) on {len(summary['nodes'])} node(s), {summary['errors']} unreadable "
        f"image(s) kept as error rows; {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
