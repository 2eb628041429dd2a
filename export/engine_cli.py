"""`bit-engine BUNDLE`: TensorRT plans for the host you deploy on, built from a bundle's verified ONNX.

A plan is tied to a TensorRT version and a GPU, so a fleet of different GPUs needs one plan per target,
all from the same ONNX that was checked against TF at export. This verb builds them where they will run,
with the export's own build code and options, and needs no TensorFlow: only the bundle and `tensorrt`
(or `tensorrt-rtx`).

The bundle is updated atomically: plans are built in a staging directory inside the bundle, moved into
place, and the manifest is replaced last (one rename). A failed or interrupted build leaves the bundle's
manifest, and every file it names, as they were.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone

from ..engine.bundle import Bundle, file_record, load_bundle, upgrade_manifest, write_manifest
from ..engine.errors import BitError
from ..engine.parity_set import load_parity_set
from ..engine.precision import PRECISIONS, flavour_for, flavour_of
from . import trt_engine


class _Staging:
    """Where new plans are written before they join the bundle (the writer protocol of trt_engine)."""

    def __init__(self, directory: str):
        self.directory = directory

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def record(self, name: str) -> dict:
        return file_record(self.directory, name)


def _sources(bundle: Bundle, precisions: list[str]) -> list[dict]:
    """The ONNX records to build from, checksums verified: fp32/fp16 by name, int8 as TensorRT's S8S8 graph."""
    available = {flavour_of(a): a for a in trt_engine.tensorrt_sources(bundle.manifest["artifacts"])}
    wanted = [flavour_for("trt", p) for p in precisions]
    missing = [f for f in wanted if f not in available]
    if missing:
        raise BitError(
            f"bundle {bundle.path!r} has no {', '.join(missing)} ONNX graph for TensorRT (it has: "
            f"{', '.join(available) or 'none'}); export it with bit-export --precision ..."
        )
    for flavour in wanted:
        bundle.verify_file(available[flavour])  # a tampered ONNX never reaches the builder
    return [available[f] for f in wanted]


def add_engines(
    bundle_path: str, precisions: list[str], engine: str, options, force: bool = False, progress=lambda msg: None
) -> list[dict]:
    """Build plans for `precisions` into the bundle at `bundle_path`; return their manifest records."""
    bundle = load_bundle(bundle_path)
    options.validate()
    sources = _sources(bundle, precisions)
    parity = None
    if options.group_norm == "native":  # the rewritten graph must match TF's logits before it is built
        images, _, tf_logits = load_parity_set(bundle)
        parity = (images, tf_logits)
    picked = trt_engine.builder_for(engine, require_engine=True, progress=progress)
    if picked is None:
        raise BitError("--engine none builds nothing; choose auto, tensorrt or tensorrt_rtx")
    trt, target = picked
    names = {trt_engine.plan_name(flavour_of(a), trt.__name__, trt.__version__, target) for a in sources}
    existing = sorted(a["file"] for a in bundle.manifest["artifacts"] if a["kind"] == "engine" and a["file"] in names)
    if existing and not force:
        raise BitError(
            f"bundle already has {', '.join(existing)} for {trt.__name__} {trt.__version__} on {target}; "
            "pass --force to rebuild"
        )
    spec = bundle.input_spec
    try:  # a real probe: permission bits say nothing to root, a read-only mount says nothing to os.access
        staging = tempfile.mkdtemp(prefix=".bit-engine-partial-", dir=bundle.path)
    except OSError as exc:
        raise BitError(f"bundle {bundle.path!r} is not writable ({exc.strerror}); copy it somewhere writable") from exc
    try:
        plans = trt_engine.build_plans(
            trt,
            target,
            sources,
            lambda art: os.path.join(bundle.path, art["file"]),
            _Staging(staging),
            spec.name,
            spec.resolution,
            options,
            parity,
            progress,
        )
        built = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for plan in plans:
            plan["built"] = {"by": "bit-engine", "at": built}
        _publish(bundle, staging, plans)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return plans


