"""Does the arithmetic this host chose keep the bundle's accuracy? The gate for a compute type picked at run time.

Every artifact was checked against TF at export, in the arithmetic it was exported for. Two choices are made on the
host that runs it instead, so each is checked there, before the runner serves: the bundle's parity set in that
arithmetic against TF's stored logits.
- OpenVINO's bf16 for the float arithmetic of the fp16 and INT8 tiers, only where the CPU's bf16 computes faster than
  its f32, with compare.tolerance_for(precision, "bf16") (BF16_PARITY; INT8_BF16_PARITY for the INT8 graph). A
  failure refuses that precision on that backend (`auto` then moves on), or for INT8 runs its float layers in f32.
- bit-trt's fused GroupNorm kernel on ONNX Runtime's CPU provider for the INT8 graph (engine/ort_group_norm.py), built
  on this host, with compare.INT8_KERNEL_PARITY. A failure runs ORT's own ops instead.
Either way the failure names the measured error.

The verdict is kept in the user cache, keyed by the artifact's sha256, the runtime's description, the CPU and the
tolerance, so a server pays for the check once per host and model, not on every start. Only a verdict this user
alone may have written is taken (engine/user_cache.py); the C++ library keeps its verdicts beside these by the same
rule (engine/cpp/src/compute_gate.cpp).
"""

from __future__ import annotations

import hashlib
import json

from .compare import BF16_PARITY, Tolerance, report
from .cpu_host import onednn_host
from .errors import BitError
from .parity_set import load_parity_set
from .preprocess import scale_uint8
from .user_cache import cache_dir, read_own, write_own


def check(
    bundle, flavour: str, infer, described: str, tolerance: Tolerance = BF16_PARITY, instead: str | None = None
) -> dict:
    """The parity set through `infer` (float NHWC batch -> logits) against TF; returns the verdict, or raises a
    one-line BitError naming the measured error when it fails. `instead`: what the message says to use instead."""
    art = bundle.artifacts("onnx")[flavour]
    cpu = onednn_host()  # the gate is OpenVINO's: a dispatcher cap changes its kernels, so it is part of the key
    key = hashlib.sha256(
        json.dumps([art["sha256"], described, cpu.name, cpu.kernel_flags(), cpu.isa_cap, tolerance.to_dict()]).encode()
    ).hexdigest()[:32]
    path = cache_dir("compute-gate", f"{key}.json")
    verdict = _cached(path)
    if verdict is None:
        images, _, tf_logits = load_parity_set(bundle)
        verdict = report(infer(scale_uint8(images)), tf_logits, tolerance)
        verdict = {k: verdict[k] for k in ("rel_l2", "cosine_min", "max_abs", "top1_agreement", "passed", "failures")}
        verdict |= {"described": described, "images": len(images)}
        try:
            write_own(path, json.dumps(verdict, indent=1).encode(), "compute-gate verdict")
        except (OSError, BitError):  # a read-only home: the check simply runs again next time
            pass
    if not verdict["passed"]:
        instead = instead or (
            "--precision fp32 or int8" if flavour == "fp16" else "inference precision f32, or --precision fp32"
        )
        raise GateFailed(
            f"{described}: the {flavour} model in this arithmetic fails the accuracy gate against TF on the bundle's "
            f"parity set ({'; '.join(verdict['failures'])}), so it is refused here; use "
            f"{instead}",
            verdict["failures"],
        )
    return verdict


class GateFailed(BitError):
    """The arithmetic chosen here misses the gate: `failures` says by how much, in compare.Tolerance.check's words."""

    def __init__(self, message: str, failures: list[str]):
        super().__init__(message)
        self.failures = failures


def _cached(path: str) -> dict | None:
    """The verdict kept at `path`, if this user alone may have written it (user_cache.read_own): in a shared
    $BIT_TRT_CACHE another local user could otherwise say "passed" for a model that fails."""
    data = read_own(path, limit=1 << 20)
    if data is None:
        return None
    try:
        verdict = json.loads(data)
        readable = isinstance(verdict.get("passed"), bool) and isinstance(verdict.get("failures"), list)
        return verdict if readable else None
    except (ValueError, AttributeError):
        return None
