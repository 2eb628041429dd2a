// Image preprocessing exactly as engine/preprocess.py does it: OpenCV imdecode (IMREAD_COLOR) -> RGB ->
// resize to R x R (skipped when already R x R) with the manifest's interpolation on uint8 ->
// float32 = uint8 * float32(1/255) -> NHWC. And its limits: an image declaring more than max_pixels is refused
// from its header (bit/image_size.hpp) before OpenCV allocates it, and decoding memory in flight in the process
// stays within the decode budget (decodes wait for their share, first come, first served).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "bit/bundle.hpp"

namespace bit {

// engine/preprocess.py's DEFAULT_MAX_IMAGE_PIXELS (16384 x 16384) and DEFAULT_DECODE_BUDGET (2 GiB).
constexpr std::uint64_t kDefaultMaxImagePixels = std::uint64_t{1} << 28;
constexpr std::uint64_t kDefaultDecodeBudget = std::uint64_t{2} << 30;

// The process's decoding memory in flight, in bytes (every thread, every Classifier); set it before decoding.
void set_decode_budget(std::uint64_t bytes);
std::uint64_t decode_budget();

// Encoded bytes -> uint8 RGB HWC (CV_8UC3) at full size. Empty, corrupt or non-image bytes, and images over the
// limits: bit::Error naming `source`.
cv::Mat decode(const std::vector<std::uint8_t>& data, const std::string& source = "image",
               std::uint64_t max_pixels = kDefaultMaxImagePixels);
cv::Mat read_image(const std::filesystem::path& path, std::uint64_t max_pixels = kDefaultMaxImagePixels);
// Encoded bytes -> uint8 RGB R x R, the full-size image alive only inside the call (and the decode budget).
cv::Mat decode_resized(const std::vector<std::uint8_t>& data, const InputSpec& spec,
                       const std::string& source = "image", std::uint64_t max_pixels = kDefaultMaxImagePixels);
// uint8 RGB -> R x R with the spec's interpolation (unchanged when already R x R).
cv::Mat resize_to(const cv::Mat& rgb, const InputSpec& spec);
// uint8 RGB R x R -> float32 values written to out[0 .. R*R*3), HWC order.
void scale_uint8(const cv::Mat& rgb, float* out);
void scale_uint8(const std::uint8_t* pixels, std::size_t count, float* out);

// Image files -> float32 NHWC batch [N, R, R, 3] in [0, 1].
std::vector<float> preprocess(const std::vector<std::filesystem::path>& images, const InputSpec& spec,
                              std::uint64_t max_pixels = kDefaultMaxImagePixels);

}  // namespace bit
