"""Bulk classification on Ray Data: every image of the inputs, one output row each, written as atomic shards.

The inputs (files, directories, globs, @lists) are expanded and sorted into one list, which is cut into shards
of `shard_size` images. Ray Data hands shards to an actor pool of Classifiers (each opened from the bundle as its
node sees it, checked against the bundle's identity); a worker writes its shard's rows to
OUT/part-NNNNN.parquet through a temporary file and a rename, so a shard file is whole or absent. A shard's rows
depend only on its images, so a shard redone after a node died writes the very same file: the output has no
duplicate and no missing row whatever failed, and a rerun with the same --out does only the shards not there.

OUT/_job.json names the job (bundle manifest sha256, backend, precision, top-k, logits, shard size, and a hash
of the input list): a rerun into an OUT of another job is refused instead of mixing two.

Rows: path, top_index (list of int32), top_label (list of str), top_probability (list of float32), logits (list of
float32, with --logits), error (null, or the engine's one line for an image that could not be read). A bad image
is a row with its error, never a failed job.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from ..engine.atomic_write import atomic_path
from ..engine.bundle import manifest_sha256
from ..engine.compare import softmax
from ..engine.errors import BitError, require
from ..engine.preprocess import preprocess

JOB_FILE = "_job.json"
JOB_FORMAT = "bit-trt-bulk"
JOB_VERSION = 1
SHARD = "part-{:05d}.parquet"
# What a directory input contributes: the formats OpenCV decodes (engine/preprocess.py).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".jp2")


@dataclass(frozen=True)
class BulkJob:
    """Everything that decides the output's contents: two runs with equal jobs write equal shards."""

    bundle: str
    bundle_sha256: str
    backend: str
    precision: str
    top: int
    logits: bool
    shard_size: int
    inputs_sha256: str
    images: int

    def identity(self) -> dict:
        record = dataclasses.asdict(self)
        record.pop("bundle")  # the same bundle may sit at another path on another run
        return {"format": JOB_FORMAT, "version": JOB_VERSION, **record}


def collect_inputs(items: list[str]) -> list[str]:
    """Absolute paths of every image the inputs name, sorted and without repeats: a file, a directory (its image
    files, recursively), a glob, or @FILE (one path per line). An input that names nothing is one line."""
    found: set[str] = set()
    for item in items:
        if item.startswith("@"):
            try:
                with open(item[1:], encoding="utf-8") as f:
                    listed = [line.strip() for line in f if line.strip() and not line.startswith("#")]
            except OSError as exc:
                raise BitError(f"{item}: cannot read the file list ({exc.strerror})") from None
            missing = [p for p in listed if not os.path.isfile(p)]
            if missing:
                raise BitError(f"{item}: {len(missing)} listed file(s) do not exist, e.g. {missing[0]!r}")
            found.update(os.path.abspath(p) for p in listed)
        elif os.path.isdir(item):
            for top, dirs, names in os.walk(item):
                dirs.sort()
                found.update(os.path.abspath(os.path.join(top, n)) for n in names if n.lower().endswith(IMAGE_SUFFIXES))
        elif os.path.isfile(item):
            found.add(os.path.abspath(item))
        elif glob.has_magic(item):
            matched = [p for p in glob.glob(item, recursive=True) if os.path.isfile(p)]
            if not matched:
                raise BitError(f"{item}: the pattern matches no file")
            found.update(os.path.abspath(p) for p in matched)
        else:
            raise BitError(f"{item}: no such file, directory or pattern")
    if not found:
        raise BitError("the inputs name no image (directories contribute files ending in " + ", ".join(IMAGE_SUFFIXES))
    return sorted(found)


def plan_job(bundle: str, paths: list[str], backend: str, precision: str, top: int, logits: bool, shard_size: int):
    if top < 1:
        raise BitError(f"--top must be at least 1, got {top}")
    if shard_size < 1:
        raise BitError(f"--shard-size must be at least 1, got {shard_size}")
    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()
    return BulkJob(bundle, manifest_sha256(bundle), backend, precision, top, logits, shard_size, digest, len(paths))


