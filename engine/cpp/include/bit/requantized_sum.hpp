// Which residual sums OpenVINO computes from the convolutions' float outputs: engine/openvino_requantized_sum.py's
// rewrite, for the C++ runner.
#pragma once

#include <memory>

#include <openvino/core/model.hpp>

namespace bit {

// How many Adds were fed from their convolutions, and how many of them were put behind one reader.
struct RequantizedSums {
  int fed = 0;
  int written_once = 0;
};

// Feed each Add from the convolutions whose dequantized outputs it sums (ONNX's DequantizeLinear(QuantizeLinear(Conv))
// as OpenVINO reads it, each step read only by the next), and put each such Add read more than once behind a single
// reader (Maximum(sum, -inf)) so that OpenVINO writes the sum once. For models whose float layers run in bf16, as in
// the Python runner.
RequantizedSums rewrite_requantized_sums(const std::shared_ptr<ov::Model>& model);

}  // namespace bit
