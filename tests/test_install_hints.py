"""Every install hint names an extra that exists and really brings the missing module."""

import os
import re

import pytest

from bit_trt.engine import errors

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Modules whose distribution on PyPI has another name than the module (LoadGen's module is mlperf_loadgen).
DISTRIBUTIONS = {"mlperf_loadgen": "mlcommons-loadgen"}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("module", sorted(errors.EXTRAS))
def test_the_named_extra_installs_the_module(module):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    extra = errors.EXTRAS[module]
    assert extra in extras, f"{module}: hint names bit-trt[{extra}], which pyproject.toml does not declare"
    packages = [_normalized(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0]) for req in extras[extra]]
    distribution = _normalized(DISTRIBUTIONS.get(module, module))
    assert any(p.startswith(distribution) for p in packages), f"bit-trt[{extra}] lists {packages}"
    assert errors.install_hint(module) == f"pip install 'bit-trt[{extra}]'"


def test_missing_module_error_names_the_command():
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pycuda is installed here")
    with pytest.raises(errors.BitError) as info:
        errors.require("pycuda.driver")
    assert str(info.value) == "pycuda is not installed; install it with: pip install 'bit-trt[gpu]'"
    assert isinstance(info.value.__cause__, ImportError)  # --debug shows the native cause
