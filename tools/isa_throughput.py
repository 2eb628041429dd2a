"""How many FLOPs does each dot-product instruction compute per f32 FMA FLOP on this CPU?

engine/cpu_peak.py's FLOP/cycle table comes from the vendors' manuals, which give the f32 FMA rate of every core
but not always the rate of the newer dot products (vdpbf16ps, vpdpbusd). This tool measures it: a small C
program, compiled here with the system's C compiler, runs each instruction in a loop of independent
accumulators (24 at 512 bits, 12 at 256: more than its latency needs, so only its throughput limits it), with
the same loop on vfmadd231ps in each round (after one warm-up round), and reports instructions and FLOPs (INT8:
ops) per nanosecond and each instruction's FLOP rate over the FMA's. The clock cancels in that ratio, so it
holds on a VM whose clock is not known; times the table's f32 rate for this CPU, it gives the FLOP/cycle to
check the table's against.

    python -m tools.isa_throughput [--rounds 5] [--iterations 10000000] [--json OUT]

Only instructions this CPU's flags have are run, at 512 bits on an AVX-512 CPU, else at 256. Maintainers'
measurement, not part of the installed package: bench/results/isa_throughput_amx_xeon.json is the evidence for
the table's AVX-512 BF16 rate on Sapphire Rapids and later (docs/cpu.md, "bf16 without AMX").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bit_trt.engine.cpu_host import this_host
from bit_trt.engine.cpu_peak import dispatched, identify


def _accumulators(width: str) -> int:
    """Independent accumulators per loop: 24 of AVX-512's 32 registers, 12 of AVX2's 16 (two hold the sources)."""
    return 24 if width == "zmm" else 12


# (mnemonic, the cpuinfo flag it needs at 512 bits, at 256 bits, FLOPs (INT8: ops) per 32-bit lane)
INSTRUCTIONS = (
    ("vfmadd231ps", "avx512f", "fma", 2),  # one multiply-add per f32 lane
    ("vdpbf16ps", "avx512_bf16", None, 4),  # two bf16 products summed into each f32 lane
    ("vpdpbusd", "avx512_vnni", "avx_vnni", 8),  # four u8 x s8 products summed into each s32 lane
)


def _program(mnemonics: list[str], width: str) -> str:
    """C source that times each mnemonic (argv: iterations, rounds) and prints one JSON line of seconds per round."""
    registers = [f"%%{width}{i}" for i in range(_accumulators(width))]
    source = 30 if width == "zmm" else 14  # the two source registers, after the accumulators
    # the {vex} prefix: AVX-VNNI's 256-bit vpdpbusd has the same name as AVX-512 VNNI's EVEX form
    loops = []
    for name in mnemonics:
        prefix = "{vex} " if width == "ymm" and name == "vpdpbusd" else ""
        body = "".join(f'"{prefix}{name} %%{width}{source}, %%{width}{source + 1}, {r}\\n" ' for r in registers)
        clobbers = ", ".join(f'"{r[2:].replace("ymm", "xmm")}"' for r in registers)
        loops.append(
            f"  {{ long n = iterations; double t = now();\n"
            f'    asm volatile("1:\\n" {body} "dec %0\\n jnz 1b\\n" : "+r"(n) :: {clobbers}, "cc");\n'
            f'    printf("%s%.9f", first ? "" : ",", now() - t); first = 0; }}\n'
        )
    return (
        "#include <stdio.h>\n#include <stdlib.h>\n#include <time.h>\n"
        "static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);"
        " return t.tv_sec + t.tv_nsec * 1e-9; }\n"
        "int main(int argc, char **argv) {\n  long iterations = atol(argv[1]); int rounds = atoi(argv[2]);\n"
        '  printf("[");\n  for (int r = 0; r < rounds; r++) {\n    int first = 1; printf(r ? ",[" : "[");\n'
        + "".join(loops)
        + '    printf("]");\n  }\n  printf("]\\n");\n  return 0;\n}\n'
    )


def measure(rounds: int, iterations: int) -> dict:
    host = this_host()
    width = "zmm" if "avx512f" in host.flags else "ymm"
    lanes = 16 if width == "zmm" else 8
    chosen = [
        (name, per_lane)
        for name, wide, narrow, per_lane in INSTRUCTIONS
        if (wide if width == "zmm" else narrow) in host.flags
    ]
    if not chosen or chosen[0][0] != "vfmadd231ps":
        raise SystemExit("isa_throughput: this CPU has no FMA (fma or avx512f): nothing to compare against")
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("isa_throughput: no C compiler (cc, gcc, or $CC) on this machine")
    with tempfile.TemporaryDirectory(prefix="isa-throughput-") as tmp:
        source, binary = os.path.join(tmp, "loops.c"), os.path.join(tmp, "loops")
        with open(source, "w") as f:
            f.write(_program([name for name, _ in chosen], width))
        # -m: the compiler must know the registers the loops clobber (zmm16-31 exist only with AVX-512)
        isa = "-mavx512f" if width == "zmm" else "-mavx2"
        subprocess.run([compiler, "-O2", isa, "-o", binary, source], check=True, capture_output=True, text=True)
        done = subprocess.run([binary, str(iterations), str(rounds + 1)], check=True, capture_output=True, text=True)
    seconds = json.loads(done.stdout)[1:]  # the first round warms the core up (its clock, the AVX-512 units)
    instructions = iterations * _accumulators(width)
    rows = []
    for i, (name, per_lane) in enumerate(chosen):
        per_ns = [instructions / round_[i] / 1e9 for round_ in seconds]
        over_fma = [round_[0] / round_[i] * per_lane / chosen[0][1] for round_ in seconds]
        rows.append(
            {
                "instruction": f"{name} {width}",
                "flop_per_instruction": per_lane * lanes,
                "instructions_per_ns": [round(x, 3) for x in per_ns],
                "median_flop_per_ns": round(statistics.median(per_ns) * per_lane * lanes, 2),
                "flop_rate_over_fma": [round(x, 3) for x in over_fma],
                "median_flop_rate_over_fma": round(statistics.median(over_fma), 3),
            }
        )
    uarch, why = identify(host)
    f32_rate = uarch.rates[dispatched(uarch, host.flags, "f32")[1]] if uarch else None
    for row in rows:
        row["flop_per_cycle_at_the_tables_f32_rate"] = (
            round(row["median_flop_rate_over_fma"] * f32_rate, 1) if f32_rate else None
        )
    return {
        "width": width,
        "accumulators": _accumulators(width),
        "iterations": iterations,
        "rounds": rounds,
        "uarch": uarch.name if uarch else f"unknown: {why}",
        "tables_f32_flop_per_cycle": f32_rate,
        "rows": rows,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10_000_000, help="loop trips per instruction and round")
    parser.add_argument("--json", help="write the record here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.iterations < 1:
        raise SystemExit("isa_throughput: --rounds and --iterations must be 1 or more")
    result = {
        "command": "python -m tools.isa_throughput " + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": this_host().to_record(),
        **measure(args.rounds, args.iterations),
    }
    for row in result["rows"]:
        print(
            f"{row['instruction']}: {statistics.median(row['instructions_per_ns']):.3f} per ns, "
            f"{row['median_flop_per_ns']} FLOP/ns, {row['median_flop_rate_over_fma']:.2f}x vfmadd231ps's FLOP rate "
            f"(rounds {min(row['flop_rate_over_fma']):.2f}-{max(row['flop_rate_over_fma']):.2f}); "
            f"{row['flop_per_cycle_at_the_tables_f32_rate']} FLOP/cycle at the table's f32 rate on {result['uarch']}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
