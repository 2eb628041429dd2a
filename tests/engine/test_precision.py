"""engine/precision.py is the one home of precision names and of which artifact flavour each backend loads."""

import pathlib
import re

import pytest

from bit_trt.engine import precision
from bit_trt.engine.errors import BitError

ROOT = pathlib.Path(__file__).resolve().parents[2]
CODE = ("export", "engine", "bench", "serve", "tools")


def test_flavour_for_and_its_inverse():
    assert [precision.flavour_for("ort-cpu", p) for p in precision.PRECISIONS] == ["fp32", "fp16", "int8-ort"]
    assert [precision.flavour_for("trt", p) for p in precision.PRECISIONS] == ["fp32", "fp16", "int8-trt"]
    assert precision.flavour_for("openvino", "int8-trt") == "int8-trt"  # an exact flavour passes through
    assert precision.flavour_for("tf", "fp32") == "fp32" and precision.flavour_for("tf", "int8") is None
    for backend in precision.INT8_FLAVOUR:
        for p in precision.PRECISIONS:
            flavour = precision.flavour_for(backend, p)
            assert flavour is None or precision.precision_of(flavour) == p
    with pytest.raises(BitError, match="unknown precision 'int4'; choose from: fp32, fp16, int8, int8-trt, int8-ort"):
        precision.flavour_for("ort-cpu", "int4")
    with pytest.raises(BitError, match="unknown flavour 'bf16'"):
        precision.precision_of("bf16")


def test_manifest_table_matches_flavour_for():
    table = precision.flavour_table()
    assert "tf" not in table and table["openvino"] == {"fp32": "fp32", "fp16": "fp16", "int8": "int8-ort"}
    for backend, row in table.items():
        assert row == {p: precision.flavour_for(backend, p) for p in precision.PRECISIONS}


def _code_files():
    for folder in CODE:
        yield from (ROOT / folder).rglob("*.py")


def test_precision_names_and_flavour_reading_have_one_home():
    """No module but engine/precision.py spells the precision tuple or reads a record's flavour by hand."""
    spelled = re.compile(r"\(\s*\"fp32\",\s*\"fp16\",\s*\"int8\"\s*\)")
    by_hand = re.compile(
        r"\.get\(\s*[\"'](variant|flavour)[\"'],\s*\w+(\.get\(|\[)[\"']precision"
    )  # a.get("variant", a["precision"])
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _code_files()
        if path.name != "precision.py" or path.parent.name != "engine"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if spelled.search(line) or by_hand.search(line)
    ]
    assert offenders == []
