"""Triton Python-backend model: encoded image bytes -> the classifier's float32 NHWC input.

bit-triton copies this file into `<repository>/<name>_preprocess/1/model.py`. It runs inside Triton's Python
backend, so it imports bit-trt's engine by its installed name (the Triton image needs `pip install bit-trt`,
which brings numpy and OpenCV) and takes the manifest's preprocessing contract from its config's
`input_spec` parameter: the same code and the same contract as every other backend. Its `max_image_pixels` and
`max_decode_mb` parameters are the engine's image limits: an image declaring more pixels is refused from its header,
and each instance (a process of its own) decodes within that much memory.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from bit_trt.engine.errors import BitError
from bit_trt.engine.preprocess import InputSpec, preprocess, set_decode_budget


def _images(request) -> list[bytes]:
    """The request's encoded images, each as bytes: never str, which preprocess() would read as a file path."""
    tensor = pb_utils.get_input_tensor_by_name(request, "image")
    items = tensor.as_numpy().reshape(-1)
    return [item if isinstance(item, bytes) else bytes(item) for item in items]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config["parameters"]
        self.spec = InputSpec.from_manifest(json.loads(parameters["input_spec"]["string_value"]))
        self.max_pixels = int(parameters["max_image_pixels"]["string_value"])
        set_decode_budget(int(parameters["max_decode_mb"]["string_value"]) << 20)
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        # One response per request, errors included: a corrupt image fails its own request, not the others
        # the dynamic batcher put into this call.
        responses = []
        for request in requests:
            try:
                batch = preprocess(_images(request), self.spec, self.max_pixels)
                out = pb_utils.Tensor(self.output_name, np.ascontiguousarray(batch, dtype=np.float32))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except Exception as exc:  # noqa: BLE001 - whatever it is, it must stay this request's error
                message = str(exc) if isinstance(exc, BitError) else f"{type(exc).__name__}: {exc}"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)))
        return responses