def _publish(bundle: Bundle, staging: str, plans: list[dict]) -> None:
    """Move the plans in, then replace the manifest in one rename; undo the moves if anything fails first."""
    names = {p["file"] for p in plans}
    manifest = dict(bundle.manifest)
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["file"] not in names] + plans
    backup = os.path.join(staging, ".replaced")
    os.makedirs(backup)
    moved = []
    try:
        for name in names:
            target = os.path.join(bundle.path, name)
            if os.path.exists(target):  # --force: keep the old plan until the new manifest is in place
                os.replace(target, os.path.join(backup, name))
            os.replace(os.path.join(staging, name), target)
            moved.append(name)
        write_manifest(bundle.path, manifest)
    except BaseException:
        for name in moved:
            os.remove(os.path.join(bundle.path, name))
        for name in os.listdir(backup):
            os.replace(os.path.join(backup, name), os.path.join(bundle.path, name))
        raise


def _check_here(bundle_path: str, plan: dict) -> str:
    """Where the plan can run on this host, bit-check it against the stored TF logits; say why not otherwise."""
    from ..engine import gpu_host
    from ..engine.plan_check import check_plan
    from ..engine.tensorrt_library import try_import

    module = try_import(plan["library"])
    try:
        check_plan(plan, getattr(module, "__version__", None), gpu_host.compute_capability(), bundle_path)
    except BitError as exc:
        return f"not checked here ({str(exc).split(';')[0]})"
    from ..engine.classifier import Classifier
    from ..engine.parity_set import check, summary

    flavour = flavour_of(plan)
    try:
        with Classifier(bundle_path, backend="trt", precision=flavour) as clf:
            result = check(clf, flavour, reference="stored")
    except BitError as exc:
        print(f"bit-check: error: {exc}", file=sys.stderr)
        return "bit-check FAILED (exit 2)"
    print("\n".join(summary(bundle_path, flavour, result)))
    return "bit-check PASS" if result["passed"] else "bit-check FAILED (exit 1)"


def main(argv=None) -> int:
    from .cli import add_build_arguments, build_options_from_args

    p = argparse.ArgumentParser(prog="bit-engine", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", help="bundle directory written by bit-export")
    p.add_argument(
        "--precision",
        default="all",
        help=f"comma-separated {','.join(PRECISIONS)} (int8: the S8S8 Q/DQ graph), or all (default: every "
        "precision the bundle has)",
    )
    add_build_arguments(p, engine="auto")
    p.add_argument("--force", action="store_true", help="rebuild plans this bundle already has for this target")
    p.add_argument(
        "--upgrade-manifest",
        action="store_true",
        help="rewrite an older bundle's manifest in the current format (what engine/cpp reads), with the bf16 gate's "
        "bounds its fp16 and int8-ort records lack, and build nothing",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    start = time.perf_counter()

    def progress(msg: str):
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        if args.upgrade_manifest:
            print(upgrade_manifest(args.bundle))
            return 0
        if args.precision == "all":
            bundle = load_bundle(args.bundle)
            have = {flavour_of(a) for a in trt_engine.tensorrt_sources(bundle.manifest["artifacts"])}
            precisions = [p for p in PRECISIONS if flavour_for("trt", p) in have]
        else:
            precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
            unknown = [p for p in precisions if p not in PRECISIONS]
            if unknown or not precisions:
                raise BitError(
                    f"unknown precision {', '.join(unknown) or '(none)'}; choose from {', '.join(PRECISIONS)}, all"
                )
        plans = add_engines(args.bundle, precisions, args.engine, build_options_from_args(args), args.force, progress)
    except BitError as exc:
        if args.debug:
            raise
        print(f"bit-engine: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bit-engine: interrupted; the bundle is unchanged", file=sys.stderr)
        return 130
    for plan in plans:
        print(f"{plan['file']}  {plan['bytes'] / 1e6:.1f} MB  from {plan['from']}  {_check_here(args.bundle, plan)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
