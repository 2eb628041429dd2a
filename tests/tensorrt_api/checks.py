"""The two checks of our TensorRT calls, and the stub repairs that let mypy read NVIDIA's bindings.

- `module_chains` / `unguarded_missing`: every `trt.A.B` chain in our modules, resolved on the live module.
- `repair_stub` / `run_mypy`: method calls and argument types on the annotated TensorRT objects, against
  `.pyi` stubs that pybind11-stubgen generates from the compiled bindings.

Used on our real modules and on a copy with a planted misuse, so both runs go through the same code.
"""

from __future__ import annotations

import ast
import builtins
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Every module that calls TensorRT, as (package folder, file); `trt` is the module, passed in or `self.trt`.
MODULES = (
    ("export", "trt_engine.py"),
    ("export", "trt_layer_types.py"),
    ("engine", "trt_runner.py"),
    ("engine", "plan_check.py"),
    ("engine", "tensorrt_library.py"),
)
LIBRARY_NAMES = ("tensorrt", "tensorrt_rtx")  # what `library` / `trt.__name__` is compared with
MYPY_INI = Path(__file__).with_name("mypy.ini")


# ---------------------------------------------------------------------------------------------------------------
# 1. `trt.A.B` chains: each exists in the bindings, or is guarded where it may not


@dataclass(frozen=True)
class Chain:
    path: str  # "trt.BuilderFlag.TF32"
    file: str
    line: int
    guarded: bool  # under hasattr / getattr-with-default: it may be absent
    only_for: str | None  # inside a branch for one library ("tensorrt_rtx"): checked against that one only

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.path}"


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """`trt.A.B` / `self.trt.A.B` / `alias.B` (alias = getattr(trt, "A", None)) -> "trt.A.B"; else None."""
    if isinstance(node, ast.Name):
        return "trt" if node.id == "trt" else aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        if node.attr == "trt" and isinstance(node.value, ast.Name):  # self.trt, the module as an attribute
            return "trt"
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def _literal_getattr(node: ast.AST, aliases: dict[str, str]) -> tuple[str, bool] | None:
    """getattr(<chain>, "name"[, default]) -> ("<chain>.name", has a default); else None."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "hasattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        base = _dotted(node.args[0], aliases)
        if base:
            return f"{base}.{node.args[1].value}", node.func.id == "hasattr" or len(node.args) == 3
    return None


def _has_hasattr(test: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "hasattr" for n in ast.walk(test)
    )


def _library_test(test: ast.AST) -> tuple[str, bool] | None:
    """`library == "tensorrt_rtx"` (also as a term of an `and`) -> ("tensorrt_rtx", True); `!=` -> (..., False)."""
    parts = test.values if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) else [test]
    for part in parts:
        if (
            isinstance(part, ast.Compare)
            and len(part.ops) == 1
            and isinstance(part.ops[0], (ast.Eq, ast.NotEq))
            and isinstance(part.comparators[0], ast.Constant)
            and part.comparators[0].value in LIBRARY_NAMES
        ):
            if isinstance(part.ops[0], ast.NotEq) and len(parts) > 1:
                continue  # `a != x and b` does not settle which library the body runs for
            return part.comparators[0].value, isinstance(part.ops[0], ast.Eq)
    return None


def _other(library: str) -> str:
    return next(name for name in LIBRARY_NAMES if name != library)


class _Collector:
    """Walks statements in order, so that a guard covers what it guards and no more: `if hasattr(...)` and
    `if library == "x"` cover their body (an `else`, the other library); a guard clause
    (`if not hasattr(...): raise`, `if library != "x": raise`) covers the rest of its block."""

    def __init__(self, file: str):
        self.file = file
        self.chains: list[Chain] = []

    def block(self, body: list[ast.stmt], aliases: dict[str, str], guarded: bool, only_for: str | None) -> None:
        for stmt in body:
            if not isinstance(stmt, ast.If):
                target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
                found = _literal_getattr(stmt.value, aliases) if isinstance(target, ast.Name) else None
                if found and found[1]:  # creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
                    aliases[target.id] = found[0]
                scope = dict(aliases) if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) else aliases
                self.children(stmt, scope, guarded, only_for)
                continue
            self.expr(stmt.test, aliases, guarded, only_for)
            library = _library_test(stmt.test)
            negated = isinstance(stmt.test, ast.UnaryOp) and isinstance(stmt.test.op, ast.Not)
            feature = _has_hasattr(stmt.test)
            body_for = orelse_for = only_for
            if library:
                body_for = library[0] if library[1] else _other(library[0])
                orelse_for = _other(body_for)
            self.block(stmt.body, aliases, guarded or (feature and not negated), body_for)
            self.block(stmt.orelse, aliases, guarded, orelse_for)
            if isinstance(stmt.body[-1], (ast.Raise, ast.Return)) and not stmt.orelse:  # a guard clause
                guarded = guarded or (feature and negated)
                only_for = orelse_for

    def children(self, node: ast.AST, aliases: dict[str, str], guarded: bool, only_for: str | None) -> None:
        """A node's fields: lists of statements as blocks (in order), everything else as expressions."""
        for _, value in ast.iter_fields(node):
            items = value if isinstance(value, list) else [value]
            if items and all(isinstance(item, ast.stmt) for item in items):
                self.block(items, aliases, guarded, only_for)
                continue
            for item in items:
                if isinstance(item, ast.expr):
                    self.expr(item, aliases, guarded, only_for)
                elif isinstance(item, ast.AST):  # arguments, keyword, comprehension, except handler, ...
                    self.children(item, aliases, guarded, only_for)

    def expr(self, node: ast.expr, aliases: dict[str, str], guarded: bool, only_for: str | None) -> None:
        literal = _literal_getattr(node, aliases)
        if literal:  # hasattr(trt.BuilderFlag, "TF32") / getattr(trt, "X", None): the named member may be absent
            self.chains.append(Chain(literal[0], self.file, node.lineno, guarded or literal[1], only_for))
        path = _dotted(node, aliases) if isinstance(node, ast.Attribute) else None
        if path and path != "trt":
            self.chains.append(Chain(path, self.file, node.lineno, guarded, only_for))
            return  # a chain's prefixes are checked as part of it
        self.children(node, aliases, guarded, only_for)


