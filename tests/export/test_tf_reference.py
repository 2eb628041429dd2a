"""The TF reference child: the logits TF gives in-process, its own peak RSS, its errors, and that it never outlives
the exporter, however the exporter dies."""

import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
import pytest

from bit_trt.engine.errors import BitError
from bit_trt.engine.preprocess import scale_uint8
from bit_trt.engine.private_temp import job_folder
from bit_trt.export.parity_images import synthetic_images
from bit_trt.export.tf_reference import JOB_PREFIX, tf_reference_logits

CHILD_MODULE = "bit_trt.export.tf_reference"


def _descendants():
    return psutil.Process().children(recursive=True)


def _wait_ended(procs, timeout):
    """The processes still running after `timeout` s. A zombie has ended: only its reaper, not us, can collect it."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def test_logits_match_tf_in_process_and_peak_is_the_childs():
    from bit_trt.export import sources

    images_u8 = synthetic_images(2, 64, seed=7)
    logits, peak = tf_reference_logits("synthetic", None, "tiny", 10, 3, images_u8)

    expected = sources.load("synthetic", "tiny", num_classes=10, seed=3).reference(scale_uint8(images_u8))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert logits.shape == (2, 10) and logits.dtype == np.float32
    assert isinstance(peak, int) and peak > 100e6  # the child imported TF
    assert _descendants() == []


def test_second_call_reports_its_own_childs_peak():
    """RUSAGE_CHILDREN is the largest peak of any child ever reaped: a small second run would report the first."""
    _, big = tf_reference_logits("synthetic", None, "r50x1", 10, 3, synthetic_images(2, 128, seed=7))
    _, small = tf_reference_logits("synthetic", None, "tiny", 10, 3, synthetic_images(1, 64, seed=7))
    assert small < big - 100e6, (small, big)  # measured here: about 0.78 GB against 1.09 GB


def test_bit_error_in_child_arrives_with_its_message_and_leaves_no_process():
    with pytest.raises(BitError, match=r"^--model '/nonexistent/path': no such file or directory"):
        tf_reference_logits("/nonexistent/path", None, "tiny", 10, 3, synthetic_images(1, 64, seed=7))
    assert _descendants() == []


def test_sigkill_of_exporter_ends_the_reference_child(tmp_path, monkeypatch):
    """...and its job folder (the parity images), which it could not remove, goes with the next job."""
    out = tmp_path / "b"
    jobs = tmp_path / "tmp"
    jobs.mkdir()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(jobs)}
    with open(tmp_path / "stderr.txt", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bit_trt.export.cli",
                "--variant",
                "tiny",
                "--resolution",
                "64",
                "--parity-images",
                "2",
                "--engine",
                "none",
                "--out",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
    recorded = []
    try:
        exporter = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                recorded = exporter.children(recursive=True)
                if any(CHILD_MODULE in " ".join(p.cmdline()) for p in recorded):
                    break
            except psutil.Error:  # a process listed a moment ago may be gone by its cmdline
                pass
            time.sleep(0.1)
        else:
            pytest.fail(f"no {CHILD_MODULE} child appeared; exporter stderr:\n{(tmp_path / 'stderr.txt').read_text()}")

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        alive = _wait_ended(recorded, timeout=30)
        assert alive == [], [(p.pid, p.cmdline()) for p in alive]
        assert not out.exists()
        left = [name for name in os.listdir(jobs) if name.startswith(JOB_PREFIX)]
        assert len(left) == 1, os.listdir(jobs)
        monkeypatch.setattr(tempfile, "tempdir", str(jobs))
        with job_folder(JOB_PREFIX) as folder:
            assert [name for name in os.listdir(jobs) if name.startswith(JOB_PREFIX)] == [os.path.basename(folder)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in _wait_ended(recorded, timeout=0):  # never leak a process, even when the test failed
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
