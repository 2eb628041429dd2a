// Image preprocessing exactly as engine/preprocess.py does it: OpenCV imdecode (IMREAD_COLOR) -> RGB ->
// resize to R x R (skipped when already R x R) with the manifest's interpolation on uint8 ->
// float32 = uint8 * float32(1/255) -> NHWC.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "bit/bundle.hpp"

namespace bit {

// Encoded bytes -> uint8 RGB HWC (CV_8UC3). Empty, corrupt or non-image bytes: bit::Error naming `source`.
cv::Mat decode(const std::vector<std::uint8_t>& data, const std::string& source = "image");
cv::Mat read_image(const std::filesystem::path& path);
// uint8 RGB -> R x R with the spec's interpolation (unchanged when already R x R).
cv::Mat resize_to(const cv::Mat& rgb, const InputSpec& spec);
// uint8 RGB R x R -> float32 values written to out[0 .. R*R*3), HWC order.
void scale_uint8(const cv::Mat& rgb, float* out);
void scale_uint8(const std::uint8_t* pixels, std::size_t count, float* out);

// Image files -> float32 NHWC batch [N, R, R, 3] in [0, 1].
std::vector<float> preprocess(const std::vector<std::filesystem::path>& images, const InputSpec& spec);

}  // namespace bit
