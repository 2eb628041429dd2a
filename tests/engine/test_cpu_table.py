"""engine/cpu_table.json, the one copy of the CPU flags, oneDNN's caps and the FLOP/cycle table: whole, consistent,
and each rate equal to the arithmetic written beside it."""

import math
import re

import pytest

from bit_trt.engine.cpu_host import CPU_TABLE, KERNEL_FLAGS
from bit_trt.engine.cpu_peak import DATAPATHS, ISA_LABELS, TABLE, models

PRODUCT = re.compile(r"^(\d+(?: x \d+)*)(?: / (\d+))?(?:$|: )")


def test_each_rate_is_the_product_written_beside_it():
    for name, datapath in CPU_TABLE["datapaths"].items():
        for flag, text in datapath["arithmetic"].items():
            match = PRODUCT.match(text)
            assert match, f"{name}.{flag}: {text!r} does not start with its product"
            value = math.prod(int(n) for n in match.group(1).split(" x ")) // int(match.group(2) or 1)
            assert datapath["rates"][flag] == value, f"{name}.{flag}: {datapath['rates'][flag]} but {text!r}"
        assert datapath["arithmetic"].keys() == datapath["rates"].keys(), f"{name}: every rate with its arithmetic"


def test_the_paths_flags_and_caps_agree_with_each_other():
    assert CPU_TABLE["dispatch_order"]["bf16"] == CPU_TABLE["bf16_flags"]
    assert CPU_TABLE["dispatch_order"]["int8"][: len(CPU_TABLE["int8_dot_flags"])] == CPU_TABLE["int8_dot_flags"]
    paths = {flag for order in CPU_TABLE["dispatch_order"].values() for flag in order}
    assert paths == ISA_LABELS.keys()
    for name, rates in DATAPATHS.items():
        assert rates.keys() <= paths, name
        assert "fma" in rates, f"{name}: every datapath has an f32 path"
    for cap, flags in CPU_TABLE["isa_caps"].items():
        assert set(flags) <= set(KERNEL_FLAGS), cap
    rows = CPU_TABLE["microarchitectures"]
    assert {row["datapath"] for row in rows} == DATAPATHS.keys()  # none missing, none unused


def test_no_model_number_is_in_two_rows():
    seen: dict[tuple[str, int, int], str] = {}
    for vendor, family, numbers, uarch in TABLE:
        for model in numbers:
            assert (vendor, family, model) not in seen, f"{model:#x}: {seen[(vendor, family, model)]} and {uarch.name}"
            seen[(vendor, family, model)] = uarch.name
    assert len(seen) > 400


@pytest.mark.parametrize(
    ("specs", "expected"), [(["0x8F"], {0x8F}), (["0x6A", "0x6C"], {0x6A, 0x6C}), (["0x0E-0x10"], {14, 15, 16})]
)
def test_model_specs(specs, expected):
    assert models(specs) == expected
