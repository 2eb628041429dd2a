"""Writing a file so that no reader ever sees half of it: write beside the target, then rename over it.

One helper for every file bit-trt publishes (manifests, reports, plots, caches, PTX): a crash, a full disk or
an interrupted run leaves the old file (or none), never a truncated one, and no temporary file behind.
Standard library only: servers import it with the engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import BitError


def _temporary_name(path: str) -> str:
    """A hidden name beside `path`, unique per process and call, that keeps `path`'s extension: libraries that
    pick a format by extension (cv2.imwrite, savefig) or append one (np.save) write what the target needs."""
    directory, base = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(base)
    return os.path.join(directory, f".{stem}.{os.getpid()}-{os.urandom(4).hex()}.tmp{ext}")


@contextmanager
def atomic_path(path: str, what: str = "file") -> Iterator[str]:
    """Yield a temporary path beside `path` for the caller to write (any library's `save(tmp)`); on success it
    replaces `path` in one rename, on any error it is removed and `path` is left as it was. An OSError (here
    or in the caller's writing) becomes a one-line BitError. The file gets the mode open() would give it."""
    tmp = _temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise BitError(f"cannot write {what} {path}: {exc.strerror or exc}") from exc
    finally:
        if os.path.lexists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass  # the error that got us here is the one to report


def write_atomic(path: str, data: str | bytes | bytearray | memoryview, what: str = "file") -> str:
    """`data` (text as UTF-8, with no newline translation; or any bytes-like) to `path`, all or nothing.
    Returns `path`."""
    with atomic_path(path, what) as tmp:
        if isinstance(data, str):
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(data)
        else:
            with open(tmp, "wb") as f:
                f.write(data)
    return path


def write_json_atomic(path: str, obj, what: str = "file", indent: int | None = 1) -> str:
    """`obj` as JSON (with a final newline) to `path`, all or nothing."""
    return write_atomic(path, json.dumps(obj, indent=indent) + "\n", what)


def missing_folders(path: str) -> list[str]:
    """The folders os.makedirs(path) would create, deepest first: what a writer that fails takes away again
    (remove_made_folders), so that a failure leaves no empty folders behind."""
    missing, probe = [], os.path.abspath(path)
    while not os.path.isdir(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    return missing


def remove_made_folders(folders: list[str]) -> None:
    """Remove `folders` (missing_folders' list, deepest first) while each is empty; one that is not stays."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            break
