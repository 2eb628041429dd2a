"""The tests' side environments (.venv-serve, .venv-kserve, .venv-ort-oldest): a venv of their own, pinned by their
own constraints file, built by a session fixture when missing or when the files it was built from changed (a stamp
in the environment holds their hash), one builder at a time (pytest-xdist).

Where pip cannot reach an index the tests that need the environment skip and say so; any other failure of the
build fails them, naming pip's first error and the free disk, because a full disk and a broken pin both end
pip's run with exit status 1 and nothing else in a quiet (-q) log.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what pip prints when it cannot reach an index (urllib3's and the resolver's words)
NO_NETWORK = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectTimeout",
    "Could not fetch URL",
    "ProxyError",
)


def stamp(files: Sequence[str]) -> str:
    """The hash of the files (relative to the repository root) an environment is built from."""
    digest = hashlib.sha256()
    for name in files:
        with open(os.path.join(ROOT, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()


def free_gib(path: str) -> float:
    return shutil.disk_usage(path).free / 2**30


def build_failure(step: Sequence[str], proc: subprocess.CompletedProcess, where: str) -> tuple[bool, str]:
    """(whether pip could not reach an index, one line naming the step, pip's first error and the free disk)."""
    output = (proc.stdout or "") + (proc.stderr or "")
    errors = [line.strip() for line in output.splitlines() if line.startswith("ERROR")]
    if not errors:  # a traceback (OSError: [Errno 28] ... ends it), or nothing at all
        errors = [line.strip() for line in output.splitlines() if line.strip() and not line.startswith("WARNING")]
    offline = any(sign in output for sign in NO_NETWORK)
    message = errors[0] if errors else f"exit status {proc.returncode}, no message"
    if len(errors) > 1 and not offline:
        message += f" ... {errors[-1]}"
    command = " ".join(os.path.basename(part) if i == 0 else part for i, part in enumerate(step))
    return offline, f"`{command}` failed: {message[:400]} ({free_gib(where):.1f} GiB free on {where})"


def side_venv(venv: str, env_var: str, stamped: Sequence[str], installs: Sequence[Sequence[str]], timeout_s: int):
    """The Python of the environment at `venv`: $env_var's if set, else built or refreshed here by running each of
    `installs` (pip arguments after `pip install -q`) from the repository root. Skips where no index answers;
    fails, in one line, on any other failed step."""
    if os.environ.get(env_var):
        python = os.environ[env_var]
        assert os.path.exists(python), f"{env_var}={python} does not exist"
        return python
    python = os.path.join(venv, "bin", "python")
    stamp_path = os.path.join(venv, ".bit-stamp")
    os.makedirs(venv, exist_ok=True)
    with open(os.path.join(venv, ".build-lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = stamp(stamped)
        current = open(stamp_path).read().strip() if os.path.exists(stamp_path) else None
        if os.path.exists(python) and current == wanted:
            return python
        steps = [[python, "-m", "pip", "install", "-q", *args] for args in installs]
        if not os.path.exists(python):
            steps.insert(0, [sys.executable, "-m", "venv", venv])
        for step in steps:
            try:
                proc = subprocess.run(step, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pytest.fail(f"building {os.path.basename(venv)}: `{' '.join(step[1:])}` took over {timeout_s} s")
            if proc.returncode != 0:
                offline, line = build_failure(step, proc, venv)
                (pytest.skip if offline else pytest.fail)(f"could not build {os.path.basename(venv)}: {line}")
        with open(stamp_path, "w") as f:
            f.write(wanted + "\n")
    return python
