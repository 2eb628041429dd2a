// Which stem OpenVINO runs: engine/openvino_pad_pool.py's rewrite, for the C++ runner.
#pragma once

#include <memory>

#include <openvino/core/model.hpp>

namespace bit {

// Fold each zero Pad (constant mode, spatial axes only) whose one consumer is a floor-rounded MaxPool without
// padding of its own into that MaxPool, padded by the same amounts, then one Maximum with a constant that is 0
// where the window covered a padded zero and -inf elsewhere; returns how many. Exact, as in the Python runner.
int rewrite_pad_pools(const std::shared_ptr<ov::Model>& model);

}  // namespace bit
