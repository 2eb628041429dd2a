"""The physical arithmetic peak of a CPU: cores x maximum boost clock x FLOP/cycle/core of the instruction set
a backend dispatches for a data type.

FLOP/cycle comes from a per-microarchitecture table, not from the CPU flags: the flags say which instructions
exist, not how many execution ports run them, nor how wide (Zen 4 runs 512-bit AVX-512 on two 256-bit halves,
client Ice Lake has one 512-bit FMA unit where the Xeon has two). The microarchitecture is identified by
(vendor, family, model) as /proc/cpuinfo gives them (engine/cpu_host.py), checked against the flags (a VM's
model number can be false: `identify`); the flags then pick, among the instruction sets the table lists for
it, the one a backend dispatches (ONNX Runtime's MLAS and OpenVINO's oneDNN both take the widest the CPU has:
AMX, then VNNI, then AVX-512BW/AVX2 for INT8).

The table is data, engine/cpu_table.json (each rate with its arithmetic), read here and built into the C++ library
(engine/cpp/src/cpu_host.cpp), whose fp16 tier decides bf16 by `bf16_pays` as the Python runner does.

Counting: f32 is 2 FLOP per FMA lane. INT8 counts 2 ops per multiply-accumulate (MAC), so an INT8 figure and
an FLOP count of the same graph (bench/roofline.py, 2 x MACs) compare directly. Figures per core per cycle:

- f32: FMA ports x 32-bit lanes x 2. Two FMA ports on every core in the table (a Xeon with a single 512-bit
  FMA unit, some Skylake-SP/Cascade Lake Bronze/Silver SKUs, gets the two-unit figure: an upper bound).
- INT8 with VNNI (vpdpbusd, AVX-512 VNNI or AVX-VNNI): 4 MACs per 32-bit lane per instruction,
  x instructions per cycle x 2.
- INT8 without VNNI: the sequence MLAS and oneDNN use, vpmaddubsw (u8 x s8 -> pairs summed to s16),
  vpmaddwd with ones (-> s32), vpaddd (accumulate): 4 MACs per 32-bit lane for two multiply uops and one add.
  Assumed: the two multiplies are bound by the vector integer-multiply ports, and the vpaddd goes to another
  port where one is free (ymm on every core here; zmm on a Xeon shares ports 0 and 5 with the multiplies, so
  three uops on two ports: Intel's "1.33x fp32" for AVX-512BW). Saturation of vpmaddubsw is ignored.
- bf16 (vdpbf16ps, AVX-512 BF16): 2 MACs per 32-bit lane per instruction, x instructions per cycle x 2. On
  Sapphire Rapids and later one per two cycles: measured (tools/isa_throughput), not from a manual.
- AMX (Sapphire Rapids and later): the TMUL does 1024 INT8 MACs (2048 ops) or 512 BF16 MACs (1024 FLOP)
  per cycle per core.

Sources: Intel 64 and IA-32 Architectures Optimization Reference Manual (Skylake-SP/Ice Lake port tables; the
AMX chapter: 2048 INT8 / 1024 BF16 ops per cycle per core); Intel, "Lower Numerical Precision Deep Learning
Inference and Training" (2018: the vpmaddubsw/vpmaddwd/vpaddd sequence, 1.33x fp32 on AVX-512, VNNI 4x);
AMD Software Optimization Guides for family 17h (Zen 2: two 256-bit FMA pipes), 19h (Zen 3; Zen 4: AVX-512
on the 256-bit datapath, one 512-bit op per cycle on two pipes) and 1Ah (Zen 5: 512-bit datapath on desktop and
server parts, 256-bit on the Strix/Krackan mobile parts); Agner Fog's instruction tables and uops.info (integer
multiply throughput: one 256-bit port on Zen/Zen 2, two on Zen 3 and later, e.g. vpmuldq ymm 1 vs 0.5 cycles);
WikiChip's microarchitecture pages for the family/model numbers; A. Yee, "Zen4/Zen5 AVX512 teardown"
(numberworld.org). The ceiling clocks are the highest maximum boost of the parts with those model numbers
(Intel ARK, AMD product pages), used only where the kernel gives no cpufreq maximum, and labelled so.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cpu_host import BF16_FLAGS, CPU_TABLE

# Labels of the instruction paths, by the cpuinfo flag that enables them.
ISA_LABELS = dict(CPU_TABLE["isa_labels"])
# For each data type, the paths in the order a backend prefers them (the first the CPU has is dispatched).
DISPATCH_ORDER = {dtype: tuple(flags) for dtype, flags in CPU_TABLE["dispatch_order"].items()}
DTYPES = tuple(DISPATCH_ORDER)
# FLOP (INT8: ops) per cycle per core of each path, by datapath (engine/cpu_table.json gives each one's arithmetic).
DATAPATHS = {name: dict(datapath["rates"]) for name, datapath in CPU_TABLE["datapaths"].items()}


@dataclass(frozen=True)
class Uarch:
    name: str
    rates: dict  # cpuinfo flag of a path -> FLOP (INT8: ops) per cycle per core
    ceiling_mhz: float  # the highest maximum boost clock of the parts in this row
    note: str = ""  # how it was identified, where not by its model number


def models(specs) -> frozenset[int]:
    """The model numbers of a row: "0x8F" or a range "0x30-0xFF" each (engine/cpu_table.json)."""
    out: set[int] = set()
    for spec in specs:
        low, _, high = spec.partition("-")
        out.update(range(int(low, 16), int(high or low, 16) + 1))
    return frozenset(out)


# (vendor, family, models, Uarch). An unlisted (vendor, family, model) is "unknown".
TABLE = tuple(
    (
        row["vendor"],
        row["family"],
        models(row["models"]),
        Uarch(row["name"], DATAPATHS[row["datapath"]], row["ceiling_mhz"]),
    )
    for row in CPU_TABLE["microarchitectures"]
)


def identify(host) -> tuple[Uarch | None, str]:
    """(the table's row for a CpuHost's (vendor, family, model), "") or (None, why it has none).

    A hypervisor may report a model number that is not the CPU's: one VM of ours said family 6 model 0xA7
    (Rocket Lake) and showed AMX, avx512_bf16 and avx512_fp16, which no Rocket Lake has. So a row is taken only
    if it rates every instruction path the flags show (a VM that masks some still matches). Where the flags
    contradict the model's row, they decide alone, and only if every row of the vendor's family that rates
    them all has the same rates: AMX, say, exists only on Xeon cores with one AMX rate (Sapphire, Emerald and
    Granite Rapids), so its flags pin the FLOP/cycle the false model number could not. A model the table does
    not list stays unknown: it may be a newer part with other rates.
    """
    paths = _paths(host.flags)
    rows = [u for vendor, family, models, u in TABLE if (host.vendor, host.family) == (vendor, family)]
    by_model = next(
        (
            u
            for vendor, family, models, u in TABLE
            if (host.vendor, host.family) == (vendor, family) and host.model in models
        ),
        None,
    )
    described = f"{host.vendor or 'unknown vendor'} family {host.family} model {host.model}"
    if by_model is None:
        return None, f"{described} is not in engine/cpu_table.json"
    if paths <= by_model.rates.keys():
        return by_model, ""
    lacking = ", ".join(sorted(paths - by_model.rates.keys()))
    candidates = [u for u in rows if paths <= u.rates.keys()]
    if not candidates or any(u.rates != candidates[0].rates for u in candidates):
        return None, (
            f"{described} is {by_model.name}, which has no {lacking}, and the rows with those flags differ in "
            "FLOP/cycle (a hypervisor's model number?)"
        )
    return Uarch(
        "/".join(dict.fromkeys(u.name for u in candidates)),
        candidates[0].rates,
        max(u.ceiling_mhz for u in candidates),
        note=f"by its flags: model {host.model:#x} is {by_model.name}, which has no {lacking}",
    ), ""


def _paths(flags) -> set[str]:
    """The instruction-path flags (ISA_LABELS) among a host's cpuinfo flags."""
    return {flag for flag in ISA_LABELS if flag in flags}


