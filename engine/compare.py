"""The comparator: measures how far two sets of logits are apart, then judges against explicit tolerances.

Measuring and deciding are separate: `measure` gives numbers, `Tolerance.check` gives a verdict, so
reports can show the numbers of a comparison that failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import BitError


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed in float64 (stable for large logits)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def measure(test: np.ndarray, reference: np.ndarray, topk: int = 5) -> dict:
    """Metrics of `test` logits against `reference` logits, both [N, classes]."""
    t = np.asarray(test, np.float64)
    r = np.asarray(reference, np.float64)
    if t.shape != r.shape or t.ndim != 2:
        raise BitError(f"cannot compare logits of shape {t.shape} with reference logits of shape {r.shape}")
    diff = t - r
    cos = np.sum(t * r, axis=1) / np.maximum(np.linalg.norm(t, axis=1) * np.linalg.norm(r, axis=1), 1e-30)
    k = min(topk, r.shape[1])
    top_r = np.argsort(-r, axis=1)[:, :k]
    top_t = np.argsort(-t, axis=1)[:, :k]
    top5 = [len(set(a) & set(b)) / k for a, b in zip(top_t, top_r)]
    # A top-1 flip between two classes whose reference logits are closer than the error is no evidence of
    # a broken export: count decisive samples (margin above twice the max error) separately.
    srt = np.sort(r, axis=1)
    margin = srt[:, -1] - srt[:, -2] if r.shape[1] > 1 else np.full(len(r), np.inf)
    top1_equal = top_t[:, 0] == top_r[:, 0]
    decisive = margin > 2 * np.abs(diff).max(axis=1)
    return {
        "samples": int(len(r)),
        "max_abs": float(np.abs(diff).max()),
        "mean_abs": float(np.abs(diff).mean()),
        "rel_l2": float(np.linalg.norm(diff) / max(np.linalg.norm(r), 1e-30)),
        "cosine_min": float(cos.min()),
        "top1_agreement": float(top1_equal.mean()),
        "top1_agreement_decisive": float(top1_equal[decisive].mean()) if decisive.any() else 1.0,
        "top5_overlap": float(np.mean(top5)),
        "logit_scale": float(np.abs(r).max()),
    }


@dataclass(frozen=True)
class Tolerance:
    rel_l2: float
    cosine_min: float
    max_abs_over_scale: float
    top1_decisive: float = 1.0

    def check(self, metrics: dict) -> list[str]:
        """The tolerances `metrics` breaks, as readable lines; empty when it passes."""
        failures = []
        if not metrics["rel_l2"] <= self.rel_l2:
            failures.append(f"relative L2 {metrics['rel_l2']:.3g} > {self.rel_l2:g}")
        if not metrics["cosine_min"] >= self.cosine_min:
            failures.append(f"min cosine {metrics['cosine_min']:.8f} < {self.cosine_min}")
        scaled = metrics["max_abs"] / max(metrics["logit_scale"], 1e-30)
        if not scaled <= self.max_abs_over_scale:
            failures.append(
                f"max abs {metrics['max_abs']:.3g} is {scaled:.3g} of the logit scale > {self.max_abs_over_scale:g}"
            )
        if not metrics["top1_agreement_decisive"] >= self.top1_decisive:
            failures.append(
                f"top-1 agreement on decisive samples {metrics['top1_agreement_decisive']:.3f} < {self.top1_decisive}"
            )
        return failures

    def to_dict(self) -> dict:
        return asdict(self)


# FP32 ONNX against FP32 TF: the same arithmetic in a different order. Measured with synthetic weights at
# 480x480: R50x1 rel L2 ~1e-5, R50x3 ~5e-5 (InstanceNormalization accumulates its variance differently
# from TF's moments over 345k-element groups). A real defect is orders of magnitude larger: a -inf instead
# of zero stem pad, a wrong epsilon or a missed weight standardization gives rel L2 >= 1e-2.
FP32_PARITY = Tolerance(rel_l2=3e-4, cosine_min=0.99999, max_abs_over_scale=2e-3)
# FP16 against FP32 (and TF): 10-bit mantissas through 50+ layers. Measured with synthetic weights at 480:
# R50x1 rel L2 3.0e-3, cosine 0.999996. A real FP16 failure (an overflow to inf in a normalization or a
# residual sum) shows as NaN logits or rel L2 of order 1.
FP16_PARITY = Tolerance(rel_l2=2e-2, cosine_min=0.9995, max_abs_over_scale=5e-2)
# INT8 on a deployment host (bit-check): the export's accuracy gate judged top-1 on an evaluation set; on the
# handful of parity images only the gate's cosine floor is meaningful, with a loose L2 bound that still
# catches a broken engine (wrong input layout or scale gives cosine near 0).
# bf16 (OpenVINO on a CPU with native bf16, engine/compute_gate.py): 8-bit mantissas, f32 accumulation. Measured
# on R50x1 at 480 with synthetic weights: OpenVINO's own bf16 rel L2 2.5e-2 on an AVX-512 BF16 EPYC. An emulation
# that rounds the weights and every activation tensor to bf16 (an upper bound: OpenVINO keeps normalizations in
# f32) gives tiny 2.8e-2 (cosine 0.99954), R50x1 6.1e-2 (cosine 0.99799), R50x3 3.0e-2 (cosine 0.99949). The
# bounds sit above the emulation with margin; a real bf16 failure (a saturated normalization, a wrong layout)
# gives a cosine far below.
BF16_PARITY = Tolerance(rel_l2=0.1, cosine_min=0.995, max_abs_over_scale=0.15)
INT8_CHECK = Tolerance(rel_l2=0.5, cosine_min=0.95, max_abs_over_scale=1.0, top1_decisive=0.0)
# INT8 with its float layers (GroupNorm statistics, residual sums, the quantize before each convolution) in bf16
# (OpenVINO on a CPU where bf16 pays, engine/compute_gate.py). Measured on OpenVINO 2026.4, AMX Xeon, synthetic
# weights, the bundle's 6 parity images against TF: R50x1 at 480 rel L2 0.092, cosine 0.9955, max abs 0.12 of the
# logit scale (its f32 float layers: 0.084, 0.9964, 0.11); R50x3 0.089, 0.9952, 0.12 (0.083, 0.9964); the tiny test
# model at 1 thread 0.118, 0.9923 (0.107, 0.9940). bf16 adds little to INT8's own error, although against the same
# graph in f32 it moves the answers by rel L2 0.094 (a float that moves across a rounding step of the next
# quantize): so the gate is against TF, like every other. Tighter than INT8_CHECK (bit-check's bound for INT8 with
# f32 float layers), with about twice the measured error as margin; a broken bf16 normalization or layout gives
# cosine far below. An INT8 model that misses it runs its float layers in f32 instead, as the export gated it.
INT8_BF16_PARITY = Tolerance(rel_l2=0.25, cosine_min=0.98, max_abs_over_scale=0.3, top1_decisive=0.0)
# INT8 on ONNX Runtime's CPU provider with its GroupNorms on bit-trt's fused kernel (engine/ort_group_norm.py, gated
# on the host by engine/compute_gate.py). The kernel computes the graph's own arithmetic in another order, so its
# error against TF is INT8's own: on this AMX Xeon, synthetic weights, the bundle's 6 parity images, R50x1 at 480 rel
# L2 0.086 (ORT's own ops: 0.085), R50x3 0.083 (0.083). Against the same graph on ORT's own ops it moves the answers
# by rel L2 0.064-0.068, as any change of rounding order does in INT8 (a float that crosses a rounding step of the
# next quantize). The same bound as INT8 in bf16, for the same reasons; a broken kernel (a wrong layout, group or
# scale) gives cosine far below.
INT8_KERNEL_PARITY = INT8_BF16_PARITY


def report(test: np.ndarray, reference: np.ndarray, tolerance: Tolerance) -> dict:
    """The one parity report, for the export's verdicts and bit-check alike: metrics, tolerance, verdict."""
    metrics = measure(test, reference)
    failures = tolerance.check(metrics)
    return {**metrics, "tolerance": tolerance.to_dict(), "passed": not failures, "failures": failures}


# The flavours OpenVINO may run with bf16 float arithmetic (its fp16 and INT8 tiers), and the bound each is held to
# there (engine/compute_gate.py). Each artifact record keeps its own as `bf16_tolerance`, for readers in any language:
# bit-export writes it; `bit-engine BUNDLE --upgrade-manifest` adds it to the records of bundles exported before.
BF16_GATED_FLAVOURS = {"fp16": BF16_PARITY, "int8-ort": INT8_BF16_PARITY}


def tolerance_for(precision: str, compute: str | None = None) -> Tolerance:
    """The check for an artifact of `precision`, run in `compute` (bf16 where a backend chose it on this host)."""
    if compute in ("bf16", "int8+bf16"):
        return INT8_BF16_PARITY if precision == "int8" else BF16_PARITY
    return {"fp32": FP32_PARITY, "fp16": FP16_PARITY, "int8": INT8_CHECK}[precision]
