"""`--ray local`: a one-node Ray started by bit-serve or bit-classify keeps its session (logs, sockets) where no
other local user can reach it: Ray makes its own folder 0777, so it goes inside a 0700 folder of ours, one per user,
so that runs leave no new folder in $TMPDIR each."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import os, ray
from bit_trt.scale.ray_cluster import connect
connect("local")
session = ray._private.worker._global_node.get_session_dir_path()
print(ray.get(ray.put(21)) * 2)
print(session)
ray.shutdown()
"""


def test_a_local_ray_session_is_private_to_its_user(cluster):
    # a short $TMPDIR of its own: Ray's socket paths under it must fit AF_UNIX's 107 bytes
    tmp = tempfile.mkdtemp(prefix="bit-t-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_TMPDIR", "RAY_ADDRESS")}
    env["TMPDIR"] = tmp
    sessions = []
    try:
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=180)
            assert done.returncode == 0, done.stderr[-3000:]
            answer, session = done.stdout.split()[-2:]
            assert answer == "42"
            sessions.append(session)
        parents = []
        path = sessions[0]
        while path != "/":
            parents.append(path)
            path = os.path.dirname(path)
        private = [p for p in parents if os.path.isdir(p) and os.stat(p).st_mode & 0o077 == 0]
        assert private, f"no folder above {sessions[0]} is private: {[oct(os.stat(p).st_mode) for p in parents]}"
        # the second run's session sits beside the first one's, in the one folder of this user's
        assert os.listdir(tmp) == [f"bit-ray-{os.geteuid()}"]
        assert sessions[0] != sessions[1] and os.path.dirname(sessions[0]) == os.path.dirname(sessions[1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
