// The graph bit-trt's OpenVINO models run: engine/openvino_graph.py's read, for the C++ runner. The bundle's file
// as OpenVINO reads it, then rewritten in memory: the GroupNorms on channel statistics, with their gamma and beta
// in one multiply-add (bit/group_norm.hpp), the
// stem's zero Pad in its MaxPool (bit/pad_pool.hpp) and, where the float layers run in bf16, each sum of
// quantized convolutions taken before their quantize (bit/requantized_sum.hpp). The file on disk stays as exported.
#pragma once

#include <memory>
#include <string>

#include <openvino/core/model.hpp>
#include <openvino/runtime/core.hpp>

namespace bit {

// How many of each rewrite one model received.
struct Rewrites {
  int group_norms = 0;
  int group_norms_folded = 0;  // of those, with their gamma and beta in one multiply-add (bit/group_norm.hpp)
  int pad_pools = 0;
  int requantized_sums = 0;
  int sums_written_once = 0;  // of those, read through one Maximum (bit/requantized_sum.hpp)
  // "49 GroupNorms on channel statistics, 49 with gamma and beta in one multiply-add, 1 zero Pad in its MaxPool";
  // empty where nothing was rewritten.
  std::string describe() const;
};

// The file at `path` read by `core` and rewritten for the float arithmetic it will be compiled in (`bf16`); what
// was rewritten goes to `rewrites` where given.
std::shared_ptr<ov::Model> read_rewritten(ov::Core& core, const std::string& path, bool bf16,
                                          Rewrites* rewrites = nullptr);

}  // namespace bit
