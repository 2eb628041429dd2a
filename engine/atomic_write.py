"""Writing a file so that no reader ever sees half of it: write beside the target, then rename over it.

One helper for every file bit-trt publishes (manifests, reports, plots, caches, PTX): a crash, a full disk or
an interrupted run leaves the old file (or none), never a truncated one, and no temporary file behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import BitError


@contextmanager
def atomic_path(path: str, what: str = "file") -> Iterator[str]:
    """Yield a temporary path beside `path` for the caller to write (any library's `save(tmp)`); on success it
    replaces `path` in one rename, on any error it is removed. The file gets the mode open() would give it."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise BitError(f"cannot write {what} {path}: {exc.strerror or exc}") from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_atomic(path: str, data: str | bytes, what: str = "file") -> str:
    """`data` (text as UTF-8, with no newline translation) to `path`, all or nothing. Returns `path`."""
    with atomic_path(path, what) as tmp, open(tmp, "wb" if isinstance(data, bytes) else "w", newline="") as f:
        f.write(data)
    return path


def write_json_atomic(path: str, obj, what: str = "file", indent: int | None = 1) -> str:
    """`obj` as JSON (with a final newline) to `path`, all or nothing."""
    return write_atomic(path, json.dumps(obj, indent=indent) + "\n", what)
