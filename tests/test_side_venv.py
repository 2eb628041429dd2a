"""The side environments' build failures (tests/side_venv.py) say what pip said, in one line, from real pip runs."""

import subprocess
import sys

from tests.side_venv import ROOT, build_failure


def _pip(*args: str) -> tuple[list[str], subprocess.CompletedProcess]:
    step = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    proc = subprocess.run(step, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    return step, proc


def test_a_failed_install_names_pips_error_and_the_free_disk(tmp_path):
    step, proc = _pip("--no-index", "--find-links", str(tmp_path), "bit-trt-no-such-package==1.0")
    offline, line = build_failure(step, proc, str(tmp_path))
    assert not offline
    assert "\n" not in line
    assert line.startswith("`python")
    assert "ERROR: " in line and "bit-trt-no-such-package" in line
    assert line.endswith(f"GiB free on {tmp_path})")


def test_an_unreachable_index_is_told_apart(tmp_path):
    """A closed loopback port stands for an index that does not answer: the tests skip instead of failing."""
    import socket

    with socket.socket() as s:  # a port nothing listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    step, proc = _pip(
        "--retries", "1", "--timeout", "5", "--index-url", f"http://127.0.0.1:{port}/simple", "--no-cache-dir",
        "bit-trt-no-such-package==1.0",
    )  # fmt: skip
    offline, line = build_failure(step, proc, str(tmp_path))
    assert offline, line
