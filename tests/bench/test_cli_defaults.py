"""bit-bench's flags read their defaults from BenchOptions and Schedule: given only BUNDLE it asks for exactly the
dataclasses' defaults, and its --help shows them."""

import pytest

from bit_trt.bench.bit_bench import BenchOptions
from bit_trt.bench.cli import build_parser, options_from_args
from bit_trt.bench.measurement import Schedule


def test_cli_defaults_are_the_options_defaults():
    argv = ["b"]
    assert options_from_args(build_parser().parse_args(argv), argv) == BenchOptions(bundle="b", command="bit-bench b")


def test_help_shows_the_options_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal's width, hyphens included
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    d, s = BenchOptions(bundle="b"), Schedule()
    assert f"(default: {','.join(d.backends)})" in text
    assert f"or all (default: {','.join(d.precisions)})" in text
    assert f"batch sizes (default: {','.join(map(str, d.batches))})" in text
    assert f"(default: {d.mode})" in text
    assert f"seconds per configuration (default: {s.warmup_s})" in text
    assert f"at least (default: {s.duration_s})" in text
    assert f"(default: {','.join(f'{q:g}' for q in d.percentiles)})" in text
