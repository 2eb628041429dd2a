"""Temporary folders that a killed process does not leave behind for good.

users_temp_folder: a folder only this user can enter, one per user and purpose, kept from one process to the next.
`$TMPDIR/<prefix><uid>`, made 0700 by the first process that needs it. Where a folder per process was made instead,
each process killed before its exit handlers ran (a server's SIGKILL, a pool's terminated worker) left one behind.
The folder is used only while it is a real folder, this user's, that no one else may enter: another local user who
makes that name first (a folder of theirs, a symlink, a wider mode) gets nothing from it, as the caller then makes
one of its own. Used for OpenCV's temporary files (engine/opencv_temp.py) and a local Ray's session
(scale/ray_cluster.py); the C++ library has its twin for OpenCV (engine/cpp/src/preprocess.cpp).

kept_private_file: a file only this user can read, in such a folder, made once and kept: a local Ray's token.

job_folder: a new folder for one job (mkdtemp: 0700), removed when the job ends. A process killed during the job
(SIGKILL, the out-of-memory killer) cannot remove it, so while the job runs its process holds a lock on a file in it;
the next job of the same kind removes every folder of this user's whose lock is free. A lock (flock) is released by
the kernel however its process ends, and is seen from any PID namespace, where a process ID could be another
process's. Used for the exporter's TF reference jobs (export/tf_reference.py), which hold the parity images.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # not POSIX: no lock, so no sweep either; the job's own removal still runs
    fcntl = None

HELD = ".held"  # the file whose lock says the job's process is alive


def users_temp_folder(prefix: str) -> str | None:
    """`$TMPDIR/<prefix><uid>` if it is, or can be made, a folder of this user's that no one else may enter; else
    None."""
    folder = os.path.join(tempfile.gettempdir(), f"{prefix}{os.geteuid()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        private = _users_own(folder, stat.S_ISDIR)
    except OSError:
        return None
    return folder if private and os.access(folder, os.W_OK | os.X_OK) else None


def kept_private_file(folder: str, name: str, content) -> str:
    """The path of a file only this user can read, `name` in `folder` (this user's, 0700; see users_temp_folder),
    made once with `content()` and kept for the processes after this one; where `name` holds something else, or the
    file system has no hard links, a new file of this process's own beside it. Raises OSError where nothing can be
    written.

    A file made by another process of this user's appears whole (written under another name, then linked), and one
    that changed is never replaced: a process may still be reading it (a local Ray's workers read its token)."""
    path = os.path.join(folder, name)
    if _users_nonempty_file(path):
        return path
    fd, part = tempfile.mkstemp(dir=folder, prefix=f".{name}.")  # 0600
    with os.fdopen(fd, "w") as f:
        f.write(content())
    try:
        os.link(part, path)
    except FileExistsError:
        if not _users_nonempty_file(path):
            return part
    except OSError:  # no hard links here
        return part
    os.unlink(part)
    return path


def _users_nonempty_file(path: str) -> bool:
    try:
        return _users_own(path, stat.S_ISREG) and os.lstat(path).st_size > 0
    except FileNotFoundError:
        return False


def _users_own(path: str, is_kind) -> bool:
    """`path` itself (not a link's target) is of the kind `is_kind` tells (stat.S_ISDIR, stat.S_ISREG), this user's,
    and no one else may read, write or enter it."""
    st = os.lstat(path)
    return is_kind(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


@contextlib.contextmanager
def job_folder(prefix: str) -> Iterator[str]:
    """A new folder `$TMPDIR/<prefix>XXXXXXXX` for one job, held by this process while the job runs and removed
    after it; first, every such folder of this user's that no live process holds is removed."""
    _sweep(prefix)
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        held = _hold(folder)
        try:
            yield folder
        finally:
            if held is not None:
                os.close(held)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _hold(folder: str) -> int | None:
    """Lock a file made under another name and renamed to HELD only once locked, so that no sweep ever finds it
    unlocked while this process lives. The descriptor is not inherited by the job's child."""
    if fcntl is None:
        return None
    part = os.path.join(folder, HELD + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(part, os.path.join(folder, HELD))
    return fd


def _sweep(prefix: str) -> None:
    """Remove this user's job folders of `prefix` whose HELD lock is free: their process died during the job. A
    folder without HELD (being made, or left by an older version) is left alone."""
    if fcntl is None:
        return
    root = tempfile.gettempdir()
    try:
        names = [name for name in os.listdir(root) if name.startswith(prefix)]
    except OSError:
        return
    for name in names:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            fd = os.open(os.path.join(path, HELD), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its job is running
            continue
        else:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
