// Which GroupNorm form OpenVINO runs: engine/openvino_group_norm.py's rewrite, for the C++ runner.
#pragma once

#include <memory>

#include <openvino/core/model.hpp>

namespace bit {

// Rewrite each Reshape -> MVN -> (unit scale, zero bias) -> Reshape GroupNorm of `model` (the bundle's form, as
// OpenVINO reads it) into per-channel statistics on the [N,C,H,W] tensor as it is, so that no layout Reorder is
// needed around it; returns how many. Same arithmetic and same checks as the Python runner's; no constant is folded
// (an INT8 graph keeps its weights' dequantization, so its convolutions stay INT8).
int rewrite_group_norms(const std::shared_ptr<ov::Model>& model);

}  // namespace bit
