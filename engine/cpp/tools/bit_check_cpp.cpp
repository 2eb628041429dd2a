// bit-check-cpp BUNDLE [--precision fp32|fp16|int8] [--inference-precision f32|bf16] [--threads N]
// Runs the bundle's parity inputs (parity_inputs.raw, checksum verified) through OpenVINO and compares the
// logits with TF's logits recorded at export, with the tolerance of the artifact's manifest record
// (parity.tolerance for fp32/fp16; check_tolerance for INT8, whose export gate is an accuracy test;
// bf16_tolerance where OpenVINO computes the fp16 variant or the INT8 variant's float layers in bf16, as
// engine/compare.tolerance_for).
// Exit 0: within tolerance; 1: parity broken; 2: could not run (one error line on stderr).
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "bit/classifier.hpp"
#include "bit/compare.hpp"
#include "bit/preprocess.hpp"

namespace {

int usage(const std::string& why) {
  std::cerr << "bit-check-cpp: error: " << why << " (see --help)\n";
  return 2;
}

std::string fmt(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  std::string bundle_dir;
  bit::ClassifierOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << "usage: bit-check-cpp BUNDLE [--precision fp32|fp16|int8] [--inference-precision f32|bf16] "
                   "[--threads N]\n";
      return 0;
    }
    if (arg == "--precision" || arg == "--inference-precision" || arg == "--threads") {
      if (i + 1 >= argc) return usage(arg + " needs a value");
      const std::string value = argv[++i];
      if (arg == "--precision") {
        options.precision = value;
      } else if (arg == "--inference-precision") {
        options.inference_precision = value;
      } else {
        try {
          options.threads = std::stoi(value);
        } catch (const std::exception&) {
          return usage("--threads needs an integer, got '" + value + "'");
        }
      }
    } else if (arg.rfind("--", 0) == 0) {
      return usage("unknown option " + arg);
    } else if (bundle_dir.empty()) {
      bundle_dir = arg;
    } else {
      return usage("unexpected argument '" + arg + "'");
    }
  }
  if (bundle_dir.empty()) return usage("give a bundle directory");

  try {
    bit::Bundle bundle(bundle_dir);
    const bit::ParitySet parity = bundle.parity_set();
    const bit::Classifier clf(bundle, options);
    const bool bf16 = clf.compute() == "bf16";  // the Classifier refuses bf16 on an artifact without bf16_tolerance
    if (!bf16 && !clf.artifact().tolerance)
      throw bit::Error("bundle '" + bundle_dir + "': " + clf.artifact().file +
                       " records no tolerance (parity.tolerance or check_tolerance); re-export it");
    const bit::Tolerance tolerance = bf16 ? *clf.artifact().bf16_tolerance : *clf.artifact().tolerance;
    const std::string tolerance_from = clf.artifact().file + "'s manifest record" + (bf16 ? ", bf16_tolerance" : "");
    std::vector<float> inputs(parity.images.size());
    bit::scale_uint8(parity.images.data(), parity.images.size(), inputs.data());
    const std::vector<float> logits = clf.infer(inputs.data(), parity.count);
    const bit::Metrics m = bit::measure(logits, parity.logits, parity.count, static_cast<std::size_t>(parity.classes));
    const std::vector<std::string> failures = bit::check(tolerance, m);

    std::cout << "bit-check-cpp " << bundle_dir << ": " << clf.describe() << ", " << options.precision << " ("
              << clf.artifact().file << "), against TF logits recorded at export\n";
    for (std::size_t i = 0; i < parity.count; ++i)
      std::cout << "  " << (m.top1_equal[i] ? '=' : 'x') << " parity image " << i << "\n";
    std::cout << "  rel L2 " << fmt("%.3g", m.rel_l2) << "  cosine min " << fmt("%.6f", m.cosine_min) << "  max abs "
              << fmt("%.3g", m.max_abs) << "  top-1 " << fmt("%.3f", m.top1_agreement) << "\n";
    std::cout << "  tolerance (" << tolerance_from << "): rel L2 <= " << fmt("%g", tolerance.rel_l2)
              << ", cosine >= " << fmt("%g", tolerance.cosine_min) << ", max abs / scale <= "
              << fmt("%g", tolerance.max_abs_over_scale) << ", decisive top-1 >= " << fmt("%g", tolerance.top1_decisive)
              << "\n";
    if (failures.empty()) {
      std::cout << "PASS\n";
      return 0;
    }
    std::cout << "FAIL: ";
    for (std::size_t i = 0; i < failures.size(); ++i) std::cout << (i ? "; " : "") << failures[i];
    std::cout << "\n";
    return 1;
  } catch (const bit::Error& exc) {
    std::cerr << "bit-check-cpp: error: " << exc.what() << "\n";
    return 2;
  } catch (const std::exception& exc) {
    std::cerr << "bit-check-cpp: internal error: " << exc.what() << "\n";
    return 2;
  }
}
