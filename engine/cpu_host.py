"""What CPU is this: vendor, family/model, name, cores, clock and the ISA flags that decide which kernels run.

The one reader of /proc/cpuinfo. The OpenVINO runner asks it whether the CPU computes bf16 natively; bit-bench
and the roofline record it beside every result, because absolute times only compare on the same CPU and the
kernels a backend dispatches depend on these flags. `parse` takes the text of a cpuinfo file, so a test (or a
result file from another host) can describe any CPU.

oneDNN, under OpenVINO's CPU plugin, may be told to dispatch nothing wider than an instruction set
(ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI, say: the CPU then runs OpenVINO as one without AMX or bf16 would).
`onednn_host()` is the CPU as oneDNN sees it then: the same CPU (`flags`, which identify it), with the kernel
flags above the cap out of `dispatch_flags`. ONNX Runtime's MLAS does not read the cap.

The flags and caps are data, in engine/cpu_table.json with cpu_peak.py's rates, so that the C++ library
(engine/cpp/src/cpu_host.cpp) decides as this module does from the same copy.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field, replace

# engine/cpu_table.json: the flags, caps and rates, one copy for Python and engine/cpp (which builds it in).
TABLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_table.json")
with open(TABLE_PATH, encoding="utf-8") as _f:
    CPU_TABLE = json.load(_f)

# Flags that decide which GEMM/convolution kernels a CPU backend can dispatch (names as /proc/cpuinfo spells them).
KERNEL_FLAGS = tuple(CPU_TABLE["kernel_flags"])
# Native bf16 arithmetic: AVX-512 BF16 dot products, or AMX tiles. Without one, OpenVINO runs f32.
BF16_FLAGS = tuple(CPU_TABLE["bf16_flags"])
# Native INT8 dot products, best first. Without one, INT8 runs through AVX2's 16-bit multiply-adds.
INT8_DOT_FLAGS = tuple(CPU_TABLE["int8_dot_flags"])
# oneDNN's dispatcher cap: the environment variables it reads (the first set wins) and, for each value it accepts,
# the KERNEL_FLAGS it may still dispatch.
ISA_CAP_VARIABLES = tuple(CPU_TABLE["isa_cap_variables"])
ISA_CAPS = {name: tuple(flags) for name, flags in CPU_TABLE["isa_caps"].items()}
# The x86-64 psABI's levels, best first, each with the flags it adds to the level below.
X86_64_LEVELS = {name: tuple(flags) for name, flags in CPU_TABLE["x86_64_levels"].items()}


@dataclass(frozen=True)
class CpuHost:
    vendor: str = ""  # GenuineIntel, AuthenticAMD, ... ("" where unknown)
    family: int | None = None
    model: int | None = None
    name: str = ""
    cores: int = 1  # logical CPUs this process may run on
    max_mhz: float | None = None
    mhz_source: str = "unknown"  # where max_mhz came from: cpufreq's maximum, or cpuinfo's current clock
    flags: frozenset[str] = field(default_factory=frozenset)
    isa_cap: str | None = None  # "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI": the dispatcher cap this view obeys

    @property
    def dispatch_flags(self) -> frozenset[str]:
        """The flags a kernel may use: all of them, or under `isa_cap` the kernel flags it allows and no other."""
        if self.isa_cap is None:
            return self.flags
        allowed = ISA_CAPS[self.isa_cap.partition("=")[2]]
        return frozenset(f for f in self.flags if f not in KERNEL_FLAGS or f in allowed)

    @property
    def under_cap(self) -> str:
        """ ", under ONEDNN_MAX_CPU_ISA=...", for a message about this view's flags; "" where nothing caps it."""
        return f", under {self.isa_cap}" if self.isa_cap else ""

    @property
    def bf16(self) -> str | None:
        """The flag that gives native bf16 arithmetic (within the cap), or None."""
        return next((f for f in BF16_FLAGS if f in self.dispatch_flags), None)

    @property
    def int8_dot(self) -> str | None:
        """The flag that gives native INT8 dot products (VNNI or AMX; within the cap), or None."""
        return next((f for f in INT8_DOT_FLAGS if f in self.dispatch_flags), None)

    def kernel_flags(self) -> list[str]:
        """The CPU's kernel flags (those above a cap included: they identify the CPU)."""
        return [f for f in KERNEL_FLAGS if f in self.flags]

    def lacks_for(self, level: str) -> list[str]:
        """The flags this CPU lacks to run code built for x86-64 `level` (its own and every lower level's)."""
        names = list(X86_64_LEVELS)
        needed = [flag for name in names[names.index(level) :] for flag in X86_64_LEVELS[name]]
        return [flag for flag in needed if flag not in self.flags]

    def features(self) -> str:
        """One phrase for messages: what this CPU has for bf16 and INT8 (and the cap it runs under)."""
        bf16 = self.bf16 or f"no bf16 ({' or '.join(BF16_FLAGS)})"
        int8 = self.int8_dot or f"no INT8 dot product ({', '.join(INT8_DOT_FLAGS)})"
        return f"{bf16}, {int8}{self.under_cap}"

    def int8_note(self) -> str:
        """For INT8 on a CPU without an INT8 dot product (within the cap): how its convolutions multiply there, in
        one phrase; "" where it has one."""
        if self.int8_dot:
            return ""
        return (
            f"int8 runs on 16-bit multiply-adds: this CPU has no INT8 dot product ({', '.join(INT8_DOT_FLAGS)}"
            f"{self.under_cap}), "
            "so INT8 gains less over f32 (docs/cpu.md)"
        )

    def under_isa_cap(self, environ=None) -> CpuHost:
        """This CPU as oneDNN sees it under the dispatcher cap `environ` sets (os.environ by default), if any.
        A value oneDNN does not accept caps nothing."""
        environ = os.environ if environ is None else environ
        for name in ISA_CAP_VARIABLES:
            value = environ.get(name, "").strip().upper()
            if value:
                return replace(self, isa_cap=f"{name}={value}") if value in ISA_CAPS else self
        return self

    def to_record(self) -> dict:
        return {
            "name": self.name,
            "vendor": self.vendor,
            "family": self.family,
            "model": self.model,
            "cores": self.cores,
            "max_mhz": self.max_mhz,
            "mhz_source": self.mhz_source,
            "kernel_flags": self.kernel_flags(),
            "isa_cap": self.isa_cap,
            "bf16": self.bf16,
            "int8_dot": self.int8_dot,
        }


