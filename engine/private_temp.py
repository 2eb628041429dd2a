"""A temporary folder only this user can enter, one per user and purpose, kept from one process to the next.

`$TMPDIR/<prefix><uid>`, made 0700 by the first process that needs it. Where a folder per process was made instead,
each process killed before its exit handlers ran (a server's SIGKILL, a pool's terminated worker) left one behind.
The folder is used only while it is a real folder, this user's, that no one else may enter: another local user who
makes that name first (a folder of theirs, a symlink, a wider mode) gets nothing from it, as the caller then makes
one of its own. Used for OpenCV's temporary files (engine/opencv_temp.py) and a local Ray's session
(scale/ray_cluster.py); the C++ library has its twin for OpenCV (engine/cpp/src/preprocess.cpp).
"""

from __future__ import annotations

import os
import stat
import tempfile


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
