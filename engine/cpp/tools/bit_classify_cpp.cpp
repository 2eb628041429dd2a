// bit-classify-cpp BUNDLE IMAGE... [--precision fp32|fp16|int8] [--inference-precision f32|bf16] [--top K]
//                  [--threads N] [--max-image-pixels N]
//                  [--max-decode-mb N]
// Top-k classes of each image, printed like bit-classify. Exit 0; 1 when an image or the bundle failed;
// 2 on a usage error.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "bit/classifier.hpp"

namespace {

int usage(const std::string& why) {
  std::cerr << "bit-classify-cpp: error: " << why << " (see --help)\n";
  return 2;
}

bool parse_positive(const std::string& s, std::uint64_t& out) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || s[0] == '-' || *end != '\0' || v == 0 || v > (std::uint64_t{1} << 62)) return false;
  out = v;
  return true;
}

bool parse_int(const std::string& s, int& out) {
  char* end = nullptr;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v < 0 || v > 1 << 20) return false;
  out = static_cast<int>(v);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  bit::ClassifierOptions options;
  int top = 5;
  std::uint64_t decode_mb = bit::kDefaultDecodeBudget >> 20;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << "usage: bit-classify-cpp BUNDLE IMAGE... [--precision fp32|fp16|int8] [--inference-precision "
                   "f32|bf16]\n"
                   "                        [--top K] [--threads N] [--max-image-pixels N] [--max-decode-mb N]\n"
                   "  --inference-precision: what OpenVINO computes in (default: f32, and for fp16 bf16 where it "
                   "computes faster than f32 here, gated)\n"
                   "  --max-image-pixels: refuse an image whose header declares more pixels, before decoding it "
                   "(default "
                << bit::kDefaultMaxImagePixels << ")\n"
                << "  --max-decode-mb: memory for decoding images at once; an image that needs more is refused "
                   "(default "
                << (bit::kDefaultDecodeBudget >> 20) << ")\n";
      return 0;
    }
    if (arg == "--max-image-pixels" || arg == "--max-decode-mb") {
      if (i + 1 >= argc) return usage(arg + " needs a value");
      const std::string value = argv[++i];
      if (!parse_positive(value, arg == "--max-image-pixels" ? options.max_image_pixels : decode_mb))
        return usage(arg + " needs a positive integer, got '" + value + "'");
      continue;
    }
    if (arg == "--precision" || arg == "--inference-precision" || arg == "--top" || arg == "--threads") {
      if (i + 1 >= argc) return usage(arg + " needs a value");
      const std::string value = argv[++i];
      if (arg == "--precision") {
        options.precision = value;
      } else if (arg == "--inference-precision") {
        options.inference_precision = value;
      } else if (!parse_int(value, arg == "--top" ? top : options.threads)) {
        return usage(arg + " needs a non-negative integer, got '" + value + "'");
      }
    } else if (arg.rfind("--", 0) == 0) {
      return usage("unknown option " + arg);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() < 2) return usage("give a bundle and at least one image");

  try {
    bit::set_decode_budget(decode_mb << 20);
    const bit::Bundle bundle(positional[0]);
    try {  // a precision the bundle does not offer is a usage error, as in bit-check-cpp
      bundle.flavour_for("openvino", options.precision);
    } catch (const bit::Error& exc) {
      return usage(exc.what());
    }
    const bit::Classifier clf(bundle, options);
    std::cerr << "backend: " << clf.describe() << ", " << clf.artifact().file << "\n";
    if (!clf.bundle().trained())
      std::cerr << "note: this bundle has SYNTHETIC (untrained) weights; the labels below are meaningless\n";
    int failed = 0;
    for (std::size_t i = 1; i < positional.size(); ++i) {
      try {
        const auto result = clf.classify({positional[i]}, static_cast<std::size_t>(top));
        std::cout << positional[i] << "\n";
        for (const auto& t : result[0]) {
          char line[64];
          std::snprintf(line, sizeof line, "  %6.2f%%  ", 100.0 * t.probability);
          std::cout << line << t.name << "\n";
        }
      } catch (const bit::Error& exc) {
        ++failed;
        std::cerr << "bit-classify-cpp: error: " << exc.what() << "\n";
      }
    }
    return failed ? 1 : 0;
  } catch (const bit::Error& exc) {
    std::cerr << "bit-classify-cpp: error: " << exc.what() << "\n";
    return 1;
  } catch (const std::exception& exc) {
    std::cerr << "bit-classify-cpp: internal error: " << exc.what() << "\n";
    return 1;
  }
}
