"""The multi-node tests (tests/scale/cluster/), run in a network namespace of their own.

Ray's GCS, raylets and workers listen on every interface of their host, and no Ray flag confines them to
loopback. So the three-node cluster runs in a private network namespace that has loopback alone (`unshare --net`,
root, or an unprivileged user namespace where the kernel allows one): nothing it listens on is reachable from
the network, and its clients talk to 127.0.0.1 only. It is a PID namespace of its own too, so nothing it started
outlives it. Ray's token authentication is on, the token in a 0600 file
(RAY_AUTH_TOKEN_PATH: never on a command line). The inner run's report is this test's output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from xml.etree import ElementTree

import pytest

from tests.test_layers import ROOT

pytestmark = pytest.mark.slow
TIMEOUT_S = 600


def _namespace_command() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed: the cluster needs a private network namespace")
    # --pid --fork: the inner run is PID 1 of its own PID namespace, so when it ends, by any means, the kernel ends
    # every raylet and worker it started: no Ray process outlives the test.
    isolated = [unshare, "--net", "--pid", "--fork", "--mount-proc"]
    for command in (isolated, [*isolated, "--map-root-user"]):
        if subprocess.run([*command, "true"], capture_output=True).returncode == 0:
            return command
    pytest.skip("no network namespace can be made here (not root, and unprivileged user namespaces are off)")


def test_the_multi_node_suite_on_a_three_node_cluster(tiny_bundle, tmp_path):
    namespace = _namespace_command()
    ray_tmp = tempfile.mkdtemp(prefix="bit-ray-")
    token = tmp_path / "ray-token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32).hex().encode())
    os.close(fd)
    env = dict(
        os.environ,
        BIT_TRT_RAY_NETNS="1",
        BIT_TRT_RAY_BUNDLE=str(tiny_bundle),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
        # One proxy (on the head), all nodes on one host: Ray Serve's preference for replicas on the proxy's own
        # node would keep the other replicas idle below saturation (docs/scaling.md, "Placement").
        RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING="0",
        RAY_TMPDIR=ray_tmp,  # short: Ray's socket paths must fit AF_UNIX's 107 bytes
    )
    # tests/scale/cluster/conftest.py brings the namespace's loopback up. -p no:cacheprovider: the inner run
    # writes nothing into the repository; its verdicts come back through a JUnit file, Ray's logs aside.
    junit = tmp_path / "inner.xml"
    inner = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:logging", "-p", "no:warnings"]
    inner += ["--show-capture=no", "-m", "not gpu", f"--junitxml={junit}", f"--basetemp={tmp_path / 'inner'}"]
    try:
        done = subprocess.run(
            [*namespace, *inner, "tests/scale/cluster"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    report = "\n".join(line for line in (done.stdout + done.stderr).splitlines() if not line.startswith(("[", "(")))
    assert junit.is_file(), report[-20000:]
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    for case in cases:
        verdict = [child.tag for child in case if child.tag in ("failure", "error", "skipped")] or ["passed"]
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        print(f"{case.get('name')}: {verdict[0]} in {float(case.get('time')):.1f} s", properties or "")
    counts = {key: int(suite.get(key)) for key in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": len(cases), "failures": 0, "errors": 0, "skipped": 0}, report[-20000:]
    assert len(cases) >= 7 and done.returncode == 0, report[-20000:]
