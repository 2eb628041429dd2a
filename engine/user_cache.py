"""Where bit-trt keeps per-user caches: TF Hub downloads, calibration ranges, compiled kernels, ORT-TRT engines.

One root for all of them, `$BIT_TRT_CACHE` or `~/.cache/bit-trt`, so one variable moves (or isolates) them all.

What is read back from a cache is taken only if this user alone may have written it: owned by this user, writable
by no one else, and no link. A cache is only a saving, and in one another local user can write to (a shared
`$BIT_TRT_CACHE`), a kept gate verdict could pass a model that fails, a kept kernel is code the GPU runs, and a kept
SavedModel is a graph TensorFlow executes. Anything else is made again. engine/cpp/src/compute_gate.cpp applies the
same rule.
"""

from __future__ import annotations

import os
import stat

from .atomic_write import atomic_path


def cache_dir(*parts: str) -> str:
    root = os.environ.get("BIT_TRT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "bit-trt"))
    return os.path.join(root, *parts)


def _own(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read_own(path: str, limit: int = 1 << 30) -> bytes | None:
    """The bytes of the kept file `path` if this user alone may have written it (and it is at most `limit`
    bytes); None where it is missing, unreadable, a link, another user's or writable by others."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # checked by fstat: no race with a swap
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _own(st) or st.st_size > limit:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def own_tree(path: str) -> bool:
    """Whether the kept folder `path` and everything under it is this user's alone: no link anywhere, every entry
    owned by this user and writable by no one else."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or not _own(st):
            return False
        for top, dirs, files in os.walk(path):
            for name in dirs + files:
                entry = os.lstat(os.path.join(top, name))
                if stat.S_ISLNK(entry.st_mode) or not _own(entry):
                    return False
    except OSError:
        return False
    return True


def write_own(path: str, data: bytes, what: str) -> None:
    """`data` kept at `path` (mode 0600, its folder made 0700 where missing), all or nothing. Raises BitError."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with atomic_path(path, what) as tmp:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)


def keep_to_self(folder: str) -> None:
    """Take the group's and others' write permission from `folder` and everything under it (links left alone), so
    that own_tree accepts what this user wrote under any umask."""
    for top, dirs, files in os.walk(folder):
        for path in [top] + [os.path.join(top, name) for name in dirs + files]:
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(path, stat.S_IMODE(mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
