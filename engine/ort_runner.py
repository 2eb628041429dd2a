"""ONNX Runtime on the CPU: session options tuned for a server (threads, full graph optimization)."""
from __future__ import annotations

import os

import numpy as np

from .errors import BitError, missing_dependency
from .runner import Runner


class OrtRunner(Runner):
    name = "ort-cpu"

    def __init__(self, model, threads: int | None = None, optimization: str = "all", low_memory: bool = False):
        """`model`: a path to an .onnx file (external data beside it) or serialized ModelProto bytes.

        low_memory: no weight pre-packing, no memory arena, no graph optimization. For one-off checks of
        large models (export verification), where a second packed or folded copy of the weights costs more
        than it saves, and where the graph itself, not ORT's rewrite of it, is under test.
        """
        super().__init__()
        self.model = model
        self.threads = threads
        self.optimization = "none" if low_memory else optimization
        self.low_memory = low_memory
        self.session = None

    def _activate(self):
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_dependency("onnxruntime", "cpu") from None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[self.optimization]
        opts.intra_op_num_threads = self.threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if self.low_memory:
            opts.enable_cpu_mem_arena = False
            opts.add_session_config_entry("session.disable_prepacking", "1")
        try:
            self.session = ort.InferenceSession(self.model, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for a bad or truncated file
            where = self.model if isinstance(self.model, (str, os.PathLike)) else "in-memory model"
            raise BitError(f"ONNX Runtime cannot load {where}: {str(exc).splitlines()[0][:300]}") from None
        self.input_name = self.session.get_inputs()[0].name

    def _deactivate(self):
        self.session = None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]
