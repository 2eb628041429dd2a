#include "bit/preprocess.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "bit/image_size.hpp"

namespace bit {
namespace fs = std::filesystem;

namespace {

// The first line of an OpenCV error, without its "OpenCV(4.6.0) file.cpp:79: error: (-215:...)" prefix noise.
std::string reason(const cv::Exception& exc) {
  std::string msg = exc.err.empty() ? exc.what() : exc.err;
  auto nl = msg.find('\n');
  return nl == std::string::npos ? msg : msg.substr(0, nl);
}

// OpenCV decodes a format it cannot read from memory (Radiance HDR) through a file it creates again after
// mkstemp, 0666 less the umask and following links: in /tmp, readable by every local user and open to a planted
// symlink. So before the first decode $OPENCV_TEMP_PATH names a folder only this user can enter: $TMPDIR's
// bit-trt-opencv-<uid>, kept, while it is a real folder of this user's with no access for others; else one of this
// process's own (mkdtemp: 0700), removed at exit; else a path where nothing can be made. engine/opencv_temp.py says
// why at length.
std::string made_opencv_temp;  // this process's own folder, removed at exit
void remove_opencv_temp() {
  std::error_code ignored;
  fs::remove_all(made_opencv_temp, ignored);
}
bool users_opencv_temp(const std::string& folder) {
  if (mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST) return false;
  struct stat st {};
  return lstat(folder.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
         (st.st_mode & 077) == 0 && access(folder.c_str(), W_OK | X_OK) == 0;
}
void private_opencv_temp() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* tmp = std::getenv("TMPDIR");
    const std::string root = tmp && *tmp ? std::string(tmp) : std::string("/tmp");
    std::string name = root + "/bit-trt-opencv-" + std::to_string(geteuid());
    if (!users_opencv_temp(name)) {
      name = root + "/bit-trt-opencv-XXXXXX";
      if (mkdtemp(name.data())) {
        made_opencv_temp = name;
        std::atexit(remove_opencv_temp);
      } else {  // no writable temporary folder: such formats fail to decode, the rest decode
        name = "/dev/null/bit-trt-opencv";
      }
    }
    setenv("OPENCV_TEMP_PATH", name.c_str(), 1);
  });
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

// At most `total` bytes of decoding in flight, handed out first come, first served (engine/preprocess.py's
// _DecodeBudget): every holder is one bounded decode, so every wait ends.
class DecodeBudget {
 public:
  explicit DecodeBudget(std::uint64_t total) : total_(total), free_(total) {}
  std::uint64_t total() const { return total_; }
  void acquire(std::uint64_t bytes) {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::uint64_t turn = next_++;
    turns_.push_back(turn);
    changed_.wait(lock, [&] { return turns_.front() == turn && free_ >= bytes; });
    turns_.pop_front();
    free_ -= bytes;
    changed_.notify_all();
  }
  void release(std::uint64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_ += bytes;
    changed_.notify_all();
  }

 private:
  std::uint64_t total_, free_, next_ = 0;
  std::deque<std::uint64_t> turns_;
  std::mutex mutex_;
  std::condition_variable changed_;
};

std::mutex budget_mutex;
std::shared_ptr<DecodeBudget> budget = std::make_shared<DecodeBudget>(kDefaultDecodeBudget);

std::shared_ptr<DecodeBudget> current_budget() {
  std::lock_guard<std::mutex> lock(budget_mutex);
  return budget;
}

class Reservation {
 public:
  Reservation(std::shared_ptr<DecodeBudget> b, std::uint64_t bytes) : budget_(std::move(b)), bytes_(bytes) {
    budget_->acquire(bytes_);
  }
  ~Reservation() { budget_->release(bytes_); }
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;

