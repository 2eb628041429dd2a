"""Writing an artifact bundle atomically: everything goes to a hidden staging directory beside the target,
the manifest is written last, and one rename publishes it. A failed, interrupted or disk-full export leaves
no directory that looks like a bundle.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile

from ..engine.atomic_write import missing_folders, remove_made_folders
from ..engine.bundle import FORMAT, FORMAT_VERSION, MANIFEST, file_record, give_mkdir_mode
from ..engine.errors import BitError

# ModelProto serialization is limited to 2 GiB; above this the weights go to an external data file.
EXTERNAL_DATA_THRESHOLD = 2_000_000_000 - (16 << 20)


def check_target(out: str) -> None:
    """Fail before any work if the bundle cannot be published at `out`."""
    if os.path.lexists(out):
        raise BitError(f"output {out!r} already exists; choose a new directory (bundles are never overwritten)")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.isdir(parent):  # missing parents are created at write time; probe the nearest existing one
        if os.path.lexists(parent):
            raise BitError(f"output parent {parent!r} exists and is not a directory")
        parent = os.path.dirname(parent)
    try:  # a real probe: permission bits say nothing to root, read-only mounts say nothing to os.access
        os.rmdir(tempfile.mkdtemp(prefix=".bit-trt-probe-", dir=parent))
    except OSError as exc:
        raise BitError(f"output directory {parent!r} is not writable ({exc.strerror})") from None


class BundleWriter:
    def __init__(self, out: str):
        check_target(out)
        self.out = os.path.abspath(out)
        parent = os.path.dirname(self.out)
        self.created_parents = missing_folders(parent)
        try:
            os.makedirs(parent, exist_ok=True)
            self.staging = tempfile.mkdtemp(prefix=f".{os.path.basename(self.out)}.partial-", dir=parent)
        except OSError as exc:
            self._remove_created_parents()
            raise BitError(f"cannot write in {parent!r}: {exc.strerror}") from None
        self.files: dict[str, dict] = {}

    def __enter__(self):
        return self

    def _remove_created_parents(self):
        remove_made_folders(self.created_parents)  # only the ones this writer made, only if empty

    def __exit__(self, exc_type, exc, tb):
        if os.path.isdir(self.staging):
            shutil.rmtree(self.staging, ignore_errors=True)
        if exc_type is not None:
            self._remove_created_parents()
        # EFBIG: a file-size limit (ulimit -f) hit mid-write is the same failure to the user.
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise BitError(f"disk full while writing the bundle to {self.out!r}; nothing was published") from None
        return False

    def path(self, name: str) -> str:
        return os.path.join(self.staging, name)

    def record(self, name: str) -> dict:
        info = file_record(self.staging, name)
        self.files[name] = info
        return info

    def write_json(self, name: str, data) -> dict:
        with open(self.path(name), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        return self.record(name)

    def write_onnx(self, name: str, model, external_above: int = EXTERNAL_DATA_THRESHOLD) -> dict:
        """Save an ONNX model; above `external_above` bytes (2 GB: protobuf's limit) its weights go to
        `<name>.data` beside it."""
        import onnx

        from .graph_cleanup import model_bytes, save_streamed

        if model_bytes(model) > external_above:
            data_name = f"{name}.data"
            # Note: this moves the weights out of `model` into the file; the caller drops the model after.
            onnx.save_model(
                model,
                self.path(name),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
            onnx.checker.check_model(self.path(name))  # by path: the in-memory check stops at 2 GB
            info = self.record(name)
            info["data_files"] = [self.record(data_name)]
            return info
        save_streamed(model, self.path(name))  # no serialized copy of the weights beside the model
        return self.record(name)

    def publish(self, manifest: dict) -> dict:
        """Write the manifest last, sync, and rename the staging directory into place; return the manifest
        as written."""
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
        self.write_json(MANIFEST, manifest)
        for name in os.listdir(self.staging):
            with open(self.path(name), "rb") as f:
                os.fsync(f.fileno())
        if os.path.lexists(self.out):
            raise BitError(f"output {self.out!r} appeared while exporting; not overwriting it")
        give_mkdir_mode(self.staging)
        os.rename(self.staging, self.out)
        with open(os.path.join(self.out, MANIFEST), encoding="utf-8") as f:
            return json.load(f)  # what a reader of the bundle gets, not the dict it was made from
