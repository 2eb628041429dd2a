"""tests/docker/test_images.py skips, and says why, where a prerequisite is missing; it never errors for that
(docs/docker.md, "Docker in CI"). No Docker needed: the engine is made unreachable, and the network classifier is
given what pip, apt, debootstrap and Docker print without a network (captured from real runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docker.test_images import _network_failure

REPO = Path(__file__).resolve().parents[2]

OFFLINE = {
    "pip in a build": """\
Collecting requests
WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by \
'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f6bbe545b90>: Failed to establish a \
new connection: [Errno -3] Temporary failure in name resolution')': /simple/requests/
ERROR: Could not find a version that satisfies the requirement requests (from versions: none)
ERROR: No matching distribution found for requests
The command '/bin/bash -o pipefail -c python3 -m venv /opt/bit-trt/venv' returned a non-zero code: 1""",
    "apt in a build": """\
W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving 'deb.debian.org'
W: Some index files failed to download. They have been ignored, or old ones used instead.
E: Unable to locate package wget""",
    "docker pull": 'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: lookup '
    "registry-1.docker.io on 10.255.255.53:53: no such host",
    "debootstrap": "I: Retrieving InRelease \nE: Failed getting release file http://deb.debian.org/debian/dists/bookworm/Release",
}

BROKEN = {
    "a package folder missing": "error: package directory 'scale' does not exist\nerror: metadata-generation-failed",
    "a pin conflict": "ERROR: Cannot install bit-trt because these package versions have conflicting dependencies.\n"
    "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/",
    "a bad instruction": "Step 7/24 : RUN false\n"
    "The command '/bin/bash -o pipefail -c false' returned a non-zero code: 1",
}


@pytest.mark.parametrize("what", OFFLINE)
def test_offline_failures_are_recognized(what):
    assert _network_failure(OFFLINE[what])


@pytest.mark.parametrize("what", BROKEN)
def test_broken_images_are_not_taken_for_a_missing_network(what):
    assert _network_failure(BROKEN[what]) is None


def test_only_the_end_of_a_log_decides():
    """A retried hiccup early in a long build, then a real failure: the image is broken."""
    log = (
        OFFLINE["pip in a build"] + "\n" + "\n".join(f"line {i}" for i in range(100)) + "\n" + BROKEN["a pin conflict"]
    )
    assert _network_failure(log) is None


def test_no_engine_skips_every_image_test_with_the_reason(tmp_path):
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/docker/test_images.py"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and not any(word in summary for word in ("passed", "failed", "error")), summary
    assert "needs a running Docker engine" in proc.stdout, proc.stdout[-3000:]