 private:
  std::shared_ptr<DecodeBudget> budget_;
  std::uint64_t bytes_;
};

std::string fixed(double value, int decimals) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

// The image's size from its header; refused before any decoding over max_pixels or the whole decode budget.
ImageSize declared_size(const std::vector<std::uint8_t>& data, const std::string& source, std::uint64_t max_pixels,
                        const DecodeBudget& budget) {
  if (data.empty()) throw Error(source + ": empty file, not an image");
  const ImageSize size = encoded_size(data.data(), data.size(), source);
  const std::string what = source + ": a " + std::to_string(size.width) + "x" + std::to_string(size.height) + " " +
                           size.format + " image (" + fixed(size.pixels() / 1e6, 1) + " megapixels)";
  if (size.pixels() > max_pixels)
    throw Error(what + " is over the limit of " + fixed(max_pixels / 1e6, 1) +
                " megapixels (max_image_pixels, --max-image-pixels)");
  if (size.decode_bytes() > budget.total())
    throw Error(what + " would take " + fixed(size.decode_bytes() / 1048576.0, 0) +
                " MiB to decode, over this process's decode memory of " + fixed(budget.total() / 1048576.0, 0) +
                " MiB (--max-decode-mb)");
  return size;
}

cv::Mat decode_bgr(const std::vector<std::uint8_t>& data, const std::string& source) {
  private_opencv_temp();  // a decoder that reads from a file writes the upload there, not in /tmp
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
  return bgr;
}

cv::Mat bgr_to_rgb(const cv::Mat& bgr) {
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

// Encoded bytes whose header was checked -> uint8 RGB R x R, the full-size image alive only inside the reservation.
// Resizing before the BGR -> RGB swap gives the same bits (every interpolation works on each channel alone) and
// swaps R x R pixels instead of the whole photo.
cv::Mat resized(const std::vector<std::uint8_t>& data, const InputSpec& spec, const std::string& source,
                const ImageSize& size, const std::shared_ptr<DecodeBudget>& budget) {
  cv::Mat small;
  {
    Reservation held(budget, size.decode_bytes());
    small = resize_to(decode_bgr(data, source), spec);
  }
  return bgr_to_rgb(small);
}

std::vector<std::uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot read");
  std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(path.string() + ": read error");
  return data;
}

}  // namespace

void set_decode_budget(std::uint64_t bytes) {
  if (bytes == 0) throw Error("the decode budget must be a positive number of bytes");
  std::lock_guard<std::mutex> lock(budget_mutex);
  budget = std::make_shared<DecodeBudget>(bytes);
}

std::uint64_t decode_budget() { return current_budget()->total(); }

cv::Mat decode(const std::vector<std::uint8_t>& data, const std::string& source, std::uint64_t max_pixels) {
  const auto b = current_budget();
  const ImageSize size = declared_size(data, source, max_pixels, *b);
  Reservation held(b, size.decode_bytes());
  return bgr_to_rgb(decode_bgr(data, source));
}

cv::Mat decode_resized(const std::vector<std::uint8_t>& data, const InputSpec& spec, const std::string& source,
                       std::uint64_t max_pixels) {
  const auto b = current_budget();
  return resized(data, spec, source, declared_size(data, source, max_pixels, *b), b);
}

cv::Mat read_image(const fs::path& path, std::uint64_t max_pixels) {
  return decode(read_file(path), path.string(), max_pixels);
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

std::vector<float> preprocess(const std::vector<fs::path>& images, const InputSpec& spec, std::uint64_t max_pixels) {
  if (images.empty()) throw Error("empty batch: pass at least one image");
  // Every header first, so a batch holding one image over the limits is refused before anything is decoded.
  const auto b = current_budget();
  std::vector<std::vector<std::uint8_t>> files;
  std::vector<ImageSize> sizes;
  for (const auto& image : images) {
    files.push_back(read_file(image));
    sizes.push_back(declared_size(files.back(), image.string(), max_pixels, *b));
  }
  const std::size_t per = static_cast<std::size_t>(spec.resolution) * spec.resolution * 3;
  std::vector<float> batch(per * images.size());
  for (std::size_t i = 0; i < images.size(); ++i)
    scale_uint8(resized(files[i], spec, images[i].string(), sizes[i], b), batch.data() + per * i);
  return batch;
}

}  // namespace bit
