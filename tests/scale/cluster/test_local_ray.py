"""`--ray local`: a one-node Ray started by bit-serve or bit-classify keeps its session (logs, sockets) where no
other local user can reach it: Ray makes its own folder 0777, so it goes inside a 0700 folder of ours, one per user,
so that runs leave no new folder in $TMPDIR each. Its authentication token is there too, 0600: Ray's own choice,
~/.ray/auth_token under the umask (0644), is readable by any user who can enter the home folder."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import os, ray
from bit_trt.engine.errors import BitError
from bit_trt.scale.ray_cluster import connect
connect("local")
session = ray._private.worker._global_node.get_session_dir_path()
print(ray.get(ray.put(21)) * 2)
print(session)
ray.shutdown()
try:  # another cluster, from the same process: the local run's token is not presented to it
    connect("127.0.0.1:9")
except BitError:
    pass
print("RAY_AUTH_TOKEN_PATH" in os.environ)
"""


TOKEN_SCRIPT = """
import os, subprocess, sys, ray
from bit_trt.scale.ray_cluster import connect
connect("local")
print(ray.get(ray.put(21)) * 2)
probe = "import ray; ray.init(address=%r, log_to_driver=False)" % ray.get_runtime_context().gcs_address
with open(os.path.expanduser("~/.ray/auth_token")) as f:
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN_PATH"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=f.read().strip())
other = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=120)
print("admitted" if other.returncode == 0 else "refused" if b"InvalidAuthToken" in other.stderr else "failed")
print(os.environ.get("RAY_AUTH_TOKEN_PATH", "none"))
ray.shutdown()
"""


@pytest.fixture(autouse=True)
def _only_in_the_namespace():
    """Ray listens on every interface: these start clusters only inside the test's own network namespace."""
    if os.environ.get("BIT_TRT_RAY_NETNS") != "1":
        pytest.fail("run through tests/scale/test_ray_cluster.py, which gives the cluster its own network namespace")


RAY_SETTINGS = ("RAY_TMPDIR", "RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture
def as_a_user():
    """(TMPDIR, HOME, environment) as a user runs it: no Ray settings (the cluster suite's token among them), umask
    022, a home of its own. A short $TMPDIR: Ray's socket paths under it must fit AF_UNIX's 107 bytes."""
    tmp = tempfile.mkdtemp(prefix="bit-t-", dir="/tmp")
    home = tempfile.mkdtemp(prefix="bit-h-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in RAY_SETTINGS}
    old_umask = os.umask(0o022)
    try:
        yield tmp, home, dict(env, TMPDIR=tmp, HOME=home)
    finally:
        os.umask(old_umask)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def _home_files(home: str) -> dict:
    return {
        os.path.relpath(os.path.join(top, name), home): oct(os.lstat(os.path.join(top, name)).st_mode & 0o777)
        for top, dirs, files in os.walk(home)
        for name in dirs + files
    }


def test_a_local_ray_session_is_private_to_its_user(as_a_user):
    tmp, home, env = as_a_user
    sessions = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        answer, session, token_named = done.stdout.split()[-3:]
        assert (answer, token_named) == ("42", "False")
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
    # Ray wrote no token of its own (0644 under this umask) into the home folder: one 0600 token beside the sessions
    assert _home_files(home) == {}
    token = os.path.join(tmp, f"bit-ray-{os.geteuid()}", "auth_token")
    assert oct(os.lstat(token).st_mode & 0o777) == "0o600"


def test_a_token_others_can_read_does_not_open_a_local_ray(as_a_user):
    """A world-readable ~/.ray/auth_token (Ray's own, made under a 022 umask, or planted) is not the local cluster's
    token: a client that presents it is refused, and the cluster runs on the private 0600 one."""
    tmp, home, env = as_a_user
    os.mkdir(os.path.join(home, ".ray"), 0o755)
    fd = os.open(os.path.join(home, ".ray", "auth_token"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, os.urandom(32).hex().encode())
    os.close(fd)
    done = subprocess.run([sys.executable, "-c", TOKEN_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answer, verdict, token = done.stdout.split()[-3:]
    assert (answer, verdict) == ("42", "refused")
    assert token == os.path.join(tmp, f"bit-ray-{os.geteuid()}", "auth_token")
    assert oct(os.lstat(token).st_mode & 0o777) == "0o600"
