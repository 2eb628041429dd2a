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

Prebuilt, for hosts that have neither (a container image): `python -m bit_trt.engine.ort_kernel_library DIR` builds
the library once for each x86-64 level (`-march=x86-64-v4`, `v3`, `v2`; engine/cpu_table.json) into a new folder
DIR, with a manifest (`kernels.json`) naming the kernel's source by its digest. With `$BIT_TRT_ORT_KERNELS=DIR`,
`library()` builds nothing: it loads DIR's build for the best level this CPU runs, where DIR was built from this
bit-trt's source and nothing in it, or above it, may be written by anyone but root or this user
(user_cache.installed_tree). A level build gives up `-march=native`'s tuning for this very CPU: the code is the same
C, vectorized for the level's widest vectors (docs/cpu.md, "Prebuilt for an image").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

from .cpu_host import X86_64_LEVELS, CpuHost, this_host
from .errors import BitError
from .user_cache import cache_dir, installed_tree, library_folder

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
PREBUILT_MANIFEST = "kernels.json"
PREBUILT_SCHEMA = 1
PREBUILT_ENV = "BIT_TRT_ORT_KERNELS"
PREBUILD = "python -m bit_trt.engine.ort_kernel_library DIR"
# Said wherever the host can't build: the way round it.
OR_PREBUILT = f"; or set {PREBUILT_ENV} to a set prebuilt elsewhere by {PREBUILD}"
GET_HEADER = (
    f"install Debian's or Ubuntu's libonnxruntime-dev, or set {INCLUDE_ENV} to the include/ folder of an ONNX Runtime "
    f"release archive{OR_PREBUILT}"
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
    raise BitError(
        f"no C compiler (cc, gcc or clang) to build bit-trt's ONNX Runtime kernels: apt-get install gcc{OR_PREBUILT}"
    )


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _compiler_version(cc: str) -> list[str]:
    """The first line `cc --version` prints (a list of it, empty where it prints nothing)."""
    return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[:1]


def build_key(cc: str, include: str) -> str:
    """What the built library depends on: the source, the header, the compiler and its flags, and the CPU that
    -march=native compiles for (its identity and every flag)."""
    version = _compiler_version(cc)
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
    """The path of the kernel library for this host: the prebuilt one in `$BIT_TRT_ORT_KERNELS` where that is set,
    else the one built for this host, building it first where none is kept. Raises a BitError that says what is
    missing (compiler, header, a build this CPU runs) or why it can't be kept, built or trusted."""
    environ = os.environ if environ is None else environ
    if environ.get(PREBUILT_ENV):
        return prebuilt(environ[PREBUILT_ENV])
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
        _compile(cc, include, FLAGS, tmp)
        os.chmod(tmp, 0o700)
        os.replace(tmp, path)  # atomic: a process that loaded an earlier build keeps its own copy mapped
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _compile(cc: str, include: str, flags, out: str) -> None:
    command = [cc, *flags, f"-I{include}", f'-DBIT_SOURCE_SHA256="{_digest(SOURCE)}"', SOURCE, "-o", out, "-lm"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise BitError(f"building bit-trt's ONNX Runtime kernels took over {BUILD_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        first = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[:3]
        raise BitError(f"{os.path.basename(cc)} could not build {SOURCE}: {' | '.join(first)[:500]}")


def levels(machine: str | None = None) -> dict[str, tuple[str, ...]]:
    """The levels a prebuilt set is built for on this kind of machine, best first, each with its compiler flags:
    the x86-64 levels on x86-64; elsewhere one build for the compiler's default target, named after the machine."""
    machine = machine or platform.machine()
    native = FLAGS.index("-march=native")
    if machine in ("x86_64", "AMD64"):
        return {level: FLAGS[:native] + (f"-march={level}",) + FLAGS[native + 1 :] for level in X86_64_LEVELS}
    return {machine: FLAGS[:native] + FLAGS[native + 1 :]}


def build_prebuilt(folder: str, chosen: list[str] | None = None, environ=None) -> dict:
    """Build the library for each level (`chosen`, default every level of this kind of machine) into the new folder
    `folder`, with its manifest, and return the manifest. Built aside and renamed into place: a failed build leaves
    nothing. Each build's folder is named after its level and the digest of its bytes, so that a gate verdict kept
    for one build (engine/compute_gate.py) is never taken for another."""
    cc = compiler(environ)
    include = header_folder(environ)
    table = levels()
    chosen = chosen or list(table)
    unknown = [level for level in chosen if level not in table]
    if unknown:
        raise BitError(f"no level {', '.join(unknown)} on {platform.machine()}: the levels are {', '.join(table)}")
    folder = os.path.abspath(folder)
    if os.path.lexists(folder):
        raise BitError(f"{folder} exists: a prebuilt set goes into a new folder")
    parent = os.path.dirname(folder)
    if not os.path.isdir(parent):
        raise BitError(f"no folder {parent} to build {os.path.basename(folder)} in")
    version = _compiler_version(cc)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}-")
    try:
        builds = {}
        for level in chosen:
            out = os.path.join(staging, LIBRARY_NAME)
            _compile(cc, include, table[level], out)
            name = f"{level}-{_digest(out)[:24]}"
            os.mkdir(os.path.join(staging, name))
            os.replace(out, os.path.join(staging, name, LIBRARY_NAME))
            builds[level] = name
        manifest = {
            "schema": PREBUILT_SCHEMA,
            "source_sha256": _digest(SOURCE),
            "header_sha256": _digest(os.path.join(include, HEADER)),
            "compiler": version[0] if version else os.path.basename(cc),
            "flags": {level: list(table[level]) for level in chosen},
            "builds": builds,
        }
        with open(os.path.join(staging, PREBUILT_MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        # Readable by every user of the host, writable by its owner alone: the rule prebuilt() holds it to.
        for top, _, files in os.walk(staging):
            os.chmod(top, 0o755)
            for name in files:
                os.chmod(os.path.join(top, name), 0o755 if name == LIBRARY_NAME else 0o644)
        os.rename(staging, folder)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return manifest


def prebuilt(folder: str, cpu: CpuHost | None = None) -> str:
    """The library in the prebuilt set `folder` (build_prebuilt's) for the best level this CPU runs; raises a
    BitError that says why none may be loaded: not there, not to be trusted, built from another source of the
    kernel, or no level this CPU runs."""
    level, name = next(iter(runnable_builds(folder, cpu).items()))
    return build_path(folder, level, name)


def runnable_builds(folder: str, cpu: CpuHost | None = None) -> dict[str, str]:
    """Level -> build folder name of every build in the prebuilt set `folder` that this CPU runs, best first (at
    least one), once the set is vetted; raises a BitError as prebuilt() says."""
    where = f"{PREBUILT_ENV}={folder}"
    if not os.path.isdir(folder):
        raise BitError(f"{where} is not a folder; build one with {PREBUILD}")
    why = installed_tree(os.path.abspath(folder))
    if why:
        raise BitError(f"{where} can't be trusted: {why}")
    try:
        with open(os.path.join(folder, PREBUILT_MANIFEST), encoding="utf-8") as f:
            manifest = json.loads(f.read(1 << 20))
        builds = dict(manifest["builds"])
        source = manifest["source_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BitError(f"{where} holds no readable {PREBUILT_MANIFEST} ({exc}); build it with {PREBUILD}") from exc
    if source != _digest(SOURCE):
        raise BitError(
            f"{where} was built from another source of bit-trt's kernel (another bit-trt version): build it again "
            f"with {PREBUILD}"
        )
    cpu = cpu or this_host()
    built = [level for level in levels() if level in builds]  # best first
    runs = [level for level in built if level not in X86_64_LEVELS or not cpu.lacks_for(level)]
    if not runs:
        lacks = ""
        if built and built[-1] in X86_64_LEVELS:
            lacks = f": this CPU lacks {', '.join(cpu.lacks_for(built[-1]))}"
        raise BitError(f"{where} has no build this CPU runs (it has {', '.join(builds) or 'none'}){lacks}")
    return {level: builds[level] for level in runs}


def build_path(folder: str, level: str, name) -> str:
    """The library of the build `name` the manifest of the vetted set `folder` gives for `level`; raises a BitError
    where that is not a build folder of the set's own, or holds no library."""
    where = f"{PREBUILT_ENV}={folder}"
    # The folder build_prebuilt names, never a path: what is loaded stays inside the folder vetted above.
    if not (isinstance(name, str) and re.fullmatch(rf"{re.escape(level)}-[0-9a-f]{{24}}", name)):
        raise BitError(f"{where}: {PREBUILT_MANIFEST} names {name!r} for {level}, not a build folder of its own")
    path = os.path.join(folder, name, LIBRARY_NAME)
    if not os.path.isfile(path):
        raise BitError(f"{where} names {name}/{LIBRARY_NAME}, which is not there; build it again")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bit_trt.engine.ort_kernel_library",
        description="Build bit-trt's ONNX Runtime kernels for each CPU level into a new folder, for hosts without a "
        f"C compiler or ONNX Runtime's header (a container image); run with {PREBUILT_ENV}=DIR.",
    )
    parser.add_argument("folder", help="the folder to make (it must not exist)")
    parser.add_argument(
        "--level", action="append", help=f"a level to build (default: every one: {', '.join(levels())})"
    )
    args = parser.parse_args(argv)
    try:
        manifest = build_prebuilt(args.folder, args.level)
    except BitError as exc:
        print(f"ort_kernel_library: error: {exc}", file=sys.stderr)
        return 1
    for level, name in manifest["builds"].items():
        print(f"{level}: {os.path.join(args.folder, name, LIBRARY_NAME)}")
    print(f"run with {PREBUILT_ENV}={os.path.abspath(args.folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
