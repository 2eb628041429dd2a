"""engine/opencv_temp.py: an upload that OpenCV decodes through a file (Radiance HDR) is written in a folder only
this process's user can enter, removed at exit, not in /tmp, where OpenCV creates it again world-readable and
following links (a second local user could read the upload, or plant a symlink the server writes through).
tests/cpp holds the C++ library to the same."""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed here")

CHILD = """
import json, os, stat, sys
from bit_trt.engine.preprocess import decode
image = decode(open(sys.argv[1], "rb").read(), "upload.hdr")
folder = os.environ["OPENCV_TEMP_PATH"]
st = os.stat(folder)
print(json.dumps({"shape": list(image.shape), "folder": folder, "mode": stat.S_IMODE(st.st_mode), "owner": st.st_uid}))
"""


def hdr_upload(path) -> str:
    ok, buf = cv2.imencode(".hdr", np.full((7, 5, 3), 0.5, np.float32))
    assert ok
    path.write_bytes(buf.tobytes())
    return str(path)


def opencv_temp_files(trace: str) -> list[str]:
    """The paths of OpenCV's temporary files that an strace of openat shows opened."""
    return [line.split('"')[1] for line in trace.splitlines() if "openat(" in line and "__opencv_temp." in line]


def traced(tmp_path, command: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    trace = tmp_path / "trace"
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_TEMP_PATH"}
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(trace), *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return done, opencv_temp_files(trace.read_text())


@needs_strace
def test_an_upload_decoded_through_a_file_stays_in_a_private_folder(tmp_path):
    done, opened = traced(tmp_path, [sys.executable, "-c", CHILD, hdr_upload(tmp_path / "upload.hdr")])
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["shape"] == [7, 5, 3]
    assert got["mode"] == 0o700 and got["owner"] == os.geteuid()
    assert opened, "OpenCV decoded the HDR without a temporary file: this test no longer sees what it guards"
    assert all(os.path.dirname(path) == got["folder"] for path in opened), opened
    assert not os.path.exists(got["folder"])  # removed when the process exited


def test_without_a_writable_temporary_folder_only_such_uploads_fail_in_one_line(tmp_path):
    """No private folder can be made (here: mkdtemp fails as on a full or read-only disk; as root no $TMPDIR is
    unwritable, and Python falls back to /tmp): an HDR is refused in one line, since OpenCV can make its file nowhere,
    /tmp included, and a PNG still decodes."""
    ok, png = cv2.imencode(".png", np.zeros((4, 6, 3), np.uint8))
    (tmp_path / "a.png").write_bytes(png.tobytes())
    code = """
import os, sys, tempfile
def full(*args, **kwargs):
    raise OSError(28, "No space left on device")
tempfile.mkdtemp = full
from bit_trt.engine.errors import BitError
from bit_trt.engine.preprocess import decode
print(decode(open(sys.argv[1], "rb").read(), "a.png").shape)
try:
    decode(open(sys.argv[2], "rb").read(), "upload.hdr")
except BitError as exc:
    print(exc)
print(os.environ["OPENCV_TEMP_PATH"])
"""
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_TEMP_PATH"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "a.png"), hdr_upload(tmp_path / "upload.hdr")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    shape, refused, folder = done.stdout.strip().splitlines()[-3:]
    assert shape == "(4, 6, 3)"
    assert refused.startswith("upload.hdr: not a decodable image"), refused
    assert folder.startswith(os.devnull + "/")
