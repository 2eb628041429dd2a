"""Our TensorRT calls against NVIDIA's real Python bindings: TensorRT 11.4, TensorRT 10.16 and TensorRT-RTX 1.7.

What this proves: every TensorRT name that export/trt_engine.py, engine/trt_runner.py, engine/plan_check.py and
engine/tensorrt_library.py use exists in each of the three, or sits behind a guard (hasattr, getattr with a
default, a branch for the other library); and every method call and property assignment on the annotated
TensorRT objects (builder, network, parser, config, profile, runtime, engine, context) matches the bindings'
signatures: method names, argument counts and argument types, as mypy reads them from stubs that
pybind11-stubgen generates from the compiled modules. Enum members and module-level names are checked on the
live modules (an AST walk collects every `trt.A.B` chain).

What this does not prove: behaviour. Nothing is built, deserialized or run here: the TensorRT 10/11 bindings
load against a stand-in library that makes every call into TensorRT fail (conftest.py), so whether TensorRT
accepts our values (a profile shape, an optimization level) is for tests/export/test_trt_engine.py (TensorRT-RTX
builds) and the gpu tests. Calls on objects we do not annotate (pycuda's) and values typed Any are not checked.

A test that finds a name missing: guard it (hasattr) or use the name the bindings have. A mypy error: the call
does not match the bindings; fix the call, not the stub.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.tensorrt_api.checks import called_methods, module_chains, package_tree, run_mypy, unguarded_missing

# Misuses planted in a copy of the modules; each check must report its own, and nothing else. None feeds another:
# a misspelt method's result is Any to mypy, which would hide a misuse of that result further on.
# (check, file, original text, planted text, what the report must say on the planted line)
PLANTED = [
    (
        "mypy",
        "export/trt_engine.py",
        "config = builder.create_builder_config()",
        "config = builder.create_builder_confg()",
        '"Builder" has no attribute "create_builder_confg"',
    ),
    (
        "mypy",
        "export/trt_engine.py",
        "shape(options.opt_batch), shape(options.max_batch))",
        "shape(options.opt_batch))",
        'Missing positional argument "max" in call to "set_shape" of "IOptimizationProfile"',
    ),
    (
        "mypy",
        "export/trt_engine.py",
        "err = parser.get_error(i)",
        "err = parser.get_error(str(i))",
        'Argument 1 to "get_error" of "OnnxParser" has incompatible type "str"; expected "SupportsInt"',
    ),
    (  # RTX-only code is typed with tensorrt_rtx's classes: checked in every run
        "mypy",
        "export/trt_engine.py",
        "rtx_config.set_compute_capability(getattr(trt.ComputeCapability, cc.upper()), i)",
        "rtx_config.set_compute_capability(getattr(trt.ComputeCapability, cc.upper()))",
        'Missing positional argument "index" in call to "set_compute_capability" of "IBuilderConfig"',
    ),
    (
        "mypy",
        "engine/trt_runner.py",
        "self.context.execute_async_v3(self.stream.handle)",
        "self.context.execute_async_v4(self.stream.handle)",
        '"IExecutionContext" has no attribute "execute_async_v4"',
    ),
    (
        "names",
        "export/trt_engine.py",
        "trt.MemoryPoolType.WORKSPACE",
        "trt.MemoryPoolType.WORKSPAEC",
        "trt.MemoryPoolType.WORKSPAEC",
    ),
]
MYPY_ERROR = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+): error: (?P<message>.*)$", re.M)


def _version(bindings) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", f"import {bindings.package} as m; print(m.__version__)"],
        capture_output=True,
        text=True,
        env=bindings.env,
        timeout=120,
    )
    assert proc.returncode == 0, f"importing {bindings.package} failed:\n{proc.stderr}"
    return proc.stdout.strip()


def test_bindings_import(bindings):
    """The wheel's module loads against the stand-in libraries and is the version we asked for."""
    assert _version(bindings) == bindings.version


def test_every_tensorrt_name_exists_or_is_guarded(bindings):
    missing = unguarded_missing(module_chains(), bindings.library, bindings.package, bindings.env)
    assert not missing, f"not in {bindings.id}, and not guarded:\n" + "\n".join(c.where() for c in missing)


def test_every_call_matches_the_bindings(bindings, stubs, source_tree, mypy_cache):
    blanked = called_methods() & set(stubs.degraded)
    assert not blanked, f"the {bindings.id} stubs could not keep the signatures of methods we call: {blanked}"
    proc = run_mypy(source_tree, stubs.root, mypy_cache)
    assert proc.returncode == 0, f"mypy against {bindings.id}:\n{proc.stdout}{proc.stderr}"


def test_planted_misuses_are_caught(bindings, stubs, tmp_path, mypy_cache):
    package = package_tree(tmp_path, copy=True)
    expected = []  # (check, file, line, report)
    for check, file, original, planted, report in PLANTED:
        path = package / file
        source = path.read_text()
        assert source.count(original) == 1, f"update PLANTED: {original!r} is no longer in {file} once"
        expected.append((check, file, source[: source.index(original)].count("\n") + 1, report))
        path.write_text(source.replace(original, planted))

    proc = run_mypy(package, stubs.root, mypy_cache)
    errors = [(m["file"], int(m["line"]), m["message"]) for m in MYPY_ERROR.finditer(proc.stdout)]
    for check, file, line, report in expected:
        if check == "mypy":
            assert any(f"bit_trt/{file}" == at and line == n and report in message for at, n, message in errors), (
                f"mypy did not report {report!r} at {file}:{line}:\n{proc.stdout}"
            )
    assert len(errors) == sum(check == "mypy" for check, *_ in expected), proc.stdout

    missing = unguarded_missing(module_chains(package), bindings.library, bindings.package, bindings.env)
    reported = [(c.file, c.line, c.path) for c in missing]
    planted = [(file, line, report) for check, file, line, report in expected if check == "names"]
    assert reported == planted, f"the name check reported {reported}, planted were {planted}"