def shards(paths: list[str], shard_size: int) -> list[list[str]]:
    return [paths[i : i + shard_size] for i in range(0, len(paths), shard_size)]


def prepare_out(out: str, job: BulkJob, create: bool = True) -> set[int]:
    """OUT ready for `job`: made (with its _job.json) if new and `create`; if it holds this job, the shards already
    written; a directory of another job, or anything else, is refused in one line. create=False only checks, so
    that a job that never starts (an unreachable cluster) leaves nothing behind."""
    job_path = os.path.join(out, JOB_FILE)
    if os.path.exists(out) and not os.path.isdir(out):
        raise BitError(f"--out {out!r} exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out):
        try:
            with open(job_path, encoding="utf-8") as f:
                existing = json.load(f)
        except FileNotFoundError:
            raise BitError(f"--out {out!r} is a non-empty directory that holds no bulk job; choose another") from None
        except (OSError, ValueError) as exc:
            raise BitError(f"{job_path}: unreadable ({exc})") from None
        wanted = job.identity()
        differing = [k for k in wanted if existing.get(k) != wanted[k]]
        if differing:
            what = "another bundle" if "bundle_sha256" in differing else "another job"
            raise BitError(
                f"--out {out!r} holds the results of {what} (differs in {', '.join(differing)}); "
                "choose another --out, or remove it to start over"
            )
        return {
            i for i in range(-(-job.images // job.shard_size)) if os.path.isfile(os.path.join(out, SHARD.format(i)))
        }
    if not create:
        return set()
    os.makedirs(out, exist_ok=True)
    with atomic_path(job_path, "bulk job") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(job.identity(), f, indent=2)
    return set()


def classify_rows(clf, paths: list[str], top: int, with_logits: bool) -> dict[str, list]:
    """Columns for `paths`: each image decoded alone (a bad one is its row's error), the good ones in one call."""
    arrays, errors, good = [], [], []
    for path in paths:
        try:
            arrays.append(preprocess([path], clf.spec, clf.max_image_pixels, [path]))
            errors.append(None)
            good.append(len(errors) - 1)
        except BitError as exc:
            errors.append(str(exc))
    classes = len(clf.labels)
    logits = np.full((len(paths), classes), np.nan, np.float32)
    if arrays:
        logits[good] = clf.infer(np.concatenate(arrays))
    probabilities = softmax(logits)
    k = min(top, classes)
    names = [str(entry.get("name", "")) for entry in clf.labels]
    columns: dict[str, list] = {"path": paths, "top_index": [], "top_label": [], "top_probability": []}
    for row, error in zip(probabilities, errors):
        order = np.argsort(-row, kind="stable")[:k] if error is None else []
        columns["top_index"].append([int(j) for j in order])
        columns["top_label"].append([names[j] for j in order])
        columns["top_probability"].append([float(row[j]) for j in order])
    if with_logits:
        columns["logits"] = [None if e else row.tolist() for row, e in zip(logits, errors)]
    columns["error"] = errors
    return columns


def write_shard(out: str, index: int, columns: dict[str, list]) -> str:
    """OUT/part-NNNNN.parquet, whole or not at all: written beside it under a unique name, then renamed."""
    pa = require("pyarrow")
    pq = require("pyarrow.parquet")
    fields = [
        pa.field("path", pa.string()),
        pa.field("top_index", pa.list_(pa.int32())),
        pa.field("top_label", pa.list_(pa.string())),
        pa.field("top_probability", pa.list_(pa.float32())),
    ]
    if "logits" in columns:
        fields.append(pa.field("logits", pa.list_(pa.float32())))
    fields.append(pa.field("error", pa.string()))
    table = pa.table({f.name: pa.array(columns[f.name], f.type) for f in fields}, schema=pa.schema(fields))
    final = os.path.join(out, SHARD.format(index))
    with atomic_path(final, "result shard") as tmp:
        pq.write_table(table, tmp)
    return final


class ShardWorker:
    """One Classifier per actor of Ray Data's pool; each call classifies whole shards and writes them."""

    def __init__(
        self,
        job: BulkJob,
        out: str,
        threads: int | None,
        max_image_pixels: int,
        max_decode_mb: int,
        static_shapes: int | None = None,
    ):
        from .verified_classifier import open_verified

        self.job, self.out = job, out
        self.clf = open_verified(
            job.bundle,
            job.bundle_sha256,
            job.backend,
            job.precision,
            threads,
            max_image_pixels,
            max_decode_mb,
            static_shapes,
        )

    def __call__(self, batch: dict) -> dict:
        import ray

        node = ray.get_runtime_context().get_node_id()
        done = {"shard": [], "images": [], "errors": [], "node": []}
        for index, paths in zip(batch["shard"], batch["paths"]):
            columns = classify_rows(self.clf, list(paths), self.job.top, self.job.logits)
            write_shard(self.out, int(index), columns)
            done["shard"].append(int(index))
            done["images"].append(len(paths))
            done["errors"].append(sum(e is not None for e in columns["error"]))
            done["node"].append(node)
        return done


def _count(row: dict, seen: set, summary: dict) -> None:
    if row["shard"] in seen:  # a shard redone after its result was delivered: counted once
        return
    seen.add(row["shard"])
    summary["written"] += 1
    summary["images"] += row["images"]
    summary["errors"] += row["errors"]
    if row["node"] not in summary["nodes"]:
        summary["nodes"].append(row["node"])


def read_results(out: str):
    """Every shard of OUT as one pyarrow table, in input order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted(n for n in os.listdir(out) if n.startswith("part-") and n.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(os.path.join(out, n)) for n in names])


def run(
    job: BulkJob,
    paths: list[str],
    out: str,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    threads: int | None,
    max_image_pixels: int,
    max_decode_mb: int,
    progress=None,
    start_timeout_s: float = 300.0,
    static_shapes: int | None = None,
) -> dict:
    """The job on the connected Ray cluster: the shards not yet in OUT, through an actor pool of `workers`
    Classifiers. Returns counts; `progress(shards_done, shards_total)` is called as shards land."""
    import ray.data

    from .ray_cluster import first_line

    all_shards = shards(paths, job.shard_size)
    done = prepare_out(out, job)
    todo = [{"shard": i, "paths": s} for i, s in enumerate(all_shards) if i not in done]
    summary = {"shards": len(all_shards), "skipped": len(done), "written": 0, "images": 0, "errors": 0, "nodes": []}
    if not todo:
        return summary
    # Every worker started (its bundle checked on its node) before the first shard: a cluster short of the CPUs
    # and GPUs asked for is one line after start_timeout_s, not a job that waits forever.
    context = ray.data.DataContext.get_current()
    context.wait_for_min_actors_s = max(1, int(start_timeout_s))
    dataset = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
        ShardWorker,
        fn_constructor_kwargs={
            "job": job,
            "out": out,
            "threads": threads,
            "max_image_pixels": max_image_pixels,
            "max_decode_mb": max_decode_mb,
            "static_shapes": static_shapes,
        },
        batch_size=1,
        concurrency=workers,
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker,
    )
    seen = set()
    try:
        for row in dataset.iter_rows():
            _count(row, seen, summary)
            if progress:
                progress(len(done) + len(seen), len(all_shards))
    except ray.exceptions.GetTimeoutError:
        raise BitError(
            f"the cluster did not start {workers} worker(s) within {start_timeout_s:.0f} s (each asks for "
            f"{cpus_per_worker:g} CPU(s) and {gpus_per_worker:g} GPU(s))"
        ) from None
    except ray.exceptions.RayError as exc:
        raise BitError(f"the job failed: {first_line(str(exc))}") from None
    missing = [i for i in range(len(all_shards)) if not os.path.isfile(os.path.join(out, SHARD.format(i)))]
    if missing:
        raise BitError(f"{len(missing)} shard(s) were not written (first: {SHARD.format(missing[0])}); rerun to finish")
    return summary
