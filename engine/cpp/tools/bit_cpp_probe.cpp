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
//   bit-cpp-probe shapes BUNDLE IMAGE...
//       the images as one batch and as batches of 1, three calls each, on a Classifier with static-shape models and
//       on one without (static_shapes 0): "shapes: N calls, largest relative L2 difference D, M static models"
//   bit-cpp-probe time BUNDLE PRECISION BATCH ROUNDS INFERENCE_PRECISION...
//       one Classifier per inference precision ("auto": the default choice), each warmed up (its static-shape model
//       compiled), then ROUNDS rounds of one call each, alternating: "time: DESCRIBE | ms per call: T1 T2 ..."
//   bit-cpp-probe bf16-pays CPUINFO...
//       for each file of /proc/cpuinfo text, under the environment's oneDNN cap: "bf16\tWHY" or "f32\tWHY", as
//       bit::bf16_pays decides for it
//   bit-cpp-probe changed BUNDLE IMAGE
//       one call, then a byte appended to the model file, then a second call of the same size (when a static-shape
//       model would read the file again): "refused: MESSAGE", or "compiled" when it was not refused
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bit/classifier.hpp"
#include "bit/cpu_host.hpp"
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
  for (const auto& image : images) inputs.push_back(bit::preprocess({image}, spec));
  // A batch size gets a model of its own on its second call (ClassifierOptions::static_shapes): two calls first,
  // so that the serial answers come from the model the threads use
  for (int i = 0; i < 2 && !inputs.empty(); ++i) clf.infer(inputs[0].data(), 1);
  for (const auto& input : inputs) serial.push_back(clf.infer(input.data(), 1));
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

double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return std::sqrt(diff / norm);
}

int shapes_cmd(const std::vector<std::string>& args) {
  if (args.size() < 2) throw bit::Error("usage: shapes BUNDLE IMAGE...");
  const std::vector<fs::path> images(args.begin() + 1, args.end());
  bit::ClassifierOptions dynamic_only;
  dynamic_only.static_shapes = 0;
  const bit::Classifier fixed{bit::Bundle(args[0])};
  const bit::Classifier dynamic{bit::Bundle(args[0]), dynamic_only};
  const std::vector<float> batch = bit::preprocess(images, fixed.bundle().input());
  const std::size_t per = batch.size() / images.size(), classes = static_cast<std::size_t>(fixed.num_classes());
  double worst = 0;
  int calls = 0;
  for (int round = 0; round < 3; ++round) {  // the second call of each size compiles its model, the third uses it
    worst = std::max(worst, relative_l2(fixed.infer(batch.data(), images.size()),
                                        dynamic.infer(batch.data(), images.size())));
    ++calls;
    for (std::size_t i = 0; i < images.size(); ++i, ++calls) {
      std::vector<float> one = fixed.infer(batch.data() + i * per, 1);
      std::vector<float> want = dynamic.infer(batch.data() + i * per, 1);
      if (one.size() != classes) throw bit::Error("wrong output size");
      worst = std::max(worst, relative_l2(one, want));
    }
  }
  std::cout << "shapes: " << calls << " calls, largest relative L2 difference " << worst << ", "
            << fixed.static_models() << " static models (dynamic only: " << dynamic.static_models() << ")\n";
  return 0;
}

int time_cmd(const std::vector<std::string>& args) {
  if (args.size() < 5) throw bit::Error("usage: time BUNDLE PRECISION BATCH ROUNDS INFERENCE_PRECISION...");
  const bit::Bundle bundle(args[0]);
  const std::size_t batch = std::stoul(args[2]), rounds = std::stoul(args[3]);
  const auto r = static_cast<std::size_t>(bundle.input().resolution);
  std::vector<float> input(batch * r * r * 3, 0.5f);
  std::vector<std::unique_ptr<bit::Classifier>> classifiers;
  for (std::size_t i = 4; i < args.size(); ++i) {
    bit::ClassifierOptions options;
    options.precision = args[1];
    options.inference_precision = args[i] == "auto" ? "" : args[i];
    classifiers.push_back(std::make_unique<bit::Classifier>(bundle, options));
    for (int w = 0; w < 3; ++w) classifiers.back()->infer(input.data(), batch);  // the 2nd call compiles its shape
  }
  std::vector<std::vector<double>> ms(classifiers.size());
  for (std::size_t round = 0; round < rounds; ++round) {
    for (std::size_t c = 0; c < classifiers.size(); ++c) {
      const auto t0 = std::chrono::steady_clock::now();
      classifiers[c]->infer(input.data(), batch);
      ms[c].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  for (std::size_t c = 0; c < classifiers.size(); ++c) {
    std::cout << "time: " << classifiers[c]->describe() << " | ms per call:";
    for (double t : ms[c]) std::cout << " " << t;
    std::cout << "\n";
  }
  return 0;
}

int changed_cmd(const std::vector<std::string>& args) {
  if (args.size() != 2) throw bit::Error("usage: changed BUNDLE IMAGE");
  const bit::Classifier clf{bit::Bundle(args[0])};
  const std::vector<float> input = bit::preprocess({fs::path(args[1])}, clf.bundle().input());
  clf.infer(input.data(), 1);
  {
    std::ofstream model(clf.bundle().path() / clf.artifact().file, std::ios::binary | std::ios::app);
    model.put('\0');
  }
  try {
    clf.infer(input.data(), 1);
    std::cout << "compiled\n";
  } catch (const bit::Error& exc) {
    std::cout << "refused: " << exc.what() << "\n";
  }
  return 0;
}

int bf16_pays_cmd(const std::vector<std::string>& args) {
  if (args.empty()) throw bit::Error("usage: bf16-pays CPUINFO...");
  for (const std::string& path : args) {
    std::ifstream in(path);
    if (!in) throw bit::Error("cannot read " + path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const bit::Bf16Verdict v = bit::bf16_pays(bit::under_isa_cap(bit::parse_cpuinfo(text), bit::isa_cap_environment()));
    std::cout << (v.pays ? "bf16" : "f32") << '\t' << v.why << '\n';
  }
  return 0;
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
    if (cmd == "shapes") return shapes_cmd(args);
    if (cmd == "changed") return changed_cmd(args);
    if (cmd == "time") return time_cmd(args);
    if (cmd == "bf16-pays") return bf16_pays_cmd(args);
    std::cerr << "bit-cpp-probe: unknown command " << cmd << "\n";
    return 2;
  } catch (const std::exception& exc) {
    std::cerr << "bit-cpp-probe: error: " << exc.what() << "\n";
    return 2;
  }
}
