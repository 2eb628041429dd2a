"""Temporary folders that a killed process does not leave behind for good.

users_temp_folder: a folder only this user can enter, one per user and purpose, kept from one process to the next.
`$TMPDIR/<prefix><uid>`, made 0700 by the first process that needs it. Where a folder per process was made instead,
each process killed before its exit handlers ran (a server's SIGKILL, a pool's terminated worker) left one behind.
The folder is used only while it is a real folder, this user's, that no one else may enter: another local user who
makes that name first (a folder of theirs, a symlink, a wider mode) gets nothing from it, as the caller then makes
one of its own. Used for OpenCV's temporary files (engine/opencv_temp.py) and a local Ray's session
(scale/ray_cluster.py); the C++ library has its twin for OpenCV (engine/cpp/src/preprocess.cpp).

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
    uid = os.geteuid()
    folder = os.path.join(tempfile.gettempdir(), f"{prefix}{uid}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(folder)
    except OSError:
        return None
    private = stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o077
    return folder if private and os.access(folder, os.W_OK | os.X_OK) else None


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
