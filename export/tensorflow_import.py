"""Importing TensorFlow quietly: its C++ start-up chatter (oneDNN, CPU feature notes) would bury the CLI's
progress lines. A missing TensorFlow is a BitError naming the extra that installs it."""

from __future__ import annotations

import logging
import os
import sys

from ..engine.errors import require


def import_tensorflow():
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    try:
        sys.stderr.flush()
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)  # absl logs before TF_CPP_MIN_LOG_LEVEL takes effect
            tf = require("tensorflow")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    for name in ("tensorflow", "tf2onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return tf
