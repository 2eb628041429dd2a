// Which residual sums OpenVINO computes from the convolutions' float outputs: engine/openvino_requantized_sum.py's
// rewrite, for the C++ runner.
#pragma once

#include <memory>

#include <openvino/core/model.hpp>

namespace bit {

// Feed each Add from the convolutions whose dequantized outputs it sums (ONNX's DequantizeLinear(QuantizeLinear(Conv))
// as OpenVINO reads it, each step read only by the next); returns how many Adds. For models whose float layers run
// in bf16, as in the Python runner.
int rewrite_requantized_sums(const std::shared_ptr<ov::Model>& model);

}  // namespace bit
