"""What goes into each Triton model of a repository: the config.pbtxt content, as dicts for serve/pbtxt.py.

One function per kind of model:
- classifier(): TensorRT plan (`tensorrt_plan`), ONNX Runtime (`onnxruntime_onnx`) or OpenVINO (`openvino`),
  float32 NHWC input without the batch dimension, logits output with the bundle's labels;
- preprocess(): the Python-backend model that turns encoded image bytes into that float input with the
  engine's own preprocessing (serve/triton_python/model.py, which reads these configs' parameters);
- ensemble(): preprocess -> classifier, so a client sends image bytes and gets logits (and, through Triton's
  classification extension, label names).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..engine.preprocess import DEFAULT_DECODE_BUDGET, DEFAULT_MAX_IMAGE_PIXELS
from .pbtxt import Enum, Map

# Triton's name for each backend -> the engine backend whose artifact flavour it loads (engine/precision.py).
ENGINE_BACKEND = {"tensorrt": "trt", "onnxruntime": "ort-cpu", "openvino": "openvino"}
TRITON_BACKENDS = tuple(ENGINE_BACKEND)  # Triton's backend names: not the engine's (engine/backends.py BACKENDS)
IMAGE_INPUT = "image"  # the input of every model that takes encoded image bytes (ensembles, bit-serve's, preprocessing)
IMAGE_SUFFIX = "_image"  # <classifier>_image: the same classifier, fed encoded images
LABELS_FILE = "labels.txt"
WARMUP_IMAGE = "image.bin"  # under the preprocessing model's warmup/ folder


def default_model_name(manifest: dict) -> str:
    """bit_<variant>, e.g. bit_r50x3: bit-triton's prefix and bit-serve's model name."""
    return "bit_" + re.sub(r"[^A-Za-z0-9._-]+", "_", str(manifest["model"].get("variant", "model")))


@dataclass(frozen=True)
class Batching:
    """Triton scheduling for one model: the largest batch, the sizes the batcher aims for, how long it waits."""

    max_batch: int
    preferred: tuple[int, ...]
    max_queue_delay_us: int
    instances: int


@dataclass(frozen=True)
class ImageLimits:
    """What a model that decodes clients' images admits (engine/preprocess.py): bit-serve's image model, and
    bit-triton's preprocessing model, as config parameters its model.py reads. The defaults are the engine's."""

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_decode_mb: int = DEFAULT_DECODE_BUDGET >> 20

    def parameters(self) -> dict:
        return {
            "max_image_pixels": {"string_value": str(self.max_image_pixels)},
            "max_decode_mb": {"string_value": str(self.max_decode_mb)},
        }


def _dynamic_batching(batching: Batching) -> dict:
    return {
        "preferred_batch_size": [b for b in batching.preferred if b <= batching.max_batch] or None,
        "max_queue_delay_microseconds": batching.max_queue_delay_us,
    }


def _float_input(name: str, resolution: int) -> dict:
    return {
        "name": name,
        "data_type": Enum("TYPE_FP32"),
        "format": Enum("FORMAT_NHWC"),
        "dims": [resolution, resolution, 3],
    }


def _logits_output(name: str, num_classes: int) -> dict:
    return {"name": name, "data_type": Enum("TYPE_FP32"), "dims": [num_classes], "label_filename": LABELS_FILE}


def _zeros_warmup(input_name: str, resolution: int, batch_sizes: list[int]) -> list[dict]:
    """Warm-up requests Triton runs before the model reports ready: the first real request does not pay for
    lazy initialisation (TensorRT's context, ORT's arena, OpenVINO's compilation for a new batch size)."""
    return [
        {
            "name": f"zeros_batch_{b}",
            "batch_size": b,
            "inputs": Map(
                {input_name: {"data_type": Enum("TYPE_FP32"), "dims": [resolution, resolution, 3], "zero_data": True}}
            ),
        }
        for b in sorted(set(batch_sizes))
    ]


def classifier(
    name: str,
    backend: str,
    input_name: str,
    output_name: str,
    resolution: int,
    num_classes: int,
    batching: Batching,
    model_files: dict[str, str],
    device: str = "cpu",
    openvino_hint: str = "LATENCY",
) -> dict:
    """config.pbtxt of a classifier. model_files: for tensorrt, compute capability ("9.0") -> plan file name;
    otherwise {"": "model.onnx"} (OpenVINO: "model.xml")."""
    config: dict = {"name": name}
    if backend == "tensorrt":
        files = sorted(model_files.items())
        config |= {
            "platform": "tensorrt_plan",
            "default_model_filename": files[0][1],
            # Triton picks the plan built for the GPU it loads the model on.
            "cc_model_filenames": Map(dict(files)),
        }
        kind = "KIND_GPU"
    elif backend == "onnxruntime":
        config |= {"platform": "onnxruntime_onnx", "default_model_filename": model_files[""]}
        kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    elif backend == "openvino":
        config |= {"backend": "openvino", "default_model_filename": model_files[""]}
        kind = "KIND_CPU"
    else:
        raise ValueError(f"unknown Triton backend {backend!r}")
    config |= {
        "max_batch_size": batching.max_batch,
        "input": [_float_input(input_name, resolution)],
        "output": [_logits_output(output_name, num_classes)],
        "instance_group": [{"kind": Enum(kind), "count": batching.instances}],
        "dynamic_batching": _dynamic_batching(batching),
        "model_warmup": _zeros_warmup(input_name, resolution, [1, batching.max_batch]),
    }
    if backend == "openvino":
        config["parameters"] = Map({"PERFORMANCE_HINT": {"string_value": openvino_hint}})
    return config


def preprocess(name: str, output_name: str, input_spec: dict, batching: Batching, limits: ImageLimits) -> dict:
    """config.pbtxt of the preprocessing model. It answers each request on its own (a bad image fails only
    its request), so dynamic batching is safe here; its instances decode in parallel processes, each refusing
    images over limits.max_image_pixels from their header and decoding within limits.max_decode_mb."""
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": batching.max_batch,
        "input": [{"name": IMAGE_INPUT, "data_type": Enum("TYPE_STRING"), "dims": [1]}],
        "output": [{"name": output_name, "data_type": Enum("TYPE_FP32"), "dims": [input_spec["resolution"]] * 2 + [3]}],
        "instance_group": [{"kind": Enum("KIND_CPU"), "count": batching.instances}],
        "dynamic_batching": _dynamic_batching(batching),
        # The manifest's preprocessing contract travels in the config, so model.py needs no bundle.
        "parameters": Map(
            {"input_spec": {"string_value": json.dumps(input_spec, sort_keys=True)}} | limits.parameters()
        ),
        "model_warmup": [
            {
                "name": "png",
                "batch_size": 1,
                "inputs": Map(
                    {IMAGE_INPUT: {"data_type": Enum("TYPE_STRING"), "dims": [1], "input_data_file": WARMUP_IMAGE}}
                ),
            }
        ],
    }


def ensemble(
    name: str,
    preprocess_name: str,
    classifier_name: str,
    input_name: str,
    output_name: str,
    num_classes: int,
    max_batch: int,
) -> dict:
    """config.pbtxt of image bytes -> preprocess -> classifier -> logits (labels attached)."""
    return {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": max_batch,
        "input": [{"name": IMAGE_INPUT, "data_type": Enum("TYPE_STRING"), "dims": [1]}],
        "output": [_logits_output(output_name, num_classes)],
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": preprocess_name,
                    "model_version": -1,
                    "input_map": Map({IMAGE_INPUT: IMAGE_INPUT}),
                    "output_map": Map({input_name: "preprocessed"}),
                },
                {
                    "model_name": classifier_name,
                    "model_version": -1,
                    "input_map": Map({input_name: "preprocessed"}),
                    "output_map": Map({output_name: output_name}),
                },
            ]
        },
    }
