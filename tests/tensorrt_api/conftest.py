"""NVIDIA's compiled TensorRT bindings, importable on a host without TensorRT, and stubs generated from them.

A bindings wheel (`tensorrt-cu13-bindings`, ~1.3 MB) is the real pybind11 module; it only needs TensorRT's
libraries to *load*. A small C library exporting the names it imports from them (each returning 0) stands in
for those libraries: the module then imports and shows every class, method, signature and enum member, while
anything that would reach TensorRT (creating a Builder) fails. The names and sonames are read from the
wheel's module (nm, readelf), so the stand-in follows the wheel.

Wheels are downloaded once into $BIT_TRT_CACHE/tensorrt-bindings (default ~/.cache/bit-trt/...) and reused;
each is extracted into its own folder (two wheels install the same module, so neither goes into the venv).
The bindings are only ever imported in subprocesses: LD_LIBRARY_PATH must be set when a process starts.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bit_trt.engine.user_cache import cache_dir
from tests.tensorrt_api.checks import package_tree, repair_stub

# Read at import: tests later point BIT_TRT_CACHE at temporary folders, and the wheels should outlive a run.
CACHE = Path(cache_dir("tensorrt-bindings"))
# The newest TensorRT 11 and TensorRT 10 bindings; TensorRT-RTX is installed (the rtx extra) and imports for real.
WHEELS = {
    "tensorrt-11.4": "tensorrt-cu13-bindings==11.4.0.106",
    "tensorrt-10.16": "tensorrt-cu12-bindings==10.16.1.11",
}
RTX = "tensorrt_rtx-1.7"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
# pip's words for "could not reach the index": a skip, not a failure. Anything else pip says is a failure.
OFFLINE = re.compile(
    r"connection|network is unreachable|proxy|timed out|name resolution|max retries|could not fetch url", re.I
)


@dataclass(frozen=True)
class Bindings:
    id: str
    library: str  # "tensorrt" or "tensorrt_rtx": the branches of our code it runs
    package: str  # what a subprocess imports: tensorrt_bindings (what `tensorrt` re-exports), tensorrt_rtx
    version: str  # the version it must report
    env: dict[str, str] = field(repr=False)  # for a subprocess that imports it (all of os.environ)


@dataclass(frozen=True)
class Stubs:
    root: Path  # a MYPYPATH entry holding tensorrt/ (these bindings) and tensorrt_rtx/ (TensorRT-RTX's)
    degraded: tuple[str, ...]  # methods whose signatures the stubs could only keep as (*args, **kwargs)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def _download(requirement: str) -> Path:
    """The wheel for this interpreter and machine, from the cache or (once) from PyPI."""
    name, version = requirement.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-cp{PY.replace('.', '')}-*{platform.machine()}.whl"
    wheels = CACHE / "wheels"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        proc = _run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", PY]
            + ["--disable-pip-version-check", "--retries", "1", "--timeout", "20", "--dest", tmp, requirement]
        )
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            offline = [line.strip() for line in output.splitlines() if OFFLINE.search(line)]
            if offline:
                pytest.skip(f"cannot download {requirement}: PyPI is unreachable ({offline[-1][:200]})")
            pytest.fail(f"pip download {requirement} failed:\n{output}")
        (wheel,) = Path(tmp).glob("*.whl")
        os.replace(wheel, wheels / wheel.name)  # atomic: a concurrent run sees the whole wheel or none
    return wheels / wheel.name


def _extract(wheel: Path) -> Path:
    target = CACHE / wheel.name.removesuffix(".whl")
    if not target.is_dir():
        tmp = tempfile.mkdtemp(dir=CACHE)
        zipfile.ZipFile(wheel).extractall(tmp)
        try:
            os.replace(tmp, target)  # atomic, like the download
        except OSError:  # a concurrent run got there first, with the same files
            shutil.rmtree(tmp)
    return target


def _stand_in_libraries(module: Path, out: Path) -> None:
    """Compile one C library exporting the names `module` imports from TensorRT, under each of TensorRT's
    sonames it links (its NEEDED libnv* entries: libnvinfer, libnvinfer_plugin, libnvonnxparser)."""
    cc = os.environ.get("CC", "cc")
    for tool in (cc, "nm", "readelf"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs a C compiler and binutils to stand in for TensorRT's libraries: no {tool!r} here")
    undefined = _run(["nm", "-D", "--undefined-only", str(module)]).stdout.split("\n")
    this_process = ctypes.CDLL(None)  # Python's C API and libc: already here when the module loads
    names = sorted(
        fields[1]
        for fields in (line.split() for line in undefined)
        if len(fields) == 2 and fields[0] == "U" and "@" not in fields[1] and not hasattr(this_process, fields[1])
    )
    needed = re.findall(r"\(NEEDED\).*\[(libnv[^\]]+)\]", _run(["readelf", "-d", str(module)]).stdout)
    assert names and needed, f"{module} imports nothing from TensorRT's libraries: not a TensorRT binding?"
    source = out / "tensorrt_stand_in.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in names))
    for soname in needed:
        proc = _run([cc, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(out / soname), str(source)])
        assert proc.returncode == 0, f"compiling the stand-in {soname} failed:\n{proc.stderr}"


def _wheel_bindings(id: str, requirement: str, out: Path) -> Bindings:
    if sys.platform != "linux":
        pytest.skip("standing in for TensorRT's libraries takes an ELF loader (Linux)")
    root = _extract(_download(requirement))
    (package,) = next(root.glob("*.dist-info/top_level.txt")).read_text().split()
    (module,) = (root / package).glob("*.so")
    _stand_in_libraries(module, out)
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(out), os.environ.get("LD_LIBRARY_PATH")])),
    }
    return Bindings(id, "tensorrt", package, requirement.split("==")[1], env)


def _rtx_bindings() -> Bindings:
    if importlib.util.find_spec("tensorrt_rtx") is None:  # finds it without importing it
        pytest.skip("TensorRT-RTX is not installed (pip install -c constraints.txt -e '.[rtx]')")
    return Bindings(RTX, "tensorrt_rtx", "tensorrt_rtx", importlib.metadata.version("tensorrt-rtx"), dict(os.environ))


@pytest.fixture(scope="session", params=[*WHEELS, RTX])
def bindings(request, tmp_path_factory) -> Bindings:
    if request.param == RTX:
        return _rtx_bindings()
    return _wheel_bindings(request.param, WHEELS[request.param], tmp_path_factory.mktemp("stand-in"))


def _stub_text(bindings: Bindings, package: str, out: Path) -> tuple[str, list[str]]:
    """pybind11-stubgen on the compiled module behind `bindings.package`, repaired into the stub of `package`."""
    proc = _run(
        [sys.executable, "-c", f"import {bindings.package} as m; print(m.Runtime.__module__)"], env=bindings.env
    )
    assert proc.returncode == 0, f"importing {bindings.package} failed:\n{proc.stderr}"
    module = proc.stdout.strip()  # tensorrt_bindings.tensorrt, tensorrt_rtx_bindings.tensorrt_rtx
    proc = _run(
        [sys.executable, "-m", "pybind11_stubgen", "--print-invalid-expressions-as-is", "-o", str(out), module],
        env=bindings.env,
    )
    assert proc.returncode == 0, f"pybind11-stubgen {module} failed:\n{proc.stderr}"
    base = out.joinpath(*module.split("."))
    stub = base.with_suffix(".pyi") if base.with_suffix(".pyi").exists() else base / "__init__.pyi"
    return repair_stub(stub.read_text(), module, package)


@pytest.fixture(scope="session")
def rtx_stub(tmp_path_factory) -> str:
    """TensorRT-RTX's stub, as package tensorrt_rtx: every stub root has it, for our RTX-only code."""
    return _stub_text(_rtx_bindings(), "tensorrt_rtx", tmp_path_factory.mktemp("stubgen-rtx"))[0]


@pytest.fixture(scope="session")
def stubs(bindings, rtx_stub, tmp_path_factory) -> Stubs:
    root = tmp_path_factory.mktemp(f"stubs-{bindings.id}")
    text, degraded = _stub_text(bindings, "tensorrt", tmp_path_factory.mktemp(f"stubgen-{bindings.id}"))
    for package, content in (("tensorrt", text), ("tensorrt_rtx", rtx_stub)):
        (root / package).mkdir()
        (root / package / "__init__.pyi").write_text(content)
    return Stubs(root, tuple(degraded))


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory) -> Path:
    return package_tree(tmp_path_factory.mktemp("src"), copy=False)


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory) -> Path:
    """One mypy cache for the session: numpy and the standard library are analysed once, not per run."""
    return tmp_path_factory.mktemp("mypy-cache")
