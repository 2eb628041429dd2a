"""The architecture, as rules a change cannot break silently.

- engine/ is the core: it imports none of export/, bench/, serve/ or scale/ (a server embeds it without them).
  Its ways back are by name: engine/backends.py's RUNNERS table loads the `tf` reference from export/, and
  bit-classify hands a command line with --ray to scale/'s bulk classification (Ray is no part of the core).
- scale/ (Ray) stands on engine/, and on serve/'s request handling; never on export/ or bench/.
- export/ imports neither bench/ nor serve/.
- bench/ (bit-bench) measures a bundle: it imports engine/ (and serve/'s model names), never the exporter.
- serve/ stands on engine/ alone: its environment (numpy < 2 for PyTriton) has no TensorFlow to export with.
- Every import between the three folders resolves on disk as it does at run time, so static tools
  (pyright, IDEs, dependency graphs) follow the same arrows as Python.
- The installed package holds only what users run: maintainers' scripts live in tools/ (not installed),
  and nothing in the package imports `tools` or `tests`, which a wheel does not have. tools/ imports the
  package by its installed name (`bit_trt.`), and its own scripts as `tools.`.
- Outside engine/, a Classifier is used through its public surface: nobody reaches through `.runner`.
- Memory accounting has one owner (engine/memory.py): ru_maxrss is KiB on Linux, and a second
  reader is a second chance to get the unit wrong.
"""

import ast
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("engine", "export", "bench", "serve", "scale")
TOOLS = "tools"  # maintainers' scripts: importable from the repo root, not installed
NOT_INSTALLED = ("tests", TOOLS)
FORBIDDEN = {
    "engine": ("export", "bench", "serve", "scale"),
    "export": ("bench", "serve"),
    "bench": ("export",),
    "serve": ("export", "bench"),
    "scale": ("export", "bench"),
}


def _sources(folder):
    for name in sorted(os.listdir(os.path.join(ROOT, folder))):
        if name.endswith(".py"):
            yield os.path.join(ROOT, folder, name)


def _all_sources(folder):
    """Every .py file under folder, subfolders too (serve/triton_python/ travels in the wheel as well)."""
    for top, dirs, names in sorted(os.walk(os.path.join(ROOT, folder))):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.join(top, name)


def _imports(path):
    """(absolute module imported, line) for every import statement in the file, relative ones resolved."""
    folder = os.path.basename(os.path.dirname(path))
    package = ["bit_trt", folder]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield module, node.lineno
            for alias in node.names:  # `from ..engine import compare` imports a submodule too
                yield f"{module}.{alias.name}", node.lineno


