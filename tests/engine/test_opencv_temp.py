"""engine/opencv_temp.py: an upload that OpenCV decodes through a file (Radiance HDR) is written in a folder only
this process's user can enter, not in /tmp, where OpenCV creates it again world-readable and following links (a
second local user could read the upload, or plant a symlink the server writes through). The folder is one per user,
so a killed process leaves nothing new behind, and a name another user made first is not used. tests/cpp holds the
C++ library to the same."""

import json
import os
import shutil
import signal
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


def private_env(tmp_path) -> dict[str, str]:
    """The environment of a child whose temporary folder is this test's own."""
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_TEMP_PATH"}
    env["TMPDIR"] = str(tmp_path)
    return env


def users_folder(tmp_path) -> str:
    return str(tmp_path / f"bit-trt-opencv-{os.geteuid()}")


def traced(tmp_path, command: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    trace = tmp_path / "trace"
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(trace), *command],
        capture_output=True,
        text=True,
        env=private_env(tmp_path),
        timeout=300,
    )
    return done, opencv_temp_files(trace.read_text())


def decoded_in(tmp_path, upload: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, upload], capture_output=True, text=True, env=private_env(tmp_path), timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_strace
def test_an_upload_decoded_through_a_file_stays_in_a_private_folder(tmp_path):
    done, opened = traced(tmp_path, [sys.executable, "-c", CHILD, hdr_upload(tmp_path / "upload.hdr")])
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["shape"] == [7, 5, 3]
    assert got["folder"] == users_folder(tmp_path)
    assert got["mode"] == 0o700 and got["owner"] == os.geteuid()
    assert opened, "OpenCV decoded the HDR without a temporary file: this test no longer sees what it guards"
    assert all(os.path.dirname(path) == got["folder"] for path in opened), opened
    assert os.listdir(got["folder"]) == []  # OpenCV removed its file


def test_killed_processes_leave_nothing_new_behind(tmp_path):
    """A server killed by SIGKILL (or a pool's terminated worker) runs no exit handler: with a folder per process,
    each one left an empty folder in $TMPDIR. The user's one folder is made once and used again."""
    upload = hdr_upload(tmp_path / "upload.hdr")
    code = CHILD + "import signal; os.kill(os.getpid(), signal.SIGKILL)\n"
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code, upload], capture_output=True, text=True, env=private_env(tmp_path), timeout=120
        )
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1])["shape"] == [7, 5, 3]
    assert sorted(os.listdir(tmp_path)) == sorted(["upload.hdr", os.path.basename(users_folder(tmp_path))])
    assert os.listdir(users_folder(tmp_path)) == []


@pytest.mark.parametrize("squat", ["symlink", "open to others", "another user's"])
def test_a_folder_name_another_user_made_first_is_not_used(tmp_path, squat):
    """Another local user who makes bit-trt-opencv-<uid> first gets nothing from it: the process makes a folder of
    its own instead, and the HDR still decodes."""
    target = users_folder(tmp_path)
    if squat == "symlink":
        (tmp_path / "theirs").mkdir(mode=0o777)
        os.symlink(tmp_path / "theirs", target)
    elif squat == "open to others":
        os.mkdir(target)
        os.chmod(target, 0o733)
    else:
        if os.geteuid() != 0:
            pytest.skip("making a folder another user owns needs root")
        os.mkdir(target, 0o700)
        os.chown(target, 65534, 65534)
    got = decoded_in(tmp_path, hdr_upload(tmp_path / "upload.hdr"))
    assert got["shape"] == [7, 5, 3]
    assert got["folder"] != target and os.path.basename(got["folder"]).startswith("bit-trt-opencv-")
    assert os.path.dirname(got["folder"]) == str(tmp_path)
    assert not os.path.exists(got["folder"])  # a process's own folder is removed at its exit
    assert os.listdir(tmp_path / "theirs" if squat == "symlink" else target) == []


def test_without_a_writable_temporary_folder_only_such_uploads_fail_in_one_line(tmp_path):
    """No private folder can be made (here: a file holds the user's folder name, and mkdtemp fails as on a full or
    read-only disk; as root no $TMPDIR is unwritable, and Python falls back to /tmp): an HDR is refused in one line,
    since OpenCV can make its file nowhere, /tmp included, and a PNG still decodes."""
    ok, png = cv2.imencode(".png", np.zeros((4, 6, 3), np.uint8))
    (tmp_path / "a.png").write_bytes(png.tobytes())
    open(users_folder(tmp_path), "w").close()
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
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "a.png"), hdr_upload(tmp_path / "upload.hdr")],
        capture_output=True,
        text=True,
        env=private_env(tmp_path),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    shape, refused, folder = done.stdout.strip().splitlines()[-3:]
    assert shape == "(4, 6, 3)"
    assert refused.startswith("upload.hdr: not a decodable image"), refused
    assert folder.startswith(os.devnull + "/")
