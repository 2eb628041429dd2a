// The CPU as engine/cpu_host.py sees it, and engine/cpu_peak.py's bf16_pays: whether the fp16 tier computes faster
// in bf16 than in f32 here. The flags, oneDNN's caps and the FLOP/cycle table are engine/cpu_table.json, built in,
// so this library and the Python runner decide from the same copy by the same rule (docs/cpp.md, "Arithmetic").
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace bit {

struct CpuHost {
  std::string vendor;  // GenuineIntel, AuthenticAMD, ... ("" where unknown)
  std::optional<int> family, model;
  std::string name;             // cpuinfo's model name
  std::set<std::string> flags;  // all of cpuinfo's: they identify the CPU, above a cap too
  std::string isa_cap;          // "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI": the dispatcher cap this view obeys, or ""

  // The flags a kernel may use: all, or under isa_cap the kernel flags it allows and no other.
  std::set<std::string> dispatch_flags() const;
  // ", under ONEDNN_MAX_CPU_ISA=..." for a message, or "".
  std::string under_cap() const;
  // The flag that gives native bf16 arithmetic within the cap (amx_bf16, avx512_bf16), or "".
  std::string bf16() const;
  // The CPU's kernel flags, in engine/cpu_table.json's order (those above a cap too: they identify the CPU).
  std::vector<std::string> kernel_flags() const;
};

// A CpuHost from the text of /proc/cpuinfo (its first processor block).
CpuHost parse_cpuinfo(const std::string& text);
// `host` as oneDNN sees it under the cap the environment sets (ONEDNN_MAX_CPU_ISA, else DNNL_MAX_CPU_ISA: the first
// set wins; a value oneDNN does not accept caps nothing). `environment` maps names to values.
CpuHost under_isa_cap(CpuHost host, const std::map<std::string, std::string>& environment);
// This process's environment's cap variables, for under_isa_cap.
std::map<std::string, std::string> isa_cap_environment();
// This machine's CPU, /proc/cpuinfo read once per process (an empty CpuHost where it is unreadable).
const CpuHost& this_host();
// This machine's CPU as OpenVINO's oneDNN dispatches on it: this_host() under the environment's cap.
CpuHost onednn_host();

struct Bf16Verdict {
  bool pays = false;
  std::string why;  // the same words as engine/cpu_peak.bf16_pays
};
// True where the bf16 path dispatched computes more FLOP per cycle than f32's on this microarchitecture, or where
// the CPU has native bf16 and the table does not know it; false without native bf16 (within the cap).
Bf16Verdict bf16_pays(const CpuHost& host);

}  // namespace bit
