// Reading a bit-trt bundle: manifest.json, its format check, artifact records with sha256 verification,
// the input contract, labels and the raw parity set. Mirrors engine/bundle.py and engine/parity_raw.py.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bit/error.hpp"

namespace bit {

inline constexpr const char* kManifest = "manifest.json";
inline constexpr const char* kFormat = "bit-trt-bundle";
inline constexpr int kFormatVersion = 2;  // engine/bundle.py FORMAT_VERSION

enum class Resize { Bilinear, Area, Bicubic, Nearest };

// "bilinear" | "area" | "bicubic" | "nearest" -> Resize; anything else is a bit::Error.
Resize resize_from_name(const std::string& name);
const char* resize_name(Resize resize);

// The manifest's "input" section (engine/preprocess.py InputSpec).
struct InputSpec {
  std::string name = "images";
  std::string layout = "NHWC";
  std::string dtype = "float32";
  std::string color = "RGB";
  int resolution = 0;
  Resize resize = Resize::Bilinear;
  float value_min = 0.0f;
  float value_max = 1.0f;
};

struct OutputSpec {
  std::string name = "logits";
};

struct Label {
  int index = 0;
  std::string name;
};

// engine/compare.py Tolerance.
struct Tolerance {
  double rel_l2 = 0;
  double cosine_min = 0;
  double max_abs_over_scale = 0;
  double top1_decisive = 1.0;
};

struct FileRecord {
  std::string file;
  std::string sha256;
};

// One manifest "artifacts" record (an ONNX model or an engine plan).
struct Artifact {
  std::string file;
  std::string sha256;
  std::string kind;       // onnx | engine
  std::string precision;  // fp32 | fp16 | int8
  std::string flavour;    // fp32 | fp16 | int8-trt | int8-ort (engine/precision.py)
  std::vector<FileRecord> data_files;
  std::optional<Tolerance> tolerance;  // parity.tolerance, where the record has one
  std::optional<Tolerance> bf16_tolerance;  // fp16's and int8-ort's gate where a host runs them in bf16 (classifier.hpp)
  // Engine records only (kind "engine", export/trt_engine.py); empty or 0 elsewhere.
  std::string library;             // tensorrt | tensorrt_rtx
  std::string library_version;     // the exact version that built the plan: it loads in no other
  std::string target_kind;         // gpu (TensorRT: one compute capability) | rtx
  std::string compute_capability;  // target.compute_capability, e.g. "sm90"
  int profile_min = 0, profile_opt = 0, profile_max = 0;  // the optimization profile's batch range
};

// The manifest's reference.raw record: parity_inputs.raw (engine/parity_raw.py).
struct ParityRawRecord {
  FileRecord file;
  std::uint64_t bytes = 0;
  std::uint64_t images_offset = 0;
  std::vector<std::int64_t> images_shape;  // [N, R, R, 3], uint8
  std::uint64_t logits_offset = 0;
  std::vector<std::int64_t> logits_shape;  // [N, C], float32 little-endian
};

// The parity set: uint8 NHWC images (before the 1/255 scale) and TF's logits [N, C].
struct ParitySet {
  std::size_t count = 0;
  int resolution = 0;
  int classes = 0;
  std::vector<std::uint8_t> images;
  std::vector<float> logits;
};

// sha256 of a file, lowercase hex (OpenSSL EVP). A read failure is a bit::Error.
std::string sha256_file(const std::filesystem::path& path);
// sha256 of a string, lowercase hex.
std::string sha256_text(const std::string& text);

// An opened bundle. Immutable after construction, cheap to copy (shares the parsed manifest), safe to read
// from many threads.
class Bundle {
 public:
  // Reads <dir>/manifest.json; refuses an unknown format or format_version, a malformed input section.
  explicit Bundle(const std::filesystem::path& dir);

  const std::filesystem::path& path() const;
  const InputSpec& input() const;
  const OutputSpec& output() const;
  int num_classes() const;
  bool trained() const;  // model.trained (false: synthetic weights)

  // Artifacts of one kind ("onnx" or "engine").
  std::vector<Artifact> artifacts(const std::string& kind = "onnx") const;
  // The artifact of `flavour` (fp32, fp16, int8-ort, int8-trt); a bit::Error naming those present if absent.
  Artifact artifact(const std::string& flavour, const std::string& kind = "onnx") const;
  // The flavour `backend` (e.g. "openvino") loads for `precision`, from the manifest's `flavours` table
  // (engine/precision.py writes it): int8 -> int8-ort for openvino. An exact flavour the bundle holds passes
  // through. Anything else is a bit::Error naming the precisions the bundle offers that backend.
  std::string flavour_for(const std::string& backend, const std::string& precision) const;
  // Checks a record's file (and data files) against its sha256, then returns the file's full path.
  std::filesystem::path verified_path(const FileRecord& record) const;
  std::filesystem::path verified_path(const Artifact& artifact) const;

  // labels.json, checked against labels.sha256 (when recorded) and the class count.
  std::vector<Label> labels() const;

  ParityRawRecord parity_raw_record() const;
  // parity_inputs.raw, checksum verified, every size and offset taken from the manifest and checked.
  ParitySet parity_set() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace bit
