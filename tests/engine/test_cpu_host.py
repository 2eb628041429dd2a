"""engine/cpu_host.py on cpuinfo texts of the CPUs users have: what it reads, what it concludes for bf16 and INT8."""

from bit_trt.engine.cpu_host import X86_64_LEVELS, idle_record, parse, this_host

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse2 avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: something else
"""
ZEN4 = """vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9654 96-Core Processor
cpu MHz\t\t: 2400.000
flags\t\t: fpu avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16
"""
ZEN3 = """vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
cpu MHz\t\t: 2445.406
flags\t\t: fpu avx avx2 fma f16c
"""
ALDER_LAKE = "vendor_id: GenuineIntel\ncpu family: 6\nmodel: 151\nflags: avx2 fma avx_vnni\n"


def test_reads_the_first_processor_block():
    host = parse(SAPPHIRE_RAPIDS, cores=56, max_mhz=3800.0)
    assert (host.vendor, host.family, host.model) == ("GenuineIntel", 6, 143)
    assert host.name == "Intel(R) Xeon(R) Platinum 8480+"
    assert (host.cores, host.max_mhz, host.mhz_source) == (56, 3800.0, "cpufreq cpuinfo_max_freq")
    assert host.kernel_flags()[-4:] == ["avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"]


def test_native_bf16_and_int8_dot_products_best_first():
    assert (parse(SAPPHIRE_RAPIDS).bf16, parse(SAPPHIRE_RAPIDS).int8_dot) == ("amx_bf16", "amx_int8")
    assert (parse(ZEN4).bf16, parse(ZEN4).int8_dot) == ("avx512_bf16", "avx512_vnni")
    assert (parse(ALDER_LAKE).bf16, parse(ALDER_LAKE).int8_dot) == (None, "avx_vnni")
    zen3 = parse(ZEN3)
    assert (zen3.bf16, zen3.int8_dot) == (None, None)
    assert zen3.features() == "no bf16 (amx_bf16 or avx512_bf16), no INT8 dot product (amx_int8, avx512_vnni, avx_vnni)"


def test_onednns_isa_cap_takes_the_flags_above_it_out_of_dispatch_and_says_so():
    host = parse(SAPPHIRE_RAPIDS)
    vnni = host.under_isa_cap({"ONEDNN_MAX_CPU_ISA": "avx512_core_vnni"})
    assert vnni.isa_cap == "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI"
    assert (vnni.bf16, vnni.int8_dot) == (None, "avx512_vnni")
    assert (
        vnni.features() == "no bf16 (amx_bf16 or avx512_bf16), avx512_vnni, under ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI"
    )
    assert vnni.kernel_flags() == host.kernel_flags()  # the CPU is the same: its flags still identify it
    assert "amx_bf16" not in vnni.dispatch_flags and "fpu" in vnni.dispatch_flags  # only kernel flags are capped
    assert vnni.to_record()["isa_cap"] == "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI"
    bf16 = host.under_isa_cap({"DNNL_MAX_CPU_ISA": "AVX512_CORE_BF16"})
    assert (bf16.bf16, bf16.int8_dot) == ("avx512_bf16", "avx512_vnni")
    # ONEDNN_ wins over the older DNNL_ name; ALL, DEFAULT and a value oneDNN does not know cap nothing
    both = host.under_isa_cap({"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"})
    assert (both.isa_cap, both.bf16, both.int8_dot) == ("ONEDNN_MAX_CPU_ISA=AVX2", None, None)
    for value in ("ALL", "DEFAULT", "AVX9000", ""):
        assert host.under_isa_cap({"ONEDNN_MAX_CPU_ISA": value}) is host
    assert host.under_isa_cap({}) is host and host.to_record()["isa_cap"] is None


def test_int8_without_a_dot_product_is_said_and_with_one_it_is_not():
    assert parse(SAPPHIRE_RAPIDS).int8_note() == "" and parse(ALDER_LAKE).int8_note() == ""  # AMX; AVX-VNNI
    assert parse(ZEN3).int8_note() == (
        "int8 runs on 16-bit multiply-adds: this CPU has no INT8 dot product (amx_int8, avx512_vnni, avx_vnni), "
        "so INT8 gains less over f32 (docs/cpu.md)"
    )
    capped = parse(SAPPHIRE_RAPIDS).under_isa_cap({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})
    assert "(amx_int8, avx512_vnni, avx_vnni, under ONEDNN_MAX_CPU_ISA=AVX512_CORE)" in capped.int8_note()


def test_without_cpufreq_the_clock_is_the_current_one_and_says_so():
    zen3 = parse(ZEN3, cores=2)
    assert zen3.max_mhz == 2445.406 and zen3.mhz_source.startswith("cpuinfo cpu MHz (the current clock")
    assert parse("").mhz_source == "unknown" and parse("").max_mhz is None
    assert parse("cpu family: x\nmodel: \n").family is None  # a field it cannot read is unknown, not an error


def test_this_host_is_recorded_with_its_flags():
    record = this_host().to_record()
    assert record["cores"] >= 1
    assert set(record) == {
        "name",
        "vendor",
        "family",
        "model",
        "cores",
        "max_mhz",
        "mhz_source",
        "kernel_flags",
        "isa_cap",
        "bf16",
        "int8_dot",
    }


def test_how_an_idle_core_waits_is_read_from_sysfs(tmp_path):
    """A VM guest with haltpoll and no guest polling (this project's CI host), as sysfs gives it; and a host without
    those files (another driver, a container without /sys, macOS): None for each, no error."""
    cpuidle = tmp_path / "devices/system/cpu/cpuidle"
    cpuidle.mkdir(parents=True)
    (cpuidle / "current_driver").write_text("haltpoll\n")
    (cpuidle / "current_governor_ro").write_text("haltpoll\n")  # older kernels: the read-only file alone
    params = tmp_path / "module/haltpoll/parameters"
    params.mkdir(parents=True)
    (params / "guest_halt_poll_ns").write_text("0\n")
    assert idle_record(str(tmp_path)) == {"driver": "haltpoll", "governor": "haltpoll", "guest_halt_poll_ns": "0"}
    (cpuidle / "current_governor").write_text("menu\n")  # the writable file, where present, is the one in force
    assert idle_record(str(tmp_path))["governor"] == "menu"
    empty = tmp_path / "none"
    empty.mkdir()
    assert idle_record(str(empty)) == {"driver": None, "governor": None, "guest_halt_poll_ns": None}


# A whole flags line of an EPYC 7763 (Zen 3), as /proc/cpuinfo writes it: SSE3 is pni, LZCNT is abm.
ZEN3_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx "
    "mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid aperfmperf rapl pni "
    "pclmulqdq monitor ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm "
    "cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext "
    "perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 invpcid_single hw_pstate ssbd mba ibrs ibpb "
    "stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a rdseed adx smap clflushopt clwb sha_ni "
    "xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf xsaveerptr rdpru "
    "wbnoinvd arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter "
    "pfthreshold v_vmsave_vmload vgif v_spec_ctrl umip pku ospke vaes vpclmulqdq rdpid overflow_recov succor smca fsrm"
)


def test_the_x86_64_levels_a_cpu_runs_take_every_lower_levels_flags_too():
    zen3 = parse(ZEN3.replace("fpu avx avx2 fma f16c", ZEN3_FLAGS))
    assert zen3.lacks_for("x86-64-v3") == [] and zen3.lacks_for("x86-64-v2") == []
    assert zen3.lacks_for("x86-64-v4") == ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]
    # AVX-512 alone is not v4: a CPU (or a hypervisor's view of one) without v2's flags runs none of the levels.
    partial = parse("flags: avx512f avx512bw avx512cd avx512dq avx512vl avx avx2 fma\n")
    assert partial.lacks_for("x86-64-v4")[:3] == ["abm", "bmi1", "bmi2"] and "sse4_2" in partial.lacks_for("x86-64-v4")
    assert list(X86_64_LEVELS) == ["x86-64-v4", "x86-64-v3", "x86-64-v2"]  # best first: the order a set is tried in
