"""A step measured in a process of its own, so that its wall time and peak RSS are its own, not the parent's.

The parent runs `python -m tools.<script> --child ARG...`; the script's main hands those arguments to
`child_main`, which calls the step and prints its result as one JSON line for `run_child` to read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

from tools import REPO


def run_child(module: str, *args) -> tuple[dict | None, subprocess.CompletedProcess]:
    """(the child's JSON result, or None when it failed; the finished process, for its stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", module, "--child", *map(str, args)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return None, proc
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


def child_main(argv: list[str], step: Callable, *casts: Callable) -> bool:
    """When argv is `--child ARG...`, run `step` on the args (each through its cast), print its result; True then."""
    if argv[:1] != ["--child"]:
        return False
    print(json.dumps(step(*[cast(arg) for cast, arg in zip(casts, argv[1:], strict=True)])))
    return True
