"""A Classifier opened on a cluster node from the bundle as that node sees it, only if it is the deployed bundle:
its manifest's sha256 must match, and the model file it runs is checked against the manifest (Bundle.verify_file).
Ray Serve replicas and Ray Data workers both start this way, before they take any work."""

from __future__ import annotations

import os

from ..engine.backends import given_settings
from ..engine.bundle import load_bundle, manifest_sha256
from ..engine.classifier import Classifier
from ..engine.errors import BitError
from ..engine.preprocess import set_decode_budget


def open_verified(
    bundle: str,
    expected_sha256: str,
    backend: str,
    precision: str,
    threads: int | None,
    max_image_pixels: int,
    max_decode_mb: int,
    static_shapes: int | None = None,
) -> Classifier:
    if not os.path.isdir(bundle):
        raise BitError(f"bundle {bundle!r} is missing on this node; every node needs it at the same path")
    found = manifest_sha256(bundle)
    if expected_sha256 and found != expected_sha256:
        raise BitError(
            f"bundle {bundle!r} on this node differs from the deployed one (manifest sha256 {found[:12]}..., "
            f"expected {expected_sha256[:12]}...); refusing to use it"
        )
    set_decode_budget(max_decode_mb << 20)
    clf = Classifier(
        load_bundle(bundle),
        backend=backend,
        precision=precision,
        threads=threads,
        max_image_pixels=max_image_pixels,
        **given_settings(static_shapes=static_shapes),
    )
    clf.backend  # noqa: B018 -- activates the runner: a model that can't run here fails at start, not on work
    return clf