def _on_disk(module: str) -> str | None:
    """The file a bit_trt or tools module lives in, by the repository's layout (bit_trt.X.y -> X/y.py,
    tools.y -> tools/y.py)."""
    if module == TOOLS or module.startswith(f"{TOOLS}."):
        parts = module.split(".")
    else:
        parts = module.split(".")[1:]
        if not parts or parts[0] not in FOLDERS:
            return None
    path = os.path.join(ROOT, *parts)
    for candidate in (path + ".py", os.path.join(path, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


@pytest.mark.parametrize("folder", FOLDERS)
def test_layers_point_one_way(folder):
    broken = []
    for path in _sources(folder):
        for module, line in _imports(path):
            for other in FORBIDDEN[folder]:
                if module == f"bit_trt.{other}" or module.startswith(f"bit_trt.{other}."):
                    broken.append(f"{os.path.relpath(path, ROOT)}:{line} imports {module}")
    assert broken == [], f"{folder}/ must not import {FORBIDDEN[folder]}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_package_imports_neither_tools_nor_tests(folder):
    """A wheel holds export/, engine/, bench/ and serve/ only: an import of tools/ or tests/ from any of them
    works in the repository and fails for every user."""
    broken = []
    for path in _all_sources(folder):
        for module, line in _imports(path):
            for other in NOT_INSTALLED:
                if module == other or module.startswith(f"{other}."):
                    broken.append(f"{os.path.relpath(path, ROOT)}:{line} imports {module}")
    assert broken == [], f"{folder}/ is installed; {NOT_INSTALLED} are not"


def test_tools_import_the_package_by_name_and_never_tests():
    """tools/ is no part of bit_trt: it reaches the package as `bit_trt.` and its own scripts as `tools.`,
    never relatively, and never through tests/ (the tests import tools, not the other way round)."""
    broken = []
    for path in _sources(TOOLS):
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                broken.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} imports relatively")
        for module, line in _imports(path):
            if module == "tests" or module.startswith("tests."):
                broken.append(f"{os.path.relpath(path, ROOT)}:{line} imports {module}")
    assert broken == []


def test_tools_are_not_installed():
    """pyproject.toml installs the four package folders and nothing else: tools/ stays in the repository."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    assert sorted(setuptools["packages"]) == sorted(f"bit_trt.{folder}" for folder in FOLDERS)
    assert sorted(setuptools["package-dir"].values()) == sorted(FOLDERS)
    assert os.path.isfile(os.path.join(ROOT, TOOLS, "__init__.py"))  # importable from the repo root


@pytest.mark.parametrize("folder", (*FOLDERS, TOOLS))
def test_imports_between_folders_resolve_on_disk_and_at_run_time(folder):
    for path in _sources(folder):
        for module, line in _imports(path):
            if folder == TOOLS and (module == TOOLS or module.startswith(f"{TOOLS}.")):
                prefix = ""  # tools.x: a script beside this one
            elif module.startswith("bit_trt."):
                prefix = "bit_trt."
            else:
                continue
            where = f"{os.path.relpath(path, ROOT)}:{line}"
            if "." in module[len(prefix) :] and _on_disk(module) is None:
                # `from ..engine.compare import measure` also yields ...compare.measure, a name, not a module
                parent = module.rsplit(".", 1)[0]
                assert _on_disk(parent) is not None, f"{where}: {module} has no file on disk"
                continue
            assert _on_disk(module) is not None, f"{where}: {module} has no file on disk"
            spec = importlib.util.find_spec(module)
            assert spec is not None and os.path.samefile(spec.origin, _on_disk(module)), (
                f"{where}: {module} resolves elsewhere at run time"
            )


def test_no_absolute_self_imports_in_the_package():
    """Relative imports between the folders, so that the on-disk arrows are the ones a reader sees."""
    absolute = []
    for folder in FOLDERS:
        for path in _sources(folder):
            tree = ast.parse(open(path, encoding="utf-8").read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("bit_trt"):
                    absolute.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert absolute == []


def test_the_engines_one_way_back_is_by_name():
    from bit_trt.engine import backends

    back = {name: target for name, target in backends.RUNNERS.items() if not target.startswith("bit_trt.engine.")}
    assert back == {"tf": "bit_trt.export.tf_runner:TfRunner"}
    assert backends.runner_class("tf").__module__ == "bit_trt.export.tf_runner"
    assert backends.runner_class("ort-cpu").__name__ == "OrtRunner"
    from bit_trt.engine import classify_cli

    assert classify_cli.BULK_CLI == "bit_trt.scale.bulk_cli"
    assert importlib.util.find_spec(classify_cli.BULK_CLI) is not None


def test_peak_memory_is_read_in_one_place():
    readers = []
    for folder in (*FOLDERS, TOOLS):
        for path in _sources(folder):
            if "ru_maxrss" in open(path, encoding="utf-8").read():
                readers.append(os.path.relpath(path, ROOT))
    assert readers == [os.path.join("engine", "memory.py")]


@pytest.mark.parametrize("folder", ("export", "bench", "serve", TOOLS))
def test_classifiers_are_used_through_their_public_surface(folder):
    """Callers use Classifier.infer / infer_timed / infer_uint8 / max_batch / backend, not its runner: the
    runner is the engine's own business (its activation, locking and batch splitting)."""
    import re

    reach = re.compile(r"\b(clf|classifier|self\.clf|self\.classifier)\.runner\b")
    found = [
        f"{os.path.relpath(path, ROOT)}:{n}"
        for path in _all_sources(folder)
        for n, line in enumerate(open(path, encoding="utf-8"), 1)
        if reach.search(line)
    ]
    assert found == []