def module_chains(root: Path = ROOT) -> list[Chain]:
    """Every `trt....` chain in MODULES under `root` (the repository, or a copy laid out the same way)."""
    chains = []
    for folder, name in MODULES:
        path = root / folder / name
        collector = _Collector(f"{folder}/{name}")
        collector.block(ast.parse(path.read_text(), str(path)).body, {}, False, None)
        chains += collector.chains
    return chains


_PROBE = """
import importlib, json, sys
module = importlib.import_module(sys.argv[1])
found = {}
for path in json.load(sys.stdin):
    obj, ok = module, True
    for part in path.split(".")[1:]:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            ok = False
            break
    found[path] = ok
print(json.dumps(found))
"""


def probe(package: str, env: dict[str, str], paths: set[str]) -> dict[str, bool]:
    """Which `trt.A.B` paths resolve on `package` (imported in a fresh interpreter with `env`)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, package],
        input=json.dumps(sorted(paths)),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"importing {package} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def unguarded_missing(chains: list[Chain], library: str, package: str, env: dict[str, str]) -> list[Chain]:
    """The chains `library`'s code path reaches that `package` lacks and nothing guards."""
    relevant = [c for c in chains if c.only_for in (None, library)]
    exists = probe(package, env, {c.path for c in relevant})
    return [c for c in relevant if not exists[c.path] and not c.guarded]


# ---------------------------------------------------------------------------------------------------------------
# 2. Stubs mypy can read, from what pybind11-stubgen writes for TensorRT's bindings


def _resolve_cxx(match: re.Match, classes: set[str]) -> str:
    name = match.group(1)
    if name in classes:
        return name
    if name.startswith("I") and name[1:] in classes:  # nvonnxparser::IParserError is bound as ParserError
        return name[1:]
    return "typing.Any"


def repair_stub(text: str, module: str, package: str) -> tuple[str, list[str]]:
    """pybind11-stubgen's stub for `module` (e.g. tensorrt_bindings.tensorrt) -> the stub of `package`
    (e.g. tensorrt), and the methods whose signatures could only be kept as `(*args, **kwargs)`.

    Run with --print-invalid-expressions-as-is, so that the C++ names the bindings leave in their docstrings
    come through and are mapped to the Python classes here, rather than becoming `...` (Any).
    """
    classes = set(re.findall(r"^class (\w+)", text, re.M))
    # nvinfer1::ICudaEngine, nvonnxparser::IParserError, nvinfer1::v_1_0::IGpuAllocator: the bound class.
    text = re.sub(r"\b(?:nvinfer1|nvonnxparser)::(?:\w+::)*?(\w+)\b(?!::)", lambda m: _resolve_cxx(m, classes), text)
    # Enum defaults come through as their repr (`= <DataType.FLOAT: 0>`); a default's value is no part of a type.
    text = re.sub(r"=\s*<[^<>\n]*>", "= ...", text)
    # Parameters named after Python keywords (`in`) are not Python; no caller can pass them by name anyway.
    text = re.sub(r"(?<=[(,] )(" + "|".join(keyword.kwlist) + r")(?=: )", r"\1_", text)
    # The module's own attributes shadow builtins in every annotation (trt.bool is DataType.BOOL).
    shadowed = {n for n in re.findall(r"^(\w+)\s*:", text, re.M) if n in dir(builtins)}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        for name in shadowed:
            if not line.startswith(f"{name}:"):
                line = re.sub(rf"(?<![.\w'\"]){name}\b(?!['\"])", f"builtins.{name}", line)
        # "the TensorRT API can implicitly convert Python iterables to Dims" (the Dims docstring): say so.
        if line.lstrip().startswith("def "):
            line = re.sub(r"(?<=: )Dims(?=[,)])", "Dims | collections.abc.Sequence[typing.SupportsInt]", line)
        lines[i] = line
    lines, degraded = _keep_parseable_signatures(lines)
    lines = _add_protocol_methods(lines)
    text = "\n".join(lines).replace(module, package)
    # `import builtins` for the above; __version__ comes from the package's __init__.py, not the compiled module.
    text = text.replace("import typing\n", "import builtins\nimport typing\n", 1) + "\n__version__: str\n"
    ast.parse(text)  # a stub mypy cannot parse would stop it cold; fail here, saying so, instead
    return text, degraded


