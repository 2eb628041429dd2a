"""Where weights come from: a TF Hub SavedModel (directory or handle), an official `.npz`, or `synthetic`.

Each source yields the same thing (`LoadedModel`): weights in the official checkpoint layout, the variant
they fit, and a TF reference callable with the one input contract (float32 NHWC in [0,1] -> logits).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..engine.errors import BitError
from ..engine.user_cache import cache_dir, keep_to_self, make_root, own_tree
from . import checkpoint
from .synthetic import synthetic_weights
from .tensorflow_import import import_tensorflow
from .variants import DEFAULT_CLASSES, VARIANTS, Variant, get_variant

HUB_URL = os.environ.get("BIT_TRT_HUB_URL", "https://tfhub.dev")
OTHER_SOURCES = (
    "--model synthetic (seeded weights, offline), --model PATH/TO/SAVEDMODEL_DIR "
    "(a TF Hub module downloaded elsewhere), or --model PATH/TO/BiT-S-R50x3.npz"
)


@dataclass
class LoadedModel:
    weights: OrderedDict[str, np.ndarray]
    variant: Variant
    num_classes: int
    source: dict  # the manifest's record of where the weights came from
    reference: Callable = field(repr=False)  # TF: float32 NHWC [0,1] -> logits

    @property
    def trained(self) -> bool:
        return bool(self.source.get("trained"))

    def take_reference(self) -> Callable:
        """The TF reference, built now, with this model's numpy weights handed to TF one array at a time (the
        TF reference child holds one copy of the weights, not two); `weights` is None afterwards."""
        build = getattr(self.reference, "build", None)
        if build is not None:
            build(consume=True)
        self.weights = None
        return self.reference

    def weights_sha256(self) -> str:
        h = hashlib.sha256()
        for key, arr in self.weights.items():
            h.update(key.encode())
            h.update(np.ascontiguousarray(arr, np.float32).tobytes())
        return h.hexdigest()


def resolve(model: str) -> tuple[str, str | None]:
    """`--model` -> (something `load` reads without the network, the TF Hub handle it came from or None).

    Handles are downloaded (once, into the cache) here, so that every later step works on local files.
    """
    if model == "synthetic" or os.path.exists(model):
        return model, None
    if _looks_like_handle(model):
        return download_hub_module(model), model
    raise BitError(f"--model {model!r}: no such file or directory, and not a TF Hub handle. Use {OTHER_SOURCES}")


def load(
    model: str, variant: str | None = None, num_classes: int = DEFAULT_CLASSES, seed: int = 0, handle: str | None = None
) -> LoadedModel:
    """Read `--model`: 'synthetic', a SavedModel directory, an .npz file, or a TF Hub handle/URL."""
    if handle is None:
        model, handle = resolve(model)
    if model == "synthetic":
        v = get_variant(variant or "r50x3")
        weights = synthetic_weights(v, num_classes, seed)
        return _with_tf_reference(
            weights,
            v,
            num_classes,
            {
                "kind": "synthetic",
                "seed": seed,
                "trained": False,
                "description": f"SYNTHETIC seeded random weights (seed {seed}); "
                "NOT trained: predictions are meaningless",
            },
        )
    if os.path.isdir(model):
        return load_savedmodel(model, variant, handle=handle)
    if model.endswith(".npz"):
        return load_npz(model, variant)
    raise BitError(f"{model!r} is a file but not an .npz checkpoint; a SavedModel is a directory")


def infer_variant(weights, requested: str | None, source: str) -> Variant:
    """The table row whose depth and width match these weights; a mismatch with `requested` is an error."""
    stem_key = "resnet/root_block/standardized_conv2d/kernel"
    if stem_key not in weights:
        raise BitError(f"{source}: missing key {stem_key!r}: not a BiT checkpoint")
    width = weights[stem_key].shape[-1] / 64
    units = tuple(
        len({m.group(1) for k in weights for m in [re.match(rf"resnet/block{b}/unit(\d+)/", k)] if m})
        for b in range(1, 5)
    )
    matches = [v for v in VARIANTS.values() if v.units == units and v.width == width]
    if not matches:
        raise BitError(f"{source}: units per block {units} and width {width:g} match no variant in the table")
    found = matches[0]
    if requested and get_variant(requested).name != found.name:
        raise BitError(f"{source}: holds a {found.name} model, but --variant {requested} was requested")
    return found


def load_npz(path: str, variant: str | None = None) -> LoadedModel:
    raw = checkpoint.read_npz(path)
    v = infer_variant(raw, variant, path)
    weights, num_classes = checkpoint.in_network_order(raw, v, path)
    return _with_tf_reference(
        weights,
        v,
        num_classes,
        {
            "kind": "npz",
            "path": os.path.abspath(path),
            "trained": True,
            "description": f"official BiT checkpoint {os.path.basename(path)}",
        },
    )


def _with_tf_reference(weights, v: Variant, num_classes: int, source: dict) -> LoadedModel:
    module = None

    def build(consume: bool = False):
        nonlocal module
        if module is None:
            # TF is imported here, not before: weights that need no TF to be read leave the exporter without it
            from .bit_tf import BiTModule

            module = BiTModule(weights, v, consume=consume)

    def reference(images):
        build()  # on first use: only parity needs TF to hold a second copy of the weights
        return module(images).numpy()

    reference.build = build  # LoadedModel.take_reference
    return LoadedModel(weights, v, num_classes, source, reference)


def _savedmodel_key(var_name: str) -> str:
    """A SavedModel variable name (`resnet/block1/unit01/a/group_norm/gamma:0`, maybe under a module scope) -> key."""
    name = var_name.split(":")[0]
    if "resnet/" in name:
        name = name[name.index("resnet/") :]
    return name


def _savedmodel_variables(loaded) -> list:
    """TF Hub modules list their variables in `.variables`; other modules only through their functions."""
    listed = getattr(loaded, "variables", None)
    if listed:
        return list(listed)
    seen, found = set(), []
    functions = [loaded.__call__] if callable(loaded) else []
    functions += list(getattr(loaded, "signatures", {}).values())
    for fn in functions:
        for concrete in getattr(fn, "concrete_functions", [fn]):
            for var in concrete.variables:
                if id(var) not in seen:
                    seen.add(id(var))
                    found.append(var)
    return found


def load_savedmodel(path: str, variant: str | None = None, handle: str | None = None) -> LoadedModel:
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise BitError(f"{path!r} is not a SavedModel directory (no saved_model.pb)")
    tf = import_tensorflow()

    try:
        loaded = tf.saved_model.load(path)
    except Exception as exc:
        raise BitError(
            f"{path!r} is not a loadable SavedModel ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from exc
    weights = OrderedDict()
    for var in _savedmodel_variables(loaded):
        key = _savedmodel_key(var.name)
        if key in weights:
            raise BitError(f"{path!r}: two variables map to checkpoint key {key!r}")
        weights[key] = var.numpy()
    v = infer_variant(weights, variant, path)
    weights, num_classes = checkpoint.in_network_order(weights, v, path)
    call = loaded if callable(loaded) else loaded.signatures.get("serving_default")
    if call is None:
        raise BitError(f"{path!r}: SavedModel is neither callable nor has a serving_default signature")

    def reference(images):
        out = call(tf.constant(images))
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return np.asarray(out)

    source = {
        "kind": "savedmodel",
        "path": os.path.abspath(path),
        "trained": True,
        "description": f"TF SavedModel {handle or os.path.abspath(path)}",
    }
    if handle:
        source["handle"] = handle
    return LoadedModel(weights, v, num_classes, source, reference)


def _looks_like_handle(model: str) -> bool:
    # TF Hub handles are publisher/model/.../version, the last part a number.
    return model.startswith(("http://", "https://")) or bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)+/\d+", model))


def download_hub_module(handle: str, timeout: float = 30.0) -> str:
    """Download a TF Hub module once (compressed format) into the cache; return its directory."""
    url = handle if handle.startswith(("http://", "https://")) else f"{HUB_URL.rstrip('/')}/{handle}"
    target = os.path.join(cache_dir(), "hub", hashlib.sha1(url.encode()).hexdigest())
    # A SavedModel is a graph TensorFlow executes: a kept one is loaded only if this user alone may have written it
    # (engine/user_cache.py), else it is downloaded again over it.
    if os.path.isfile(os.path.join(target, "saved_model.pb")) and own_tree(target):
        return target
    make_root()
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    query = "&" if "?" in url else "?"
    staging = tempfile.mkdtemp(prefix=".download-", dir=os.path.dirname(target))
    try:
        archive = os.path.join(staging, "module.tar.gz")
        try:
            with (
                urllib.request.urlopen(f"{url}{query}tf-hub-format=compressed", timeout=timeout) as resp,
                open(archive, "wb") as out,
            ):
                shutil.copyfileobj(resp, out, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BitError(
                f"cannot download TF Hub module {handle!r} ({reason}). Offline? Use {OTHER_SOURCES}"
            ) from exc
        extracted = os.path.join(staging, "module")
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(extracted, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BitError(f"TF Hub module {handle!r}: downloaded archive is corrupt ({exc})") from exc
        if not os.path.isfile(os.path.join(extracted, "saved_model.pb")):
            raise BitError(f"TF Hub module {handle!r}: archive holds no saved_model.pb")
        keep_to_self(extracted)  # a umask of 002 would leave folders group-writable: then never reused
        shutil.rmtree(target, ignore_errors=True)  # a stale, incomplete or untrusted entry
        try:
            os.replace(extracted, target)  # atomic: a half-extracted module is never in the cache
        except OSError as exc:
            raise BitError(f"cannot keep TF Hub module {handle!r} in {target}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
