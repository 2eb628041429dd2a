"""engine/cpu_peak.py: the physical peak (cores x max boost clock x FLOP/cycle/core of the dispatched ISA) of
CPUs described by their cpuinfo text, as engine/cpu_host.py parses it."""

import pytest

from bit_trt.engine import cpu_host, cpu_peak

BASE_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov sse sse2 ssse3 sse4_1 sse4_2 popcnt"


def cpuinfo(vendor: str, family: int, model: int, flags: str, mhz: float = 2000.0, name: str = "a CPU") -> str:
    """/proc/cpuinfo text of two processors (parse reads the first)."""
    block = (
        f"vendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: {name}\n"
        f"stepping\t: 1\ncpu MHz\t\t: {mhz:.3f}\nflags\t\t: {BASE_FLAGS} {flags}\n"
    )
    return f"processor\t: 0\n{block}\nprocessor\t: 1\n{block}"


SAPPHIRE_RAPIDS = cpuinfo(
    "GenuineIntel",
    6,
    0x8F,
    "fma f16c avx2 avx512f avx512bw avx_vnni avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8",
    name="Intel(R) Xeon(R) Platinum 8480+",
)
# The same CPU in a VM whose hypervisor hides AMX.
SAPPHIRE_RAPIDS_NO_AMX = cpuinfo(
    "GenuineIntel", 6, 0x8F, "fma f16c avx2 avx512f avx512bw avx_vnni avx512_vnni avx512_bf16 avx512_fp16"
)
ZEN4_GENOA = cpuinfo(
    "AuthenticAMD", 25, 0x11, "fma f16c avx2 avx512f avx512bw avx512_vnni avx512_bf16", mhz=2400.0, name="EPYC 9654"
)
ZEN3_MILAN = cpuinfo("AuthenticAMD", 25, 1, "fma f16c avx2", mhz=2445.406, name="AMD EPYC")  # this CI host
ZEN5_TURIN = cpuinfo("AuthenticAMD", 26, 0x02, "fma avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni")
ZEN5_STRIX = cpuinfo("AuthenticAMD", 26, 0x24, "fma avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni")
# A KVM guest of ours: the hypervisor reports family 6 model 0xA7 (Rocket Lake), with AMX, which no Rocket Lake has.
MASKED_MODEL_AMX = cpuinfo(
    "GenuineIntel",
    6,
    0xA7,
    "fma f16c avx2 avx_vnni avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_int8 amx_bf16",
    mhz=2599.998,
    name="Intel(R) Xeon(R) Processor",
)
UNKNOWN = cpuinfo("CentaurHauls", 7, 0x3B, "fma avx2", name="a CPU nobody tabled")


def test_sapphire_rapids_int8_and_bf16_dispatch_to_amx():
    host = cpu_host.parse(SAPPHIRE_RAPIDS, cores=56, max_mhz=3800.0)  # cpufreq's maximum
    int8 = cpu_peak.physical_peak(host, "int8", threads=56)
    assert (int8["uarch"], int8["isa_flag"], int8["flop_per_cycle"]) == ("Sapphire Rapids", "amx_int8", 2048)
    assert "AMX-INT8" in int8["isa"]
    assert (int8["cores"], int8["clock_mhz"], int8["clock_source"]) == (56, 3800.0, "cpufreq maximum")
    assert int8["gflops"] == pytest.approx(56 * 3800 * 2048 / 1000)
    bf16 = cpu_peak.physical_peak(host, "bf16", threads=56)
    assert (bf16["isa_flag"], bf16["flop_per_cycle"], bf16["computes"]) == ("amx_bf16", 1024, "bf16")
    f32 = cpu_peak.physical_peak(host, "f32", threads=56)
    assert (f32["isa_flag"], f32["flop_per_cycle"]) == ("avx512f", 64)  # two 512-bit FMA units x 16 lanes x 2
    assert f32["gflops"] == pytest.approx(56 * 3800 * 64 / 1000)


def test_without_the_amx_flags_int8_is_vnni_and_bf16_is_avx512_bf16_at_half_the_f32_rate():
    host = cpu_host.parse(SAPPHIRE_RAPIDS_NO_AMX, cores=8, max_mhz=3800.0)
    int8 = cpu_peak.physical_peak(host, "int8")
    assert (int8["isa_flag"], int8["flop_per_cycle"]) == ("avx512_vnni", 256)
    # one vdpbf16ps zmm (64 FLOP) per two cycles on Sapphire Rapids (tools/isa_throughput), f32 two FMAs (32 each)
    assert cpu_peak.physical_peak(host, "bf16")["flop_per_cycle"] == 32
    assert cpu_peak.physical_peak(host, "f32")["flop_per_cycle"] == 64


