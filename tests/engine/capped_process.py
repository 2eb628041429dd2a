"""A Python snippet run in a fresh process under oneDNN's ISA cap: OpenVINO reads ONEDNN_MAX_CPU_ISA once, when its
CPU plugin starts, so a cap set inside a test process that already ran OpenVINO would change nothing."""

import json
import os
import subprocess
import sys

import pytest

from bit_trt.engine.cpu_host import this_host


def run_capped(snippet: str, cap: str, *args) -> tuple[object, dict]:
    """(the JSON the snippet printed last, the environment it ran in) for `snippet` run with `args` under
    ONEDNN_MAX_CPU_ISA=`cap`; skips the test on a CPU without AVX-512, which no cap below AMX can emulate."""
    if "avx512f" not in this_host().flags:
        pytest.skip("the cap makes an AVX-512 CPU run as an older one: this CPU has no AVX-512")
    environ = {**os.environ, "ONEDNN_MAX_CPU_ISA": cap}
    done = subprocess.run(
        [sys.executable, "-c", snippet, *map(str, args)], env=environ, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1]), environ
