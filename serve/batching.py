"""How large a batch Triton may form for a classifier, and how long its dynamic batcher waits: bit-serve's and
bit-triton's one answer.

A TensorRT plan takes at most its optimization profile's max batch in one call, so a requested max batch above it
is refused (`check_max_batch`, for both commands). Without a request, bit-triton gives a TensorRT model its
profile's max (the size the plan was built for) and an ONNX model DEFAULT_MAX_BATCH; bit-serve gives any backend
DEFAULT_MAX_BATCH, lowered to a smaller profile max (`serving_max_batch`).
"""

from __future__ import annotations

from ..engine.errors import BitError

DEFAULT_MAX_BATCH = 8
# The dynamic batcher's longest wait for more requests. It costs a lone request that much latency and only matters
# while the model is idle: a busy model's queue fills batches without waiting. Each command keeps the default it
# shipped with (bit-serve's served bench/results/serve_*.json; no measurement has compared the two values).
SERVE_MAX_QUEUE_DELAY_US = 1000
TRITON_MAX_QUEUE_DELAY_US = 2000


def check_max_batch(requested: int | None, profile_max: int | None, plans: str = "the plan's") -> int | None:
    """`requested` (None: not asked for), refused below 1 or above `profile_max`, the most one call of a TensorRT
    plan takes (None: no such limit). `plans` names whose profile it is in the message."""
    if requested is None:
        return None
    if requested < 1:
        raise BitError(f"--max-batch must be at least 1, got {requested}")
    if profile_max and requested > profile_max:
        raise BitError(
            f"--max-batch {requested} is above {plans} profile max {profile_max}; "
            f"rebuild with bit-engine --max-batch {requested}, or ask for at most {profile_max}"
        )
    return requested


def serving_max_batch(requested: int | None, profile_max: int | None) -> int:
    """bit-serve's max batch: `requested` (checked), else DEFAULT_MAX_BATCH within the profile max."""
    checked = check_max_batch(requested, profile_max)
    if checked is not None:
        return checked
    return min(DEFAULT_MAX_BATCH, profile_max) if profile_max else DEFAULT_MAX_BATCH
