"""Where OpenCV writes the files some of its decoders need: a folder only this process's user can enter.

OpenCV decodes an image its decoder cannot read from memory (Radiance HDR, of the formats engine/image_size.py
admits) through a file. Its `cv::tempfile` (OpenCV 4.x and 5.0) takes a name from mkstemp in $OPENCV_TEMP_PATH
(/tmp when unset), removes that file, and creates it again with fopen: mode 0666 less the umask, without O_EXCL,
following links. In /tmp a client's upload is then readable by every local user while it decodes, and a symlink
another local user plants at that name in the gap makes the server write the upload over any file the server may
write (where fs.protected_symlinks is 0). Seen with strace on OpenCV 5.0 (openat O_CREAT|O_EXCL 0600, unlink,
openat O_CREAT|O_TRUNC 0666).

So before bit-trt decodes anything, $OPENCV_TEMP_PATH names a folder only this user can enter:
- `$TMPDIR/bit-trt-opencv-<uid>`, one per user and kept (engine/private_temp.py), so a killed process leaves nothing
  new behind;
- where that name is not such a folder (another local user made it first): a folder of this process's own
  (mkdtemp: 0700), removed at exit; a forked child makes its own, as the parent removes its folder when it exits.
- where neither can be made (no writable $TMPDIR), a path where nothing can be made: those few formats then fail to
  decode, in one line, and every other format decodes.
OpenCV reads the variable at each use. The C++ library does the same (engine/cpp/src/preprocess.cpp).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading

from .private_temp import users_temp_folder

PREFIX = "bit-trt-opencv-"
# Where OpenCV can make no file at all (a path under a device): used when no private folder can be made
NOWHERE = os.path.join(os.devnull, "bit-trt-opencv")
_LOCK = threading.Lock()
_FOLDERS: dict[int, str] = {}  # pid -> its folder


def private_opencv_temp() -> str:
    """This process's folder for OpenCV's temporary files, made and named in $OPENCV_TEMP_PATH on first use."""
    pid = os.getpid()
    folder = _FOLDERS.get(pid)
    if folder is None:
        with _LOCK:
            folder = _FOLDERS.get(pid)
            if folder is None:
                folder = users_temp_folder(PREFIX) or _own_folder(pid)
                os.environ["OPENCV_TEMP_PATH"] = folder
                _FOLDERS[pid] = folder
    return folder


def _own_folder(pid: int) -> str:
    try:
        folder = tempfile.mkdtemp(prefix=PREFIX)
    except OSError:  # no writable temporary folder: such formats fail to decode, the rest decode
        return NOWHERE
    atexit.register(_remove, folder, pid)
    return folder


def _remove(folder: str, pid: int) -> None:
    if os.getpid() == pid:  # not a forked child's exit: the folder is its parent's
        shutil.rmtree(folder, ignore_errors=True)
