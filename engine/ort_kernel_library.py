"""bit-trt's CPU kernels for ONNX Runtime (engine/cpu_kernels/*.c): built for this host, kept, and found for a session.

ONNX Runtime loads custom operators from a shared library through its C API. Ours is compiled here, on the host that
runs it, with `-O3 -march=native`, so its loops use whatever vector width this CPU has. Building needs:

- a C compiler: `$CC`, else `cc`, `gcc` or `clang` on the PATH;
- ONNX Runtime's C API header, `onnxruntime_c_api.h`: in `$BIT_TRT_ORT_INCLUDE`, else `/usr/include/onnxruntime` or
  `/usr/local/include/onnxruntime` (Debian 13's and Ubuntu's `libonnxruntime-dev`; the `include/` folder of ONNX
  Runtime's release archives). The onnxruntime wheel ships the library without it. Any header of API version 17 or
  later serves: the kernel asks the runtime for version 17, and ONNX Runtime keeps old API versions working.

Where either is missing, `library()` raises a BitError that says which and how to get it; the ONNX Runtime runner
then runs the stock graph and says why (engine/ort_group_norm.py).

The built library is kept in the user cache, keyed by the source, the header's digest, the compiler and the CPU, and
is loaded only from a folder that this user alone may write to (user_cache.library_folder): a library is code this
process runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile

from .cpu_host import this_host
from .errors import BitError
from .user_cache import cache_dir, library_folder

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_kernels", "group_norm_quantize.c")
HEADER = "onnxruntime_c_api.h"
INCLUDE_ENV = "BIT_TRT_ORT_INCLUDE"
INCLUDE_FOLDERS = ("/usr/include/onnxruntime", "/usr/local/include/onnxruntime")
LIBRARY_NAME = "libbit_trt_ort_kernels.so"
# -ffp-contract=off: no multiply-add fused into one rounding, on any compiler. The residual sum must be bitwise
# DequantizeLinear then Add; GCC's -std=c11 already keeps them apart, clang fuses them unless told (its sums then
# differed from ORT's).
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared", "-std=c11", "-Wall", "-Werror")
BUILD_TIMEOUT_S = 120
GET_HEADER = (
    f"install Debian's or Ubuntu's libonnxruntime-dev, or set {INCLUDE_ENV} to the include/ folder of an ONNX Runtime "
    "release archive"
)


def header_folder(environ=None) -> str:
    """The folder holding onnxruntime_c_api.h; raises a BitError that says where it looked and how to get it."""
    environ = os.environ if environ is None else environ
    named = environ.get(INCLUDE_ENV, "")
    if named:
        if os.path.isfile(os.path.join(named, HEADER)):
            return named
        raise BitError(f"{INCLUDE_ENV}={named} holds no {HEADER}")
    for folder in INCLUDE_FOLDERS:
        if os.path.isfile(os.path.join(folder, HEADER)):
            return folder
    raise BitError(f"no {HEADER} (ONNX Runtime's C API header) in {' or '.join(INCLUDE_FOLDERS)}: {GET_HEADER}")


def compiler(environ=None) -> str:
    environ = os.environ if environ is None else environ
    for name in (environ.get("CC", ""), "cc", "gcc", "clang"):
        found = shutil.which(name) if name else None
        if found:
            return found
    raise BitError("no C compiler (cc, gcc or clang) to build bit-trt's ONNX Runtime kernels: apt-get install gcc")


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build_key(cc: str, include: str) -> str:
    """What the built library depends on: the source, the header, the compiler and its flags, and the CPU that
    -march=native compiles for (its identity and every flag)."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[:1]
    cpu = this_host()
    parts = [
        _digest(SOURCE),
        _digest(os.path.join(include, HEADER)),
        version,
        FLAGS,
        [cpu.vendor, cpu.family, cpu.model, cpu.name, sorted(cpu.flags)],
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def library(environ=None) -> str:
    """The path of the kernel library built for this host, building it first where none is kept; raises a BitError
    that says what is missing (compiler, header) or why it can't be kept or built."""
    cc = compiler(environ)
    include = header_folder(environ)
    folder = cache_dir("ort-kernels", build_key(cc, include))
    path = os.path.join(folder, LIBRARY_NAME)
    why = library_folder(folder, cache_dir())
    if why:
        raise BitError(f"bit-trt's ONNX Runtime kernels can't be kept: {why}")
    if not os.path.isfile(path):
        _build(cc, include, folder, path)
    return path


def _build(cc: str, include: str, folder: str, path: str) -> None:
    """Compile into a temporary file in `folder`, then rename it into place: another process building the same key
    at once finds either no library or a whole one."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".build-", suffix=".so")
    os.close(fd)
    try:
        command = [cc, *FLAGS, f"-I{include}", f'-DBIT_SOURCE_SHA256="{_digest(SOURCE)}"', SOURCE, "-o", tmp, "-lm"]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise BitError(f"building bit-trt's ONNX Runtime kernels took over {BUILD_TIMEOUT_S} s") from exc
        if proc.returncode != 0:
            first = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[:3]
            raise BitError(f"{os.path.basename(cc)} could not build {SOURCE}: {' | '.join(first)[:500]}")
        os.chmod(tmp, 0o700)
        os.replace(tmp, path)  # atomic: a process that loaded an earlier build keeps its own copy mapped
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
