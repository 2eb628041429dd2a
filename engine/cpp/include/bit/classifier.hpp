// bit::Classifier: a bundle's ONNX variant compiled by OpenVINO's CPU plugin. fp32 variants run in f32 arithmetic;
// the fp16 variant, and the INT8 variant's float layers, in bf16 where that computes faster than f32 on this CPU
// (bit/cpu_host.hpp's bf16_pays, the Python runner's rule), and a bf16 run passes the bundle's parity set against TF
// first (docs/cpp.md, "Arithmetic"). One compiled model; each concurrent call
// borrows its own infer request from the classifier's pool, so any number of threads may call infer/classify on
// one Classifier.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bit/bundle.hpp"
#include "bit/preprocess.hpp"

namespace bit {

struct ClassifierOptions {
  std::string precision = "fp32";  // fp32 | fp16 | int8 (-> int8-ort, the manifest's flavours table) | an exact flavour
  int threads = 0;                 // INFERENCE_NUM_THREADS; 0: all cores
  std::string hint = "LATENCY";    // LATENCY | THROUGHPUT
  // "": f32, or for the fp16 and int8 variants bf16 where bf16_pays; f32 | bf16: that (bf16 gated against TF, as the
  // choice is)
  std::string inference_precision;
  // classify() refuses an image declaring more pixels, from its header (bit/preprocess.hpp)
  std::uint64_t max_image_pixels = kDefaultMaxImagePixels;
  // How many batch sizes get a model compiled for that size alone, on their second call (OpenVINO runs a fixed
  // shape faster than the bundle's dynamic batch; each holds its own weights). 0: the dynamic model only.
  // The same policy as the Python runner's static_shapes (engine/openvino_runner.py).
  int static_shapes = 2;
};

struct TopClass {
  int index = 0;
  std::string name;
  double probability = 0;  // softmax over the logits, in float64
  float logit = 0;
};

class Classifier {
 public:
  // Verifies the artifact's sha256, then compiles it. Errors (missing artifact, checksum, OpenVINO) are bit::Error.
  Classifier(Bundle bundle, const ClassifierOptions& options = {});
  ~Classifier();
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;
  Classifier(Classifier&&) noexcept;
  Classifier& operator=(Classifier&&) noexcept;

  const Bundle& bundle() const;
  const Artifact& artifact() const;
  // "openvino 2026.4.1 CPU (latency, 49 GroupNorms on channel statistics, 49 with gamma and beta in one multiply-add,
  // 1 zero Pad in its MaxPool, f32)"
  std::string describe() const;
  // What OpenVINO compiled: "f32" or "bf16" (read back from the compiled model; for INT8, its float layers').
  const std::string& compute() const;
  int num_classes() const;
  // How many batch sizes run on a model compiled for that size alone (ClassifierOptions::static_shapes).
  std::size_t static_models() const;

  // float32 NHWC [batch, R, R, 3] -> logits [batch, C]. Thread-safe.
  std::vector<float> infer(const float* nhwc, std::size_t batch) const;
  std::vector<float> infer(const std::vector<float>& nhwc) const;
  // Image files -> top-k classes per image. Thread-safe.
  std::vector<std::vector<TopClass>> classify(const std::vector<std::filesystem::path>& images,
                                              std::size_t k = 5) const;
  // One row of logits -> top-k (softmax probabilities, label names).
  std::vector<TopClass> top_k(const float* logits, std::size_t k) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bit
