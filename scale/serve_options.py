"""What `bit-serve BUNDLE --ray ADDRESS` (and KubeRay's serveConfigV2 `args`) asks of the Ray Serve application:
RayServeOptions, each default written here once, and the checks that run before anything starts."""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass

from ..engine.backends import gpus_for
from ..engine.classifier import Classifier
from ..engine.errors import BitError
from ..serve.batching import DEFAULT_MAX_BATCH, SERVE_MAX_QUEUE_DELAY_US
from ..serve.triton_models import ImageLimits

_CLASSIFIER = inspect.signature(Classifier).parameters
APP_NAME = "bit"
PROXY_LOCATIONS = ("HeadOnly", "EveryNode", "Disabled")


@dataclass(frozen=True)
class RayServeOptions:
    bundle: str
    # The sha256 of the bundle's manifest.json (which pins every artifact's sha256). Empty: the manifest the
    # driver reads when it deploys. Every replica compares it on its own node before it takes traffic.
    expected_sha256: str = ""
    backend: str = _CLASSIFIER["backend"].default
    precision: str = _CLASSIFIER["precision"].default
    static_shapes: int | None = None  # openvino's models compiled for one batch shape; None: the runner's default
    # Ray Serve's HTTP proxy. It has no authentication (docs/scaling.md, "Security"): loopback unless asked.
    host: str = "127.0.0.1"
    http_port: int = 8000
    # HeadOnly: one proxy, on the head node. EveryNode: one per node, each on http_port (one node per machine).
    proxy_location: str = "HeadOnly"
    min_replicas: int = 1
    max_replicas: int = 1
    # Ray Serve's autoscaling target: requests in flight per replica (queued and running) that it scales toward.
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 30.0  # Ray Serve's defaults: quick to grow, slow to shrink
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 30.0  # the window Ray Serve averages requests in flight over
    # Largest batch a replica forms from concurrent requests (Ray Serve's @serve.batch), within a TensorRT plan's
    # profile max; and how long a lone request waits for company.
    max_batch: int = DEFAULT_MAX_BATCH
    batch_wait_timeout_s: float = SERVE_MAX_QUEUE_DELAY_US / 1e6
    replica_cpus: float = 1.0  # what each replica asks Ray for; its CPU backend runs that many threads
    # GPUs per replica; None: 1 for a GPU backend (trt, ort-trt, ort-cuda), else 0. `auto` asks for none, and
    # Ray hides the GPUs from a replica that asked for none: give 1 for auto to pick a GPU backend.
    replica_gpus: float | None = None
    max_replicas_per_node: int | None = None  # None: Ray places replicas where resources are
    max_image_pixels: int = ImageLimits.max_image_pixels
    max_decode_mb: int = ImageLimits.max_decode_mb
    max_body_mb: int = 64  # the largest request body a replica reads; a larger one is refused unread (413)

    @property
    def threads(self) -> int | None:
        """The CPU backend's threads: the CPUs the replica asked Ray for (None: the backend's default)."""
        return max(1, int(self.replica_cpus)) if self.replica_cpus >= 1 else None

    @property
    def gpus(self) -> float:
        return gpus_for(self.backend, self.replica_gpus)

    def autoscaling_config(self) -> dict:
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "initial_replicas": self.min_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "look_back_period_s": self.look_back_period_s,
        }

    def max_ongoing_requests(self) -> int:
        """Requests a replica holds at once: enough to fill two batches (one running, one forming), and at least
        twice the autoscaling target, so that the autoscaler sees queues grow rather than the proxy refusing."""
        return max(2 * self.max_batch, math.ceil(2 * self.target_ongoing_requests), 4)


def _number(name: str, value, kind):
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            raise BitError(f"--{name.replace('_', '-')} {value!r}: not a {kind.__name__}") from None
    return value


def options_from_mapping(args: dict) -> RayServeOptions:
    """RayServeOptions from string arguments (`serve run ... key=value`, KubeRay's serveConfigV2 `args`): each field
    converted to its default's type; an unknown key is one line."""
    fields = {f.name: f for f in dataclasses.fields(RayServeOptions)}
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise BitError(f"unknown application argument(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    if "bundle" not in args:
        raise BitError("the application needs `bundle`: the bundle's path on every node")
    converted = {}
    optional_ints = ("max_replicas_per_node", "static_shapes")  # None by default: no default to take the type from
    for name, value in args.items():
        default = fields[name].default
        if name in (*optional_ints, "replica_gpus") and value in ("", None, "none", "None"):
            value = None
        elif name == "replica_gpus":
            value = _number(name, value, float)
        elif isinstance(default, bool):
            value = str(value).lower() in ("1", "true", "yes")
        elif isinstance(default, float):
            value = _number(name, value, float)
        elif isinstance(default, int) or name in optional_ints:
            value = _number(name, value, int)
        converted[name] = value
    return check(RayServeOptions(**converted))


def check(options: RayServeOptions) -> RayServeOptions:
    """Every number in range, before anything starts (a Ray cluster, a replica): one line naming the flag."""

    def flag(name):
        return "--" + {"gpus": "replica_gpus"}.get(name, name).replace("_", "-")

    for name in ("min_replicas", "max_batch", "max_image_pixels", "max_decode_mb", "max_body_mb"):
        value = getattr(options, name)
        if not isinstance(value, int) or value < (0 if name == "min_replicas" else 1):
            least = 0 if name == "min_replicas" else 1
            raise BitError(f"{flag(name)} must be an integer of at least {least}, got {value!r}")
    if options.static_shapes is not None and (not isinstance(options.static_shapes, int) or options.static_shapes < 0):
        raise BitError(f"--static-shapes must be an integer of at least 0, got {options.static_shapes!r}")
    if not isinstance(options.max_replicas, int) or options.max_replicas < max(1, options.min_replicas):
        raise BitError(
            f"--max-replicas must be at least 1 and at least --min-replicas ({options.min_replicas}), "
            f"got {options.max_replicas!r}"
        )
    for name in ("target_ongoing_requests", "look_back_period_s"):
        value = getattr(options, name)
        if not math.isfinite(value) or value <= 0:
            raise BitError(f"{flag(name)} must be a number above 0, got {value!r}")
    for name in ("upscale_delay_s", "downscale_delay_s", "batch_wait_timeout_s", "replica_cpus", "gpus"):
        value = getattr(options, name)
        if not math.isfinite(value) or value < 0:
            raise BitError(f"{flag(name)} must be a number of at least 0, got {value!r}")
    if options.max_replicas_per_node is not None and options.max_replicas_per_node < 1:
        raise BitError(f"--max-replicas-per-node must be at least 1, got {options.max_replicas_per_node}")
    if not 1 <= options.http_port <= 65535:
        raise BitError(f"--http-port {options.http_port}: not a port number (1-65535)")
    if options.proxy_location not in PROXY_LOCATIONS:
        raise BitError(f"--proxy-location {options.proxy_location!r}: choose one of {', '.join(PROXY_LOCATIONS)}")
    if options.expected_sha256 and (
        len(options.expected_sha256) != 64 or set(options.expected_sha256) - set("0123456789abcdef")
    ):
        raise BitError(f"--expected-sha256 {options.expected_sha256!r}: not a sha256 (64 lowercase hex digits)")
    return options
