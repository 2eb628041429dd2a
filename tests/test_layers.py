"""The architecture, as rules a change cannot break silently.

- engine/ is the core: it imports none of export/, bench/ or serve/ (a server embeds it without them).
  Its one way back is by name: engine/backends.py's RUNNERS table loads the `tf` reference from export/.
- export/ imports neither bench/ nor serve/.
- serve/ stands on engine/ alone: its environment (numpy < 2 for PyTriton) has no TensorFlow to export with.
- Every import between the three folders resolves on disk as it does at run time, so static tools
  (pyright, IDEs, dependency graphs) follow the same arrows as Python.
- Memory accounting has one owner (export/resources.py): ru_maxrss is KiB on Linux, and a second
  reader is a second chance to get the unit wrong.
"""

import ast
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("engine", "export", "bench", "serve")
FORBIDDEN = {
    "engine": ("export", "bench", "serve"),
    "export": ("bench", "serve"),
    "bench": (),
    "serve": ("export", "bench"),
}


def _sources(folder):
    for name in sorted(os.listdir(os.path.join(ROOT, folder))):
        if name.endswith(".py"):
            yield os.path.join(ROOT, folder, name)


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
    """The file a bit_trt module lives in, by the repository's layout (bit_trt.X.y -> X/y.py)."""
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
def test_imports_between_folders_resolve_on_disk_and_at_run_time(folder):
    for path in _sources(folder):
        for module, line in _imports(path):
            if not module.startswith("bit_trt."):
                continue
            where = f"{os.path.relpath(path, ROOT)}:{line}"
            if "." in module[len("bit_trt.") :] and _on_disk(module) is None:
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


def test_peak_memory_is_read_in_one_place():
    readers = []
    for folder in FOLDERS:
        for path in _sources(folder):
            if "ru_maxrss" in open(path, encoding="utf-8").read():
                readers.append(os.path.relpath(path, ROOT))
    assert readers == [os.path.join("export", "resources.py")]
