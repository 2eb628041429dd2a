"""The Ray Serve application: each replica holds one Classifier, checked against the bundle's identity on its own
node before it takes traffic; concurrent requests are batched by Ray Serve up to the plan's max batch.

    serve run bit_trt.scale.serve_app:app_builder bundle=/models/bundle     # or `bit-serve BUNDLE --ray ADDRESS`

HTTP (Ray Serve's proxy, port 8000 by default; route prefix /):
    POST /v1/classify   body: one encoded image (JPEG, PNG, ...) -> JSON {"classes": ["probability:index:label",
                        ...], "replica": ...}; ?logits=1 adds "logits". A bad image: 400 {"error": "<one line>"}.
    POST /v1/infer      body: a .npy float32 array [N, R, R, 3] (or [R, R, 3]) in [0, 1] -> a .npy float32 array
                        [N, classes] of logits; an image outside [0, 1] or not finite gets NaN logits (as bit-serve's
                        float model), a malformed array is 400.
    GET  /v1/ready      200 {"ready": true, "bundle_sha256": ..., "backend": ..., "node_id": ...} from a replica
                        that is serving; Ray Serve's own /-/healthz says whether the proxy is up.

Errors stay per request: each request's image is decoded on its own, and a batch only ever holds images that
decoded. A body above max_body_mb is refused unread (413).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine.bundle import manifest_sha256
from ..engine.compare import softmax
from ..engine.errors import BitError
from ..engine.preprocess import preprocess
from ..serve.classifier_models import ClassifierModels
from .serve_options import APP_NAME, RayServeOptions, check, options_from_mapping
from .verified_classifier import open_verified

NPY = "application/x-npy"
DEPLOYMENT = "BitClassifier"


class RequestTooLarge(BitError):
    pass


@serve.deployment(name=DEPLOYMENT)
class BitClassifier:
    def __init__(self, options: RayServeOptions):
        import ray

        self.options = options
        self.clf = open_verified(
            options.bundle,
            options.expected_sha256,
            options.backend,
            options.precision,
            options.threads,
            options.max_image_pixels,
            options.max_decode_mb,
            options.static_shapes,
        )
        self.models = ClassifierModels(self.clf)
        self.sha256 = manifest_sha256(options.bundle)
        self.node_id = ray.get_runtime_context().get_node_id()
        profile_max = self.clf.max_batch
        self.infer_batched.set_max_batch_size(min(options.max_batch, profile_max or options.max_batch))
        self.infer_batched.set_batch_wait_timeout_s(options.batch_wait_timeout_s)
        self.ready = {
            "ready": True,
            "bundle_sha256": self.sha256,
            "backend": self.clf.backend,
            "compute": self.clf.compute,
            "node_id": self.node_id,
        }

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.001)
    async def infer_batched(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Images of concurrent requests, one native call: NaN logits for an image outside the input contract."""
        return list(await asyncio.to_thread(self.models.checked_logits, np.stack(images)))

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        try:
            if path == "/v1/ready" and request.method == "GET":
                return JSONResponse(self.ready)
            if path == "/v1/classify" and request.method == "POST":
                return await self._classify(request)
            if path == "/v1/infer" and request.method == "POST":
                return await self._infer(request)
        except RequestTooLarge as exc:
            return JSONResponse({"error": str(exc)}, status_code=413)
        except BitError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"error": f"no endpoint {request.method} {path}; see /v1/ready"}, status_code=404)

    async def _body(self, request: Request) -> bytes:
        """The request's body, refused as soon as it passes max_body_mb: never buffered whole beyond the cap."""
        limit = self.options.max_body_mb << 20
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(f"request body of {declared} bytes is above the {self.options.max_body_mb} MB cap")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"request body is above the {self.options.max_body_mb} MB cap")
            chunks.append(chunk)
        if not size:
            raise BitError("empty request body")
        return b"".join(chunks)

    async def _classify(self, request: Request) -> Response:
        body = await self._body(request)
        spec = self.clf.spec
        batch = await asyncio.to_thread(preprocess, [body], spec, self.clf.max_image_pixels, ["the request's image"])
        logits = await self.infer_batched(batch[0])
        probabilities = softmax(logits[None])
        answer = {"classes": [c.decode() for c in self.models.classes(probabilities)[0]], "replica": self.node_id}
        if request.query_params.get("logits") in ("1", "true"):
            answer["logits"] = logits.tolist()
        return JSONResponse(answer)

    async def _infer(self, request: Request) -> Response:
        body = await self._body(request)
        r = self.clf.spec.resolution
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise BitError(f"body is not a .npy array ({str(exc).splitlines()[0]})") from None
        if array.ndim == 3:
            array = array[None]
        if array.dtype != np.float32 or array.ndim != 4 or array.shape[1:] != (r, r, 3) or not len(array):
            raise BitError(f"expected float32 [N, {r}, {r}, 3] (N >= 1), got {array.dtype} {list(array.shape)}")
        rows = await asyncio.gather(*(self.infer_batched(image) for image in array))
        out = io.BytesIO()
        np.save(out, np.stack(rows).astype(np.float32), allow_pickle=False)
        return Response(out.getvalue(), media_type=NPY)


def application(options: RayServeOptions):
    """The bound application for `options` (checked): one deployment, autoscaled, each replica asking Ray for its
    CPUs and GPUs."""
    options = check(options)
    if not options.expected_sha256:  # the bundle as the deploying side sees it is the one every replica must see
        options = dataclasses.replace(options, expected_sha256=manifest_sha256(options.bundle))
    deployment = BitClassifier.options(
        autoscaling_config=options.autoscaling_config(),
        max_ongoing_requests=options.max_ongoing_requests(),
        ray_actor_options={"num_cpus": options.replica_cpus, "num_gpus": options.gpus},
        max_replicas_per_node=options.max_replicas_per_node,
    )
    return deployment.bind(options)


def app_builder(args: dict):
    """`serve run bit_trt.scale.serve_app:app_builder bundle=... key=value ...` and KubeRay's serveConfigV2: the
    string arguments of RayServeOptions's fields."""
    return application(options_from_mapping(args))


def describe_ready(url: str, options: RayServeOptions) -> str:
    return (
        f"bit-serve --ray: ready: application {APP_NAME!r}, {options.min_replicas}-{options.max_replicas} replica(s); "
        f"POST {url}/v1/classify (an encoded image), POST {url}/v1/infer (.npy float32 NHWC), GET {url}/v1/ready"
    )