def dispatched(uarch: Uarch, flags, dtype: str) -> tuple[str, str | None]:
    """(the data type computed, the flag of the path dispatched) for `dtype` on `uarch` with these flags.

    bf16 on a CPU without a bf16 path is computed in f32 (the backend runs f32); a flag the table has no rate
    for on this microarchitecture (a VM's masked or an unexpected one) is passed over. No path: (dtype, None).
    """
    if dtype not in DISPATCH_ORDER:
        raise ValueError(f"unknown data type {dtype!r}; choose from: {', '.join(DTYPES)}")
    for flag in DISPATCH_ORDER[dtype]:
        if flag in flags and flag in uarch.rates:
            return dtype, flag
    if dtype == "bf16":
        return dispatched(uarch, flags, "f32")
    return dtype, None


def physical_peak(host, dtype: str, threads: int | None = None) -> dict:
    """The ISA peak of `host` (an engine.cpu_host.CpuHost) for `dtype` (f32, int8, bf16) on `threads` cores.

    `cores` = min(threads, host.cores): the logical CPUs the run may use (with SMT two share one core's ports,
    so the figure is then an upper bound). Clock: cpufreq's maximum where the kernel gives it; else the row's
    ceiling boost clock (or the current clock, if higher), labelled. Returns {"known": False, "uarch":
    "unknown", "reason"} for a CPU the table has no row or no path for.
    """
    uarch, why = identify(host)
    if uarch is None:
        return {"known": False, "uarch": "unknown", "reason": why}
    computed, flag = dispatched(uarch, host.dispatch_flags, dtype)
    if flag is None:
        paths = ", ".join(DISPATCH_ORDER[dtype])
        return {"known": False, "uarch": uarch.name, "reason": f"{uarch.name} without any of: {paths} for {dtype}"}
    cores = min(threads, host.cores) if threads else host.cores
    if host.max_mhz and host.mhz_source.startswith("cpufreq"):
        mhz, clock_source = host.max_mhz, "cpufreq maximum"
    elif host.max_mhz and host.max_mhz > uarch.ceiling_mhz:
        mhz, clock_source = host.max_mhz, f"current clock, above the {uarch.name} table ceiling"
    else:
        now = f", current {host.max_mhz:.0f} MHz" if host.max_mhz else ""
        mhz, clock_source = uarch.ceiling_mhz, f"{uarch.name} ceiling boost clock (no cpufreq maximum{now})"
    per_cycle = uarch.rates[flag]
    isa = ISA_LABELS[flag]
    if computed != dtype:
        isa += f" - no {dtype} path ({', '.join(DISPATCH_ORDER[dtype])}): the backend runs {computed}"
    if host.isa_cap:
        isa += f" (under {host.isa_cap})"
    return {
        "known": True,
        "uarch": f"{uarch.name} ({uarch.note})" if uarch.note else uarch.name,
        "dtype": dtype,
        "computes": computed,
        "isa": isa,
        "isa_flag": flag,
        "flop_per_cycle": per_cycle,
        "cores": cores,
        "clock_mhz": mhz,
        "clock_source": clock_source,
        "gflops": cores * mhz * per_cycle / 1000,
    }


