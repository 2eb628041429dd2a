"""bit_trt.engine: read a bundle and run it.

    from bit_trt.engine import Classifier, BitError
    with Classifier("out/r50x3", backend="auto") as clf:
        print(clf.predict("cat.jpg").top(5)[0])

The public surface is `__all__`. Names load on first use (PEP 562), so `import bit_trt.engine` stays light:
no backend library, no OpenCV, until a Classifier is made.
"""

from __future__ import annotations

import importlib

__all__ = ["BitError", "Bundle", "Classifier", "Prediction", "load_bundle", "BACKENDS", "BACKEND_CHOICES", "PRECISIONS"]

_WHERE = {
    "BitError": "errors",
    "Bundle": "bundle",
    "load_bundle": "bundle",
    "Classifier": "classifier",
    "Prediction": "classifier",
    "BACKENDS": "backends",  # the backend names
    "BACKEND_CHOICES": "backends",  # what Classifier(backend=...) accepts: auto, or a backend name
    "PRECISIONS": "precision",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