def test_an_isa_cap_picks_the_path_but_not_the_microarchitecture():
    environ = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}
    host = cpu_host.parse(MASKED_MODEL_AMX, cores=2).under_isa_cap(environ)
    bf16 = cpu_peak.physical_peak(host, "bf16", threads=2)
    assert bf16["uarch"].startswith("Sapphire Rapids/Emerald Rapids/Granite Rapids (by its flags")  # the AMX flags
    assert (bf16["isa_flag"], bf16["flop_per_cycle"]) == ("avx512_bf16", 32)
    assert bf16["isa"] == "AVX-512 BF16 (vdpbf16ps) (under ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16)"
    assert cpu_peak.physical_peak(host, "int8", threads=2)["isa_flag"] == "avx512_vnni"
    vnni = cpu_host.parse(MASKED_MODEL_AMX, cores=2).under_isa_cap({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"})
    assert cpu_peak.physical_peak(vnni, "bf16", threads=2)["computes"] == "f32"


CASCADE_LAKE = cpuinfo("GenuineIntel", 6, 0x55, "fma f16c avx2 avx512f avx512bw avx512_vnni")
COOPER_LAKE = cpuinfo("GenuineIntel", 6, 0x55, "fma f16c avx2 avx512f avx512bw avx512_vnni avx512_bf16")


@pytest.mark.parametrize(
    ("text", "environ", "pays", "why"),
    [
        (SAPPHIRE_RAPIDS, {}, True, "AMX-BF16 tiles (tdpbf16ps) computes 1024 FLOP/cycle on Sapphire Rapids, f32's"),
        (
            SAPPHIRE_RAPIDS,
            {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"},
            False,
            "AVX-512 BF16 (vdpbf16ps) computes 32 FLOP/cycle on Sapphire Rapids, under ONEDNN_MAX_CPU_ISA="
            "AVX512_CORE_BF16, f32's AVX-512F FMA (zmm) 64",
        ),
        (
            SAPPHIRE_RAPIDS,
            {"DNNL_MAX_CPU_ISA": "avx512_core_vnni"},
            False,
            "this CPU has no native bf16 (amx_bf16 or avx512_bf16, under DNNL_MAX_CPU_ISA=AVX512_CORE_VNNI)",
        ),
        (SAPPHIRE_RAPIDS_NO_AMX, {}, False, "AVX-512 BF16 (vdpbf16ps) computes 32 FLOP/cycle"),
        (ZEN4_GENOA, {}, True, "AVX-512 BF16 (vdpbf16ps) computes 64 FLOP/cycle on Zen 4 (EPYC Genoa), f32's"),
        (COOPER_LAKE, {}, True, "AVX-512 BF16 (vdpbf16ps) computes 128 FLOP/cycle"),
        (CASCADE_LAKE, {}, False, "this CPU has no native bf16 (amx_bf16 or avx512_bf16)"),
        (ZEN3_MILAN, {}, False, "this CPU has no native bf16"),
        (
            cpuinfo("GenuineIntel", 6, 0xD7, "fma avx2 avx512f avx512bw avx512_bf16"),
            {},
            True,
            "AVX-512 BF16 (vdpbf16ps); its FLOP/cycle are not known (GenuineIntel family 6 model 215 is not in",
        ),
    ],
)
def test_bf16_pays_where_its_path_computes_more_than_f32s(text, environ, pays, why):
    """What OpenVINO's fp16 tier runs in: bf16 only where it out-computes f32 as the dispatcher sees the CPU."""
    verdict, reason = cpu_peak.bf16_pays(cpu_host.parse(text).under_isa_cap(environ))
    assert verdict is pays and reason.startswith(why), reason


def test_zen4_runs_avx512_at_the_256_bit_rate_and_uses_the_ceiling_clock_without_cpufreq():
    host = cpu_host.parse(ZEN4_GENOA, cores=8)  # no cpufreq: cpuinfo's current 2400 MHz
    int8 = cpu_peak.physical_peak(host, "int8", threads=8)
    assert (int8["uarch"], int8["isa_flag"], int8["flop_per_cycle"]) == ("Zen 4 (EPYC Genoa)", "avx512_vnni", 128)
    assert int8["clock_mhz"] == 4400 and "ceiling" in int8["clock_source"] and "2400" in int8["clock_source"]
    assert int8["gflops"] == pytest.approx(8 * 4400 * 128 / 1000)
    # double-pumped: AVX-512 FMA gives no more FLOP/cycle than AVX2's two 256-bit FMA pipes
    assert cpu_peak.physical_peak(host, "f32")["flop_per_cycle"] == 32
    assert cpu_peak.physical_peak(host, "bf16")["flop_per_cycle"] == 64


def test_zen5_server_has_the_full_512_bit_datapath_and_strix_point_has_not():
    turin = cpu_peak.physical_peak(cpu_host.parse(ZEN5_TURIN, cores=4, max_mhz=4000.0), "f32")
    strix = cpu_peak.physical_peak(cpu_host.parse(ZEN5_STRIX, cores=4, max_mhz=4000.0), "f32")
    assert (turin["flop_per_cycle"], strix["flop_per_cycle"]) == (64, 32)


def test_zen3_int8_takes_the_avx2_path_and_bf16_falls_back_to_f32():
    host = cpu_host.parse(ZEN3_MILAN, cores=2)
    int8 = cpu_peak.physical_peak(host, "int8", threads=2)
    assert (int8["uarch"], int8["isa_flag"], int8["flop_per_cycle"]) == ("Zen 3 (EPYC Milan)", "avx2", 64)
    assert "no VNNI" in int8["isa"]
    assert int8["gflops"] == pytest.approx(2 * 4100 * 64 / 1000)
    bf16 = cpu_peak.physical_peak(host, "bf16", threads=2)
    assert (bf16["dtype"], bf16["computes"], bf16["isa_flag"], bf16["flop_per_cycle"]) == ("bf16", "f32", "fma", 32)
    assert "the backend runs f32" in bf16["isa"]


def test_cores_are_the_threads_the_run_uses_at_most_the_hosts():
    host = cpu_host.parse(ZEN3_MILAN, cores=2)
    assert cpu_peak.physical_peak(host, "f32", threads=1)["cores"] == 1
    assert cpu_peak.physical_peak(host, "f32", threads=16)["cores"] == 2


def test_a_current_clock_above_the_ceiling_is_used_and_labelled():
    host = cpu_host.parse(cpuinfo("AuthenticAMD", 25, 1, "fma avx2", mhz=4500.0), cores=1)
    peak = cpu_peak.physical_peak(host, "f32")
    assert peak["clock_mhz"] == 4500.0 and "above" in peak["clock_source"]


def test_an_unknown_cpu_is_unknown():
    peak = cpu_peak.physical_peak(cpu_host.parse(UNKNOWN, cores=4, max_mhz=2000.0), "f32")
    assert (peak["known"], peak["uarch"]) == (False, "unknown")
    assert "CentaurHauls family 7 model 59" in peak["reason"]


def test_a_model_number_its_flags_contradict_is_identified_by_the_flags_where_they_pin_the_rates():
    host = cpu_host.parse(MASKED_MODEL_AMX, cores=2)  # no cpufreq: the ceiling of the rows the flags fit
    int8 = cpu_peak.physical_peak(host, "int8", threads=2)
    assert (int8["isa_flag"], int8["flop_per_cycle"], int8["clock_mhz"]) == ("amx_int8", 2048, 4800)
    assert int8["uarch"].startswith("Sapphire Rapids/Emerald Rapids/Granite Rapids (by its flags")
    assert "Rocket Lake" in int8["uarch"] and "amx_int8" in int8["uarch"]
    bf16 = cpu_peak.physical_peak(host, "bf16", threads=2)
    assert (bf16["computes"], bf16["isa_flag"], bf16["flop_per_cycle"]) == ("bf16", "amx_bf16", 1024)
    assert cpu_peak.physical_peak(host, "f32", threads=2)["flop_per_cycle"] == 64  # a Xeon's two FMA units


def test_contradicting_flags_that_fit_rows_of_different_rates_are_unknown():
    # Rocket Lake's model with avx512_bf16 but no AMX: Cooper Lake (128 bf16) or Sapphire Rapids with AMX masked
    host = cpu_host.parse(cpuinfo("GenuineIntel", 6, 0xA7, "fma avx2 avx512f avx512bw avx512_vnni avx512_bf16"))
    peak = cpu_peak.physical_peak(host, "bf16")
    assert (peak["known"], peak["uarch"]) == (False, "unknown")
    assert "Rocket Lake, which has no avx512_bf16" in peak["reason"]


def test_an_untabled_model_stays_unknown_whatever_its_flags():
    host = cpu_host.parse(cpuinfo("GenuineIntel", 6, 0xD7, "fma avx2 avx512f avx512bw avx512_vnni amx_int8 amx_bf16"))
    assert cpu_peak.physical_peak(host, "int8")["known"] is False


def test_a_known_cpu_without_any_tabled_path_is_not_guessed():
    host = cpu_host.parse(cpuinfo("AuthenticAMD", 25, 1, "sse4_2"), cores=1)  # a VM that masks AVX2 and FMA
    assert cpu_peak.physical_peak(host, "int8")["known"] is False


def test_every_row_has_an_f32_and_an_int8_path_and_no_model_is_in_two_rows():
    seen = set()
    for vendor, family, models, uarch in cpu_peak.TABLE:
        assert "fma" in uarch.rates and "avx2" in uarch.rates, uarch.name
        assert uarch.ceiling_mhz > 0
        for model in models:
            assert (vendor, family, model) not in seen, uarch.name
            seen.add((vendor, family, model))
