"""Where bit-trt keeps per-user caches: TF Hub downloads, calibration ranges, compiled kernels, gate verdicts,
TensorRT timing caches and ORT-TRT engines.

One root for all of them, `$BIT_TRT_CACHE` or `~/.cache/bit-trt`, so one variable moves (or isolates) them all.

What is read back from a cache is taken only if this user alone may have written it: owned by this user, writable
by no one else, and no link. A cache is only a saving, and in one another local user can write to (a shared
`$BIT_TRT_CACHE`), a kept gate verdict could pass a model that fails, a kept kernel or TensorRT engine is code the GPU
runs, a kept SavedModel is a graph TensorFlow executes, and kept ranges or tactics shape the engine that is built.
Anything else is made again. engine/cpp/src/compute_gate.cpp applies the same rule.
"""

from __future__ import annotations

import os
import stat

from .atomic_write import atomic_path, write_atomic


def cache_dir(*parts: str) -> str:
    """A path in the user cache: `$BIT_TRT_CACHE` (unset or empty: `~/.cache/bit-trt`) joined with `parts`."""
    root = os.environ.get("BIT_TRT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bit-trt")
    return os.path.join(root, *parts)


def make_root() -> str:
    """The cache root, made 0700 where missing, and kept writable by no one else where it is this user's: folders
    made by earlier versions under a umask of 002 were group-writable, and a library folder under a root others
    may write to could be swapped after it is vetted (library_folder). Everything below it is vetted where read."""
    root = cache_dir()
    os.makedirs(root, mode=0o700, exist_ok=True)
    _tighten(os.path.realpath(root))  # the root may be a link the user made: the folder it names is the cache
    return root


def in_user_cache(path: str) -> bool:
    root = os.path.abspath(cache_dir())
    return os.path.commonpath([root, os.path.abspath(path)]) == root


def read_kept(path: str, limit: int = 1 << 30) -> bytes | None:
    """The bytes of a kept file that bit-trt reuses (None where there is none): in the user cache only if this user
    alone may have written it (read_own, at most `limit` bytes), even where the user named it; a path the user named
    elsewhere (--calib-cache, --timing-cache) as it is, since they chose it. Raises OSError for a named file that
    exists but cannot be read."""
    if in_user_cache(path):
        return read_own(path, limit)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def write_kept(path: str, data: bytes, what: str) -> None:
    """`data` kept at `path` for read_kept, all or nothing: 0600 in a 0700 folder in the user cache (write_own),
    elsewhere with the folder's own permissions. Raises BitError."""
    if in_user_cache(path):
        write_own(path, data, what)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, data, what)


def _own(st: os.stat_result, installed: bool = False) -> bool:
    owners = (os.geteuid(), 0) if installed else (os.geteuid(),)
    return st.st_uid in owners and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _raise(exc: OSError):
    raise exc


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


def own_tree(path: str, installed: bool = False) -> bool:
    """Whether the kept folder `path` and everything under it is this user's alone: no link anywhere, every entry
    owned by this user (or, `installed`, by root) and writable by no one else (a folder that can't be listed is not)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or not _own(st, installed):
            return False
        for top, dirs, files in os.walk(path, onerror=_raise):
            for name in dirs + files:
                entry = os.lstat(os.path.join(top, name))
                if stat.S_ISLNK(entry.st_mode) or not _own(entry, installed):
                    return False
    except OSError:
        return False
    return True


def installed_tree(path: str) -> str | None:
    """Why the folder `path`, code that root or this user installed for this process to load (not a cache: nothing
    is written in it here), may not be trusted, or None: the folders above it as _safe_above rules, and it and
    everything under it no link, root's or this user's, and writable by no one else."""
    try:
        why = _safe_above(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if why:
        return why
    if not own_tree(path, installed=True):
        return f"something in {path} is a link, another user's than root's or this user's, or writable by others"
    return None


def _safe_above(path: str) -> str | None:
    """Why the folders above `path` (as named, and as resolved) would let someone else swap it, or None: each must
    be this user's or root's, and writable by no one else unless sticky (as /tmp), the rule of OpenSSH's
    StrictModes."""
    above = set()
    for start in (os.path.abspath(path), os.path.realpath(path)):
        folder = os.path.dirname(start)
        while True:
            above.add(folder)
            if folder == os.path.dirname(folder):
                break
            folder = os.path.dirname(folder)
    for folder in sorted(above):
        st = os.stat(folder)
        if st.st_uid not in (0, os.geteuid()) or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
            return f"{folder} is another user's or writable by others"
    return None


def library_folder(path: str, root: str) -> str | None:
    """`path` (its missing folders made 0700) where a library may keep and read back its own files, or why it may not.

    None: fit to use. A reason: a folder above `root` would let someone else swap it (_safe_above; `root` may be
    reached through a link), some folder from `root` down to `path` is a link, another user's or writable by others,
    or something in `path` is not this user's alone. What a library wrote in `path` under the process's umask (002
    leaves files group-writable) is tightened first where no one else may enter it, and `path` is left 0700. Vet
    it right before the library reads it: it stays fit only while no one else may write above it."""
    root = os.path.abspath(root)
    path = os.path.abspath(path)
    if os.path.commonpath([root, path]) != root:
        raise ValueError(f"{path} is not under {root}")
    rel = os.path.relpath(path, root)
    folders = [root]
    for part in rel.split(os.sep) if rel != "." else []:
        folders.append(os.path.join(folders[-1], part))
    try:
        if root == os.path.abspath(cache_dir()):
            make_root()
        why = _safe_above(root)
        if why:
            return why
        for folder in folders:
            if folder != root:
                try:
                    os.mkdir(folder, 0o700)  # os.makedirs would give the folders above `path` the umask's mode
                except FileExistsError:  # already there, or made by another worker just now: vetted below
                    pass
            st = os.stat(folder) if folder == root else os.lstat(folder)
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                return f"{folder} is a link or not a folder"
            if not _own(st):
                return f"{folder} is another user's or writable by others"
        if not os.lstat(path).st_mode & 0o077:
            keep_to_self(path)
        if not own_tree(path):
            return f"something in {path} is a link, another user's or writable by others"
        os.chmod(path, 0o700)  # checked above to be this user's own folder, not a link
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


def write_own(path: str, data: bytes, what: str) -> None:
    """`data` kept at `path` (mode 0600, its folder made 0700 where missing), all or nothing. Raises BitError."""
    if in_user_cache(path):
        make_root()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with atomic_path(path, what) as tmp:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)


def _tighten(path: str) -> None:
    """Take the group's and others' write permission from `path` if it is this user's regular file or folder;
    anything else (a link, another user's entry, a device) is left for own_tree to refuse. Through a descriptor
    opened without following links, so a swap after the check changes nothing."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)) and st.st_uid == os.geteuid():
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
    finally:
        os.close(fd)


def keep_to_self(folder: str) -> None:
    """Take the group's and others' write permission from `folder` and everything under it that is this user's
    (links and others' entries left alone, for own_tree to refuse), so that own_tree accepts what this user wrote
    under any umask."""
    for top, dirs, files in os.walk(folder, onerror=_raise):
        for path in [top] + [os.path.join(top, name) for name in dirs + files]:
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                _tighten(path)
