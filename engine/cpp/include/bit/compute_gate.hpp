// The bf16 gate's kept verdicts (engine/compute_gate.py in C++): the verdict for one artifact, runtime description,
// CPU and tolerance, kept in the user cache ($BIT_TRT_CACHE, else ~/.cache/bit-trt; compute-gate/) so a server pays
// for the check once per host and model, not on every start. Only a file this user owns, no one else may write and
// that is no link is taken: in a shared cache another local user could otherwise make a failing model pass.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "bit/bundle.hpp"
#include "bit/cpu_host.hpp"

namespace bit {

struct GateVerdict {
  bool passed = false;
  std::vector<std::string> failures;  // as bit::check words them
  double rel_l2 = 0, cosine_min = 0, max_abs = 0, top1_agreement = 0;
  std::string described;
  std::size_t images = 0;
};

// Where the verdict for these is kept; empty where the user has no cache folder (no $BIT_TRT_CACHE and no home).
std::filesystem::path gate_verdict_path(const std::string& artifact_sha256, const std::string& described,
                                        const CpuHost& cpu, const Tolerance& tolerance);
// The kept verdict, if there is one this user alone may have written; none for anything else (missing, unreadable,
// damaged, a link, another owner, group- or world-writable).
std::optional<GateVerdict> read_gate_verdict(const std::filesystem::path& path);
// Keeps `verdict` at `path` (0600, in a 0700 folder), all or nothing; a failure to write is ignored (the check
// simply runs again next time).
void keep_gate_verdict(const std::filesystem::path& path, const GateVerdict& verdict);

}  // namespace bit
