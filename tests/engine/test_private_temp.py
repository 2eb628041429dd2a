"""engine/private_temp.job_folder: a job's folder is removed after the job, and one whose process was killed during
its job (which runs no exit handler) is removed by the next job; a folder whose job is still running, or that holds
no lock, is left alone."""

import os
import signal
import subprocess
import sys
import tempfile

import pytest

from bit_trt.engine.private_temp import HELD, job_folder, kept_private_file

PREFIX = "bit-trt-test-job-"

# Enters a job, prints its folder, then waits for a line on stdin or dies by SIGKILL, as told
CHILD = f"""
import os, signal, sys
from bit_trt.engine.private_temp import job_folder
with job_folder({PREFIX!r}) as folder:
    open(os.path.join(folder, "images.npy"), "wb").write(b"parity images")
    print(folder, flush=True)
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.readline()
"""


@pytest.fixture
def tmpdir_here(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def child(how: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, how], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    return proc, proc.stdout.readline().strip()


def test_a_job_s_folder_goes_with_the_job(tmpdir_here):
    with job_folder(PREFIX) as folder:
        assert os.path.dirname(folder) == str(tmpdir_here)
        assert os.stat(folder).st_mode & 0o777 == 0o700
        assert os.listdir(folder) == [HELD]
    assert os.listdir(tmpdir_here) == []


def test_a_killed_job_s_folder_is_removed_by_the_next_job_and_a_running_one_kept(tmpdir_here):
    killed, stale = child("kill")
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert sorted(os.listdir(stale)) == sorted([HELD, "images.npy"])  # what a killed exporter left behind
    running, live = child("wait")
    try:
        assert os.path.isdir(live)
        os.mkdir(tmpdir_here / f"{PREFIX}unheld")  # no lock file: being made, or an older version's
        with job_folder(PREFIX) as folder:
            expected = [os.path.basename(folder), os.path.basename(live), f"{PREFIX}unheld"]
            assert sorted(os.listdir(tmpdir_here)) == sorted(expected)
            assert not os.path.exists(stale)
            assert sorted(os.listdir(live)) == sorted([HELD, "images.npy"])
    finally:
        running.communicate("done\n", timeout=60)
    assert running.returncode == 0
    assert os.listdir(tmpdir_here) == [f"{PREFIX}unheld"]  # the running job removed its own when it ended


def test_a_kept_private_file_is_made_once_0600_and_kept(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir(mode=0o700)
    made = iter(["first", "second"])
    path = kept_private_file(str(folder), "token", lambda: next(made))
    assert path == str(folder / "token") and open(path).read() == "first"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert kept_private_file(str(folder), "token", lambda: next(made)) == path  # kept: not made again
    assert os.listdir(folder) == ["token"]


@pytest.mark.parametrize("there", ["symlink", "readable by others", "empty"])
def test_a_kept_private_file_leaves_what_else_holds_its_name(tmp_path, there):
    """Something else at the name (a link, a file others may read, an empty one) is neither used nor replaced (a
    process may still read it): the new file is one of its own beside it."""
    folder = tmp_path / "mine"
    folder.mkdir(mode=0o700)
    target = folder / "token"
    if there == "symlink":
        (tmp_path / "elsewhere").write_text("theirs")
        os.symlink(tmp_path / "elsewhere", target)
    else:
        target.write_text("" if there == "empty" else "theirs")
        target.chmod(0o600 if there == "empty" else 0o644)
    path = kept_private_file(str(folder), "token", lambda: "mine")
    assert path != str(target) and os.path.dirname(path) == str(folder)
    assert open(path).read() == "mine" and os.stat(path).st_mode & 0o777 == 0o600
    assert os.path.lexists(target)
    if there == "symlink":
        assert os.path.islink(target) and (tmp_path / "elsewhere").read_text() == "theirs"
    else:
        assert target.read_text() == ("" if there == "empty" else "theirs")
