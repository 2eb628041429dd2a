"""What the OpenVINO study tools share (tools/openvino_batch_split.py, tools/openvino_group_norm.py): a bundle file
compiled for one static shape on latency settings, and the result record each writes."""

from __future__ import annotations

import json
import os
import sys
import time

from bit_trt.bench.bit_bench import host
from bit_trt.engine.bundle import Bundle
from bit_trt.engine.openvino_runner import import_openvino

ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def compiled(core, path: str, shape: list[int], precision: str, threads: int, edit=None, profile: bool = False):
    """The file at `path` compiled for `shape` (LATENCY hint, `threads`, INFERENCE_PRECISION_HINT `precision`);
    `edit`, if given, changes the read ov.Model first; `profile` turns OpenVINO's performance counters on."""
    model = core.read_model(path)
    if edit is not None:
        edit(model)
    model.reshape(shape)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision}
    if profile:
        config["PERF_COUNT"] = True
    return core.compile_model(model, "CPU", config)


def write_result(tool: str, argv, bundle_path: str, bundle: Bundle, rows: list, json_path: str | None) -> dict:
    """The record of one run of `tool` (its command, time, bundle, host, OpenVINO version, rows), written to
    `json_path` if one is given."""
    # oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI, say) makes this host run as one without AMX or bf16
    # would: the record says so, since the host's flags do not
    env = {name: os.environ[name] for name in ISA_CAPS if os.environ.get(name)}
    result = {
        "command": "".join(f"{k}={v} " for k, v in env.items())
        + f"python -m tools.{tool} "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": bundle_path,
        "variant": bundle.manifest["model"]["variant"],
        "host": host(),
        "openvino": import_openvino().__version__,
        **({"isa_cap": env} if env else {}),
        "rows": rows,
    }
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    return result
