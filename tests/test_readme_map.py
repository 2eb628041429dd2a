"""The README's "Where things live" table is a newcomer's map: every file it names exists, and every module of
the package and of tools/ is on it."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("engine", "export", "bench", "serve", "scale", "tools")


def _table() -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    start = text.index("## Where things live")
    return text[start : text.index("\n## ", start + 1)]


def _cited() -> set[str]:
    return {c for c in re.findall(r"`([^`\s]+)`", _table()) if "/" in c}


def test_every_file_the_table_names_exists():
    missing = [c for c in _cited() if re.search(r"\.\w+$", c) and not os.path.exists(os.path.join(ROOT, c))]
    assert missing == []


def test_every_module_is_on_the_table():
    cited = _cited()
    modules = [
        os.path.relpath(os.path.join(top, name), ROOT)
        for folder in FOLDERS
        for top, dirs, names in os.walk(os.path.join(ROOT, folder))
        if "__pycache__" not in top
        for name in sorted(names)
        if name.endswith(".py") and name != "__init__.py"
    ]
    assert sorted(m for m in modules if m not in cited) == []