def _keep_parseable_signatures(lines: list[str]) -> tuple[list[str], list[str]]:
    """A docstring signature Python cannot parse keeps what it can: an unparsable return type (a pybind11
    internal, for the module's get_plugin_registry) becomes Any; unparsable parameters (a required one after
    defaulted ones, in add_scale_nd) become `(self, *args, **kwargs)`, and that method is listed as degraded."""
    degraded = []
    for i, line in enumerate(lines):
        match = re.match(r"(\s*)def (\w+)\((.*)\)(?: -> (.*))?:$", line)
        if not match or _parses(line.strip() + " ..."):
            continue
        indent, name, params, returns = match.groups()
        if returns is None or not _parses(f"def f() -> {returns}: ..."):
            returns = "typing.Any"
        lines[i] = f"{indent}def {name}({params}) -> {returns}:"
        if not _parses(lines[i].strip() + " ..."):
            static = i > 0 and lines[i - 1].strip() == "@staticmethod"
            first = "self, " if indent and not static else ""
            lines[i] = f"{indent}def {name}({first}*args: typing.Any, **kwargs: typing.Any) -> {returns}:"
            degraded.append(name)
    return lines, degraded


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def _add_protocol_methods(lines: list[str]) -> list[str]:
    """Protocols the bindings implement in C, which their docstring signatures cannot show:
    - iteration: Dims and friends iterate through __len__ and __getitem__ (the sequence protocol), which
      mypy does not count as iterable, so tuple(dims) would not type-check; they get the __iter__ it implies;
    - the buffer protocol, where the class docstring says so (IHostMemory): memoryview(plan) takes it."""
    tree = ast.parse("\n".join(lines))
    inserts = []
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        methods = [f for f in cls.body if isinstance(f, ast.FunctionDef)]
        if not methods:
            continue
        first = methods[0]
        indent = " " * first.col_offset
        names = {f.name for f in methods}
        added = []
        getitem = [f for f in methods if f.name == "__getitem__" and len(f.args.args) == 2 and f.returns is not None]
        by_index = [f for f in getitem if "SupportsInt" in ast.unparse(f.args.args[1].annotation or ast.Constant(""))]
        if by_index and "__len__" in names and "__iter__" not in names:
            added.append(f"def __iter__(self) -> collections.abc.Iterator[{ast.unparse(by_index[0].returns)}]:")
        if "buffer protocol" in (ast.get_docstring(cls) or "") and "__buffer__" not in names:
            added.append("def __buffer__(self, flags: builtins.int, /) -> memoryview:")
        if added:
            at = min([d.lineno for d in first.decorator_list] + [first.lineno]) - 1
            inserts.append((at, "\n".join(f"{indent}{head}\n{indent}    ..." for head in added)))
    for at, text in sorted(inserts, reverse=True):  # bottom up, so earlier line numbers stay right
        lines.insert(at, text)
    return lines


# ---------------------------------------------------------------------------------------------------------------
# 3. mypy over MODULES, with a stub root on MYPYPATH


def package_tree(out: Path, copy: bool) -> Path:
    """A bit_trt folder laid out as installed (bit_trt.engine, bit_trt.export), for mypy: the checkout's own
    typecheck/bit_trt (links, see pyproject's [tool.mypy]), or `out`/bit_trt holding copies a test may edit."""
    if not copy:
        return ROOT / "typecheck" / "bit_trt"
    package = out / "bit_trt"
    package.mkdir(parents=True)
    (package / "__init__.py").touch()
    for folder in ("engine", "export"):
        shutil.copytree(ROOT / folder, package / folder, ignore=shutil.ignore_patterns("__pycache__", "cuda"))
    return package


def run_mypy(package: Path, stub_root: Path, cache: Path) -> subprocess.CompletedProcess:
    """mypy (configured by mypy.ini) over MODULES in `package` (a bit_trt folder: see package_tree),
    reading `tensorrt` and `tensorrt_rtx` from `stub_root`."""
    targets = [arg for folder, name in MODULES for arg in ("-p", f"bit_trt.{folder}.{name.removesuffix('.py')}")]
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(stub_root), str(package.parent)])}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(MYPY_INI), "--cache-dir", str(cache), *targets],
        capture_output=True,
        text=True,
        env=env,
        cwd=package.parent,
        timeout=600,
    )


def called_methods(root: Path = ROOT) -> set[str]:
    """Every `x.name(...)` method name called in MODULES."""
    names = set()
    for folder, name in MODULES:
        for node in ast.walk(ast.parse((root / folder / name).read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
    return names
