// Which GroupNorm form OpenVINO runs: engine/openvino_group_norm.py's rewrite, for the C++ runner.
#pragma once

#include <memory>

#include <openvino/core/model.hpp>

namespace bit {

struct GroupNorms {
  int rewritten = 0;
  int folded = 0;  // of those, with their gamma and beta in one multiply-add
};

// Rewrite each Reshape -> MVN -> (unit scale, zero bias) -> Reshape GroupNorm of `model` (the bundle's form, as
// OpenVINO reads it) into per-channel statistics on the [N,C,H,W] tensor as it is, so that no layout Reorder is
// needed around it, with the per-channel gamma and beta after it folded into one multiply-add x*a + b; returns how
// many of each. Same arithmetic and same checks as the Python runner's; no constant is folded (an INT8 graph keeps
// its weights' dequantization, so its convolutions stay INT8).
GroupNorms rewrite_group_norms(const std::shared_ptr<ov::Model>& model);

}  // namespace bit
