"""bit_trt laid out as installed, for static analysers only: each subpackage is a relative link to its top-level
folder (engine -> ../../engine). mypy reads it through pyproject.toml's [tool.mypy], pyright through
pyrightconfig.json; nothing imports it at run time (tests/test_typecheck_layout.py)."""