def parse(cpuinfo: str, cores: int = 1, max_mhz: float | None = None) -> CpuHost:
    """A CpuHost from the text of /proc/cpuinfo (its first processor block). `max_mhz`: cpufreq's maximum,
    where the kernel exposes one; else the block's current `cpu MHz`, labelled as such."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    source = "cpufreq cpuinfo_max_freq" if max_mhz else "unknown"
    if not max_mhz and fields.get("cpu MHz"):
        max_mhz, source = float(fields["cpu MHz"]), "cpuinfo cpu MHz (the current clock; no cpufreq maximum)"
    return CpuHost(
        vendor=fields.get("vendor_id", ""),
        family=_int(fields.get("cpu family")),
        model=_int(fields.get("model")),
        name=fields.get("model name", ""),
        cores=cores,
        max_mhz=max_mhz,
        mhz_source=source,
        flags=frozenset(fields.get("flags", "").split()),
    )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _cpufreq_max_mhz() -> float | None:
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            return int(f.read()) / 1000  # kHz
    except (OSError, ValueError):
        return None


# How an idle core waits (Linux cpuidle), read from sysfs. On a VM whose guest runs the haltpoll driver with
# guest_halt_poll_ns 0, every idle core exits to the hypervisor; a request split over two threads, which meet after
# each layer, ran at one of two speeds a third apart there, switching every few seconds (docs/cpu.md, "Two speeds of
# one request on two threads"). Results record it, so that such rows can be told from a bare-metal host's.
IDLE_FILES = {
    "driver": ("devices/system/cpu/cpuidle/current_driver",),
    "governor": ("devices/system/cpu/cpuidle/current_governor", "devices/system/cpu/cpuidle/current_governor_ro"),
    "guest_halt_poll_ns": ("module/haltpoll/parameters/guest_halt_poll_ns",),
}


def idle_record(sysfs: str = "/sys") -> dict:
    """{driver, governor, guest_halt_poll_ns}: each as the kernel gives it, None where it has no such file."""
    record: dict[str, str | None] = {}
    for key, paths in IDLE_FILES.items():
        record[key] = None
        for path in paths:
            try:
                with open(os.path.join(sysfs, path)) as f:
                    record[key] = f.read().strip()
                break
            except OSError:
                continue
    return record


@functools.lru_cache(maxsize=1)
def this_host() -> CpuHost:
    """This machine's CPU (a CpuHost with only the core count where /proc/cpuinfo is absent, e.g. macOS)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open("/proc/cpuinfo") as f:
            return parse(f.read(), cores, _cpufreq_max_mhz())
    except OSError:
        return CpuHost(cores=cores)


def onednn_host() -> CpuHost:
    """This machine's CPU as oneDNN (OpenVINO's CPU plugin) dispatches on it: under ONEDNN_MAX_CPU_ISA if set."""
    return this_host().under_isa_cap()


def dispatch_host(backend: str) -> CpuHost:
    """This machine's CPU as `backend`'s kernels see it: OpenVINO's oneDNN obeys ONEDNN_MAX_CPU_ISA, ONNX Runtime's
    MLAS (and everything else) does not."""
    return onednn_host() if backend == "openvino" else this_host()
