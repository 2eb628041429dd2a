#include "bit/preprocess.hpp"

#include <fstream>
#include <iterator>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace bit {
namespace fs = std::filesystem;

namespace {

// The first line of an OpenCV error, without its "OpenCV(4.6.0) file.cpp:79: error: (-215:...)" prefix noise.
std::string reason(const cv::Exception& exc) {
  std::string msg = exc.err.empty() ? exc.what() : exc.err;
  auto nl = msg.find('\n');
  return nl == std::string::npos ? msg : msg.substr(0, nl);
}

int interpolation(Resize resize) {
  switch (resize) {
    case Resize::Bilinear: return cv::INTER_LINEAR;
    case Resize::Area: return cv::INTER_AREA;
    case Resize::Bicubic: return cv::INTER_CUBIC;
    case Resize::Nearest: return cv::INTER_NEAREST;
  }
  throw Error("unknown resize");
}

}  // namespace

cv::Mat decode(const std::vector<std::uint8_t>& data, const std::string& source) {
  if (data.empty()) throw Error(source + ": empty file, not an image");
  cv::Mat bgr;
  try {
    // IMREAD_COLOR turns grayscale into 3 channels and drops alpha: every image arrives as 8-bit BGR.
    bgr = cv::imdecode(cv::Mat(1, static_cast<int>(data.size()), CV_8UC1, const_cast<std::uint8_t*>(data.data())),
                       cv::IMREAD_COLOR);
  } catch (const cv::Exception& exc) {
    throw Error(source + ": not a decodable image (OpenCV: " + reason(exc) + ")");
  }
  if (bgr.empty()) throw Error(source + ": not a decodable image (corrupt, truncated, or not an image format)");
  if (bgr.type() != CV_8UC3) throw Error(source + ": decoded to an unexpected pixel type");
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

cv::Mat read_image(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot read");
  std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(path.string() + ": read error");
  return decode(data, path.string());
}

cv::Mat resize_to(const cv::Mat& rgb, const InputSpec& spec) {
  if (rgb.rows == spec.resolution && rgb.cols == spec.resolution) return rgb;
  cv::Mat out;
  try {
    cv::resize(rgb, out, cv::Size(spec.resolution, spec.resolution), 0, 0, interpolation(spec.resize));
  } catch (const cv::Exception& exc) {
    throw Error("cannot resize a " + std::to_string(rgb.cols) + "x" + std::to_string(rgb.rows) +
                " image (OpenCV: " + reason(exc) + ")");
  }
  return out;
}

void scale_uint8(const std::uint8_t* pixels, std::size_t count, float* out) {
  // numpy: images_u8.astype(np.float32) * np.float32(1 / 255): the double 1/255 rounded once to float32.
  const float scale = static_cast<float>(1.0 / 255.0);
  for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<float>(pixels[i]) * scale;
}

void scale_uint8(const cv::Mat& rgb, float* out) {
  if (rgb.type() != CV_8UC3) throw Error("scale_uint8: expected an 8-bit 3-channel image");
  const std::size_t row = static_cast<std::size_t>(rgb.cols) * 3;
  for (int y = 0; y < rgb.rows; ++y) scale_uint8(rgb.ptr<std::uint8_t>(y), row, out + row * static_cast<std::size_t>(y));
}

std::vector<float> preprocess(const std::vector<fs::path>& images, const InputSpec& spec) {
  if (images.empty()) throw Error("empty batch: pass at least one image");
  const std::size_t per = static_cast<std::size_t>(spec.resolution) * spec.resolution * 3;
  std::vector<float> batch(per * images.size());
  for (std::size_t i = 0; i < images.size(); ++i) scale_uint8(resize_to(read_image(images[i]), spec), batch.data() + per * i);
  return batch;
}

}  // namespace bit