def bf16_pays(host) -> tuple[bool, str]:
    """(whether bf16 arithmetic computes faster than f32 on `host`, why): what OpenVINO's fp16 tier, and the INT8
    tier's float layers, run in.

    `host` as its dispatcher sees it (engine/cpu_host.onednn_host: under oneDNN's ISA cap, if one is set). True
    where the bf16 path dispatched (AMX-BF16, AVX-512 BF16) has more FLOP per cycle than the f32 one on this
    microarchitecture, or where the CPU has a native bf16 path and the table does not know it (a bf16 run is
    gated against TF either way). False where the CPU has no native bf16 (OpenVINO accepts bf16 on any AVX-512
    CPU and emulates it: 3.9x slower than f32 under an AVX512_CORE_VNNI cap here, docs/cpu.md), or where its bf16
    path computes no more than f32 (AVX-512 BF16 on Sapphire Rapids and later: half).
    """
    flag = host.bf16
    cap = host.under_cap
    if flag is None:
        return False, f"this CPU has no native bf16 ({' or '.join(BF16_FLAGS)}{cap})"
    uarch, why = identify(host)
    if uarch is None or flag not in uarch.rates:
        return True, f"{ISA_LABELS[flag]}{cap}; its FLOP/cycle are not known ({why or 'not in the table'})"
    _, f32 = dispatched(uarch, host.dispatch_flags, "f32")
    bf16_rate, f32_rate = uarch.rates[flag], uarch.rates.get(f32, 0)
    compared = (
        f"{ISA_LABELS[flag]} computes {bf16_rate} FLOP/cycle on {uarch.name}{cap}, "
        f"f32's {ISA_LABELS.get(f32, 'FMA')} {f32_rate}"
    )
    return bf16_rate > f32_rate, compared
