"""Static analysers see the layout Python sees: bit_trt.engine is engine/, and so on.

setuptools maps the four top-level folders to `bit_trt.*` through package-dir, and an editable install does it
with an import hook; mypy and pyright read neither. typecheck/bit_trt/ gives them the installed layout: an
`__init__.py` and one relative link per folder (typecheck/bit_trt/engine -> ../../engine). pyproject.toml's
[tool.mypy] puts it on mypy's path and names what `mypy` checks (bit_trt and tools/); pyrightconfig.json gives it
to pyright as an extra path. Nothing at run time imports from typecheck/: it is on no sys.path, and the repository
root holds no `bit_trt` to shadow the installed package.

These tests keep the tree whole, and have mypy (pinned in constraints.txt) resolve every import between the
folders, relative (`from ..engine.errors import BitError`) or by name (tools/), over every module on disk.
Ordinary type errors and third-party libraries without stubs are no concern here.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.test_layers import FOLDERS, ROOT, TOOLS

TYPECHECK = os.path.join(ROOT, "typecheck")
PACKAGE = os.path.join(TYPECHECK, "bit_trt")

# What mypy says when it cannot place one of our modules (any other message about our imports is a type error).
_UNRESOLVED = re.compile(
    r"Cannot find implementation or library stub for module named \"(?P<missing>[\w.]+)\""
    r"|Skipping analyzing \"(?P<untyped>[\w.]+)\""
    r"|Library stubs not installed for \"(?P<stubs>[\w.]+)\""
    r"|attempted relative import beyond top-level package"
    r"|No parent module -- cannot perform relative import"
    r"|found twice under different module names"
    r"|is not a valid Python package name"
    r"|Can't find package"
)


def _package_dirs() -> dict[str, str]:
    """pyproject.toml's package-dir: {"bit_trt.engine": "engine", ...}."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-dir"]


def _ours(module: str) -> bool:
    top = module.split(".")[0]
    return top in ("bit_trt", TOOLS) or module.startswith(".")


def _modules_on_disk() -> set[str]:
    """Every module mypy must reach: bit_trt.<folder>.<...> for each .py under the four folders (subfolders
    too), and tools.<name> for tools/, as the installed package and `python -m tools.NAME` name them."""
    modules = set()
    roots = [(folder, f"bit_trt.{folder}") for folder in FOLDERS]
    if os.path.isdir(os.path.join(ROOT, TOOLS)):
        roots.append((TOOLS, TOOLS))
    for folder, package in roots:
        for top, dirs, names in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            rel = os.path.relpath(top, os.path.join(ROOT, folder))
            prefix = package if rel == "." else f"{package}.{rel.replace(os.sep, '.')}"
            for name in names:
                if name == "__init__.py":
                    modules.add(prefix)
                elif name.endswith(".py"):
                    modules.add(f"{prefix}.{name[:-3]}")
    return modules


def test_the_tree_links_every_package_folder_relatively():
    """One link per package-dir entry, relative (the checkout can move), to the folder it names; nothing else."""
    mapping = _package_dirs()
    assert sorted(mapping) == sorted(f"bit_trt.{folder}" for folder in FOLDERS)
    assert sorted(os.listdir(PACKAGE)) == sorted(["__init__.py", *(name.split(".", 1)[1] for name in mapping)])
    assert os.path.isfile(os.path.join(PACKAGE, "__init__.py")) and not os.path.islink(
        os.path.join(PACKAGE, "__init__.py")
    )
    for name, folder in mapping.items():
        link = os.path.join(PACKAGE, name.split(".", 1)[1])
        assert os.path.islink(link), f"{link} must be a link to {folder}/"
        target = os.readlink(link)
        assert not os.path.isabs(target), f"{link} -> {target}: make it relative"
        assert os.path.samefile(os.path.join(PACKAGE, target), os.path.join(ROOT, folder)), f"{link} -> {target}"


def _under_typecheck(path: str | None) -> bool:
    return bool(path) and os.path.abspath(path).startswith(TYPECHECK + os.sep)


def test_nothing_at_run_time_imports_from_the_tree():
    """From the repository root (where the CLIs, pytest and `python -m tools.NAME` run) bit_trt is the installed
    package: no module of it is loaded through the links, and typecheck/ is on no path. (Only a Python started
    inside typecheck/ would import through them: the same files under another name.)"""
    loaded = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}
    assert [name for name, path in loaded.items() if _under_typecheck(path)] == []
    code = (
        "import sys, bit_trt.engine.errors, bit_trt.export, bit_trt.bench, bit_trt.serve, tools; "
        "print(*(getattr(m, '__file__', None) for n, m in list(sys.modules.items()) if n.startswith('bit_trt.')), "
        "tools.__file__, *sys.path, sep='\\n')"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    paths = proc.stdout.splitlines()
    assert os.path.join(ROOT, "engine", "errors.py") in paths or "site-packages" in paths[0]  # editable or wheel
    assert [path for path in paths if _under_typecheck(path) or os.path.abspath(path or ".") == TYPECHECK] == []
    assert not os.path.lexists(os.path.join(ROOT, "bit_trt"))


def test_mypy_resolves_every_import_between_the_folders(tmp_path):
    """`mypy` from the repository root, configured by pyproject.toml alone, places every bit_trt and tools module
    and every relative import between the folders, and checks every module on disk."""
    report = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "--linecount-report", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    # 0: clean, 1: type errors (not this test's concern); 2: mypy could not run (a broken configuration).
    assert proc.returncode in (0, 1), output
    unresolved = []
    for line in output.splitlines():
        match = _UNRESOLVED.search(line)
        if match is None:
            continue
        module = match.group("missing") or match.group("untyped") or match.group("stubs")
        if module is None or _ours(module):
            unresolved.append(line)
    assert unresolved == [], "mypy cannot place our modules:\n" + "\n".join(unresolved)
    with open(report / "linecount.txt") as f:
        checked = {line.split()[-1] for line in f.read().splitlines()[1:]}
    missing = sorted(_modules_on_disk() - checked)
    assert missing == [], f"mypy did not check {missing}"


def test_pyright_resolves_every_import_between_the_folders():
    """pyright (not in the test extra: run where it is installed) with pyrightconfig.json: no import of ours
    unresolved, in the package, tools/ or tests/."""
    pyright = shutil.which("pyright")
    if pyright is None:
        pytest.skip("pyright is not installed here (npm install -g pyright, or pip install pyright)")
    proc = subprocess.run(
        [pyright, "--outputjson", "--pythonpath", sys.executable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = json.loads(proc.stdout)
    assert result["summary"]["filesAnalyzed"] >= len(_modules_on_disk()), result["summary"]
    unresolved = []
    for diagnostic in result["generalDiagnostics"]:
        match = re.match(r'Import "([\w.]+)" could not be resolved', diagnostic["message"])
        if diagnostic.get("rule") == "reportMissingImports" and match and _ours(match.group(1)):
            line = diagnostic["range"]["start"]["line"] + 1
            unresolved.append(f"{os.path.relpath(diagnostic['file'], ROOT)}:{line}: {diagnostic['message']}")
    assert unresolved == [], "pyright cannot place our modules:\n" + "\n".join(unresolved)
