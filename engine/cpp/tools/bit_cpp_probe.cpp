// bit-cpp-probe: a test helper for tests/cpp (not installed).
//   bit-cpp-probe preprocess BUNDLE OUT.f32 [--resize bilinear|area|bicubic|nearest] IMAGE...
//       writes the float32 NHWC batch bit::preprocess makes (raw, native byte order)
//   bit-cpp-probe sizes FILE...
//       one line per file: "FORMAT WIDTH HEIGHT DECODE_BYTES" as bit::encoded_size reads its header, or
//       "error: MESSAGE"
//   bit-cpp-probe artifacts BUNDLE
//       one line per artifact record as bit::Bundle parses it (engine records with library, target, profile)
//   bit-cpp-probe threads BUNDLE THREADS ROUNDS [--precision P] IMAGE...
//       classifies every image once serially, then from THREADS threads on one bit::Classifier (ROUNDS passes
//       each, in a rotated order) and checks each answer equals the serial logits bit for bit
#include <atomic>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "bit/classifier.hpp"
#include "bit/image_size.hpp"
#include "bit/preprocess.hpp"

namespace fs = std::filesystem;

namespace {

int preprocess_cmd(const std::vector<std::string>& args) {
  if (args.size() < 3) throw bit::Error("usage: preprocess BUNDLE OUT.f32 [--resize R] IMAGE...");
  bit::InputSpec spec = bit::Bundle(args[0]).input();
  std::vector<fs::path> images;
  for (std::size_t i = 2; i < args.size(); ++i) {
    if (args[i] == "--resize" && i + 1 < args.size()) {
      spec.resize = bit::resize_from_name(args[++i]);
    } else {
      images.emplace_back(args[i]);
    }
  }
  const std::vector<float> batch = bit::preprocess(images, spec);
  std::ofstream out(args[1], std::ios::binary);
  out.write(reinterpret_cast<const char*>(batch.data()), static_cast<std::streamsize>(batch.size() * sizeof(float)));
  if (!out) throw bit::Error(args[1] + ": cannot write");
  std::cout << images.size() << " image(s), " << spec.resolution << "x" << spec.resolution << ", "
            << bit::resize_name(spec.resize) << "\n";
  return 0;
}

int sizes_cmd(const std::vector<std::string>& args) {
  for (const auto& file : args) {
    std::ifstream in(file, std::ios::binary);
    const std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
      const bit::ImageSize size = bit::encoded_size(data.data(), data.size(), "probe");
      std::cout << size.format << " " << size.width << " " << size.height << " " << size.decode_bytes() << "\n";
    } catch (const bit::Error& exc) {
      std::cout << "error: " << exc.what() << "\n";
    }
  }
  return 0;
}

int artifacts_cmd(const std::vector<std::string>& args) {
  if (args.size() != 1) throw bit::Error("usage: artifacts BUNDLE");
  const bit::Bundle bundle(args[0]);
  for (const char* kind : {"onnx", "engine"}) {
    for (const auto& a : bundle.artifacts(kind)) {
      std::cout << a.kind << " " << a.flavour << " " << a.file;
      if (a.tolerance) std::cout << " rel_l2<=" << a.tolerance->rel_l2 << " cosine>=" << a.tolerance->cosine_min;
      if (a.kind == "engine")
        std::cout << " " << a.library << " " << a.library_version << " " << a.target_kind << " "
                  << (a.compute_capability.empty() ? "-" : a.compute_capability) << " profile " << a.profile_min << "/"
                  << a.profile_opt << "/" << a.profile_max;
      std::cout << "\n";
    }
  }
  return 0;
}

int threads_cmd(const std::vector<std::string>& args) {
  if (args.size() < 4) throw bit::Error("usage: threads BUNDLE THREADS ROUNDS [--precision P] IMAGE...");
  bit::ClassifierOptions options;
  const int threads = std::stoi(args[1]);
  const int rounds = std::stoi(args[2]);
  std::vector<fs::path> images;
  for (std::size_t i = 3; i < args.size(); ++i) {
    if (args[i] == "--precision" && i + 1 < args.size()) {
      options.precision = args[++i];
    } else {
      images.emplace_back(args[i]);
    }
  }
  const bit::Classifier clf(bit::Bundle(args[0]), options);
  const auto& spec = clf.bundle().input();
  const std::size_t classes = static_cast<std::size_t>(clf.num_classes());
  std::vector<std::vector<float>> inputs, serial;
  for (const auto& image : images) {
    inputs.push_back(bit::preprocess({image}, spec));
    serial.push_back(clf.infer(inputs.back().data(), 1));
  }
  std::atomic<int> calls{0}, mismatches{0}, errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int r = 0; r < rounds; ++r) {
        for (std::size_t j = 0; j < images.size(); ++j) {
          const std::size_t i = (j + static_cast<std::size_t>(t)) % images.size();
          try {
            const std::vector<float> got = clf.infer(inputs[i].data(), 1);
            if (got.size() != classes || std::memcmp(got.data(), serial[i].data(), classes * sizeof(float)) != 0)
              ++mismatches;
          } catch (const std::exception& exc) {
            ++errors;
            std::cerr << "thread " << t << ": " << exc.what() << "\n";
          }
          ++calls;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  std::cout << "threads " << threads << ": " << calls.load() << " calls, " << mismatches.load()
            << " differ from the serial logits, " << errors.load() << " errors\n";
  return mismatches.load() || errors.load() ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bit-cpp-probe preprocess|threads ...\n";
    return 2;
  }
  const std::string cmd = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (cmd == "preprocess") return preprocess_cmd(args);
    if (cmd == "threads") return threads_cmd(args);
    if (cmd == "artifacts") return artifacts_cmd(args);
    if (cmd == "sizes") return sizes_cmd(args);
    std::cerr << "bit-cpp-probe: unknown command " << cmd << "\n";
    return 2;
  } catch (const std::exception& exc) {
    std::cerr << "bit-cpp-probe: error: " << exc.what() << "\n";
    return 2;
  }
}
