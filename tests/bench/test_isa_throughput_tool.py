"""tools/isa_throughput: each dot product's FLOP rate over the f32 FMA's, measured by a C loop compiled here."""

import json
import shutil

import pytest

from bit_trt.engine.cpu_host import this_host
from tools.isa_throughput import main


def test_each_instruction_the_cpu_has_is_timed_against_the_fma(tmp_path):
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler")
    out = tmp_path / "isa.json"
    argv = ["--rounds", "2", "--iterations", "20000"]
    main([*argv, "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["command"] == "python -m tools.isa_throughput " + " ".join([*argv, "--json", str(out)])
    flags = this_host().flags
    width = "zmm" if "avx512f" in flags else "ymm"
    expected = ["vfmadd231ps"] + [
        name
        for name, wide, narrow in (("vdpbf16ps", "avx512_bf16", None), ("vpdpbusd", "avx512_vnni", "avx_vnni"))
        if (wide if width == "zmm" else narrow) in flags
    ]
    assert [row["instruction"] for row in result["rows"]] == [f"{name} {width}" for name in expected]
    fma = result["rows"][0]
    assert fma["flop_rate_over_fma"] == [1.0, 1.0] and fma["flop_per_instruction"] == (32 if width == "zmm" else 16)
    for row in result["rows"]:
        assert len(row["instructions_per_ns"]) == 2 and min(row["instructions_per_ns"]) > 0
        assert row["median_flop_per_ns"] > 0 and row["median_flop_rate_over_fma"] > 0


def test_bad_counts_are_refused_in_one_line():
    with pytest.raises(SystemExit, match="--rounds and --iterations must be 1 or more"):
        main(["--rounds", "0"])
