"""pycuda on a GPU host with no network: the carried source archive, built where the CUDA headers and driver are.

pycuda ships only as a source archive. `fetch` (on a machine with PyPI) puts it and the pure-Python packages
it imports into one folder, `.gpu_proof/` in the repo, which travels to the GPU host with the working tree.
`build` (on the GPU host) compiles it in place, in parallel, against that host's CUDA toolkit and driver.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tarfile

from bit_trt.engine.errors import BitError

PYCUDA = "pycuda==2026.1"
# What pycuda imports at run time that a plain CUDA Python image may lack: pytools (and its siphash24,
# a compiled wheel), platformdirs and mako. Wheels for the GPU host's Python 3.12.
RUNTIME_WHEELS = ("pytools==2026.1.1", "siphash24", "platformdirs", "mako", "typing-extensions")
BUILD_TIMEOUT_S = 300  # about 30 s on 16 cores, 2 minutes on 2; the proof must leave time for its tests
CARRIED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".gpu_proof")


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BitError(f"pip {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")


def fetch(folder: str = CARRIED, python_versions: tuple[str, ...] = ("3.12", "3.11")) -> list[str]:
    """Download pycuda's source archive and its run-time wheels into `folder` (needs PyPI).

    The lent GPU hosts run Python 3.12; 3.11 (ours) is fetched too, so the same folder serves either."""
    os.makedirs(folder, exist_ok=True)
    # --no-build-isolation: pip reads the archive's metadata without installing its build requirements
    _pip("download", "--no-deps", "--no-binary=:all:", "--no-build-isolation", "-d", folder, PYCUDA)
    platform = ["--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
    for version in python_versions:
        _pip(
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            version,
            "--implementation",
            "cp",
            *platform,
            "-d",
            folder,
            *RUNTIME_WHEELS,
        )
    return sorted(os.listdir(folder))


def installable(wheels: list[str]) -> list[str]:
    """The wheels this interpreter can install (the folder holds compiled ones for several Pythons)."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    supported = set(sys_tags())
    return [w for w in wheels if supported & set(parse_wheel_filename(os.path.basename(w))[3])]


def carried_files(folder: str = CARRIED) -> tuple[str, list[str]]:
    """(pycuda's archive, the wheels), or a BitError that says how to get them."""
    archives = sorted(glob.glob(os.path.join(folder, "pycuda-*.tar.gz")))
    wheels = sorted(glob.glob(os.path.join(folder, "*.whl")))
    if not archives:
        raise BitError(
            f"no pycuda source archive in {folder}: run `python -m tools.gpu_proof --fetch` on a machine "
            "with PyPI, then carry .gpu_proof to the GPU host"
        )
    return archives[-1], wheels


def cuda_root() -> str:
    """The CUDA toolkit with cuda.h: CUDA_HOME, /usr/local/cuda, or the real nvcc's parent (PATH's may be a wrapper)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in candidates:
        if root and os.path.isfile(os.path.join(root, "include", "cuda.h")):
            return root
    raise BitError(f"no CUDA toolkit headers (include/cuda.h) in any of {[c for c in candidates if c]}")


def driver_library_dir(work: str) -> str:
    """A folder with `libcuda.so` to link against: the toolkit's stub, or a link to the driver's libcuda.so.1."""
    root = cuda_root()
    for folder in (os.path.join(root, "lib64", "stubs"), os.path.join(root, "targets", "x86_64-linux", "lib", "stubs")):
        if os.path.isfile(os.path.join(folder, "libcuda.so")):
            return folder
    proc = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True)
    found = [line.rsplit("=> ", 1)[-1].strip() for line in proc.stdout.splitlines() if "libcuda.so.1 " in line]
    found += glob.glob("/usr/local/nvidia/lib64/libcuda.so.1") + glob.glob("/usr/lib/x86_64-linux-gnu/libcuda.so.1")
    if not found:
        raise BitError("no libcuda.so.1 (the NVIDIA driver's library) on this host")
    folder = os.path.join(work, "libcuda")
    os.makedirs(folder, exist_ok=True)
    link = os.path.join(folder, "libcuda.so")
    if not os.path.lexists(link):
        os.symlink(found[0], link)
    return folder


def build(work: str, folder: str = CARRIED, jobs: int | None = None) -> list[str]:
    """Build pycuda in place under `work`; returns the sys.path entries that make it and its wheels importable."""
    archive, wheels = carried_files(folder)
    site = os.path.join(work, "site")
    wheels = installable(wheels)
    if wheels:
        _pip("install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade", "--target", site, *wheels)
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        source = os.path.join(work, top)
        if not os.path.isdir(source):
            tar.extractall(work, filter="data")
    root = cuda_root()
    curand = os.path.isfile(os.path.join(root, "include", "curand.h"))
    configure = [
        sys.executable,
        "configure.py",
        f"--cuda-root={root}",
        f"--cudadrv-lib-dir={driver_library_dir(work)}",
        f"--cudart-lib-dir={os.path.join(root, 'lib64')}",
    ]
    if not curand:
        configure.append("--no-cuda-enable-curand")  # the wheels-based toolkits often lack curand.h
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([site, os.environ.get("PYTHONPATH", "")])}
    for step in (configure, [sys.executable, "setup.py", "build_ext", "--inplace", "-j", str(jobs or os.cpu_count())]):
        try:
            proc = subprocess.run(step, cwd=source, capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise BitError(f"building pycuda took over {BUILD_TIMEOUT_S} s at `{' '.join(step[1:3])}`") from exc
        if proc.returncode != 0:
            raise BitError(f"building pycuda failed at `{' '.join(step[1:3])}`: {(proc.stderr or proc.stdout)[-1500:]}")
    return [source, site]
