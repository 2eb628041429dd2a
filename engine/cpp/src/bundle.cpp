#include "bit/bundle.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

namespace bit {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A manifest value by key path, with one clear bit::Error when a key is missing or has the wrong type.
class Reader {
 public:
  explicit Reader(std::string where) : where_(std::move(where)) {}

  const json& at(const json& node, const std::string& key, const std::string& path) const {
    if (!node.is_object()) throw Error(where_ + ": '" + parent(path) + "' is not an object");
    auto it = node.find(key);
    if (it == node.end()) throw Error(where_ + ": missing key '" + path + "'");
    return *it;
  }

  template <typename T>
  T get(const json& node, const std::string& key, const std::string& path) const {
    return as<T>(at(node, key, path), path);
  }

  template <typename T>
  T get_or(const json& node, const std::string& key, const std::string& path, T fallback) const {
    if (!node.is_object() || node.find(key) == node.end()) return fallback;
    return as<T>(node.at(key), path);
  }

  template <typename T>
  T as(const json& value, const std::string& path) const {
    try {
      if constexpr (std::is_same_v<T, std::string>) {
        if (!value.is_string()) throw Error(where_ + ": '" + path + "' must be a string");
      } else if constexpr (std::is_same_v<T, bool>) {
        if (!value.is_boolean()) throw Error(where_ + ": '" + path + "' must be true or false");
      } else if constexpr (std::is_integral_v<T>) {
        if (!value.is_number_integer()) throw Error(where_ + ": '" + path + "' must be an integer");
      } else if constexpr (std::is_floating_point_v<T>) {
        if (!value.is_number()) throw Error(where_ + ": '" + path + "' must be a number");
      }
      return value.get<T>();
    } catch (const json::exception& exc) {
      throw Error(where_ + ": '" + path + "' has the wrong type (" + exc.what() + ")");
    }
  }

  const std::string& where() const { return where_; }

 private:
  static std::string parent(const std::string& path) {
    auto dot = path.rfind('.');
    return dot == std::string::npos ? "manifest" : path.substr(0, dot);
  }
  std::string where_;
};

std::vector<std::int64_t> shape_of(const Reader& r, const json& node, const std::string& path) {
  const json& s = r.at(node, "shape", path + ".shape");
  if (!s.is_array()) throw Error(r.where() + ": '" + path + ".shape' must be a list");
  std::vector<std::int64_t> shape;
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto v = r.as<std::int64_t>(s[i], path + ".shape[" + std::to_string(i) + "]");
    if (v < 0) throw Error(r.where() + ": '" + path + ".shape' has a negative size");
    shape.push_back(v);
  }
  return shape;
}

std::uint64_t element_count(const std::vector<std::int64_t>& shape) {
  std::uint64_t n = 1;
  for (auto d : shape) {
    if (d != 0 && n > std::numeric_limits<std::uint64_t>::max() / static_cast<std::uint64_t>(d))
      throw Error("parity shape overflows");
    n *= static_cast<std::uint64_t>(d);
  }
  return n;
}

struct EvpDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

}  // namespace

Resize resize_from_name(const std::string& name) {
  if (name == "bilinear") return Resize::Bilinear;
  if (name == "area") return Resize::Area;
  if (name == "bicubic") return Resize::Bicubic;
  if (name == "nearest") return Resize::Nearest;
  throw Error("manifest names resize '" + name + "'; supported: bilinear, area, bicubic, nearest");
}

const char* resize_name(Resize resize) {
  switch (resize) {
    case Resize::Bilinear: return "bilinear";
    case Resize::Area: return "area";
    case Resize::Bicubic: return "bicubic";
    case Resize::Nearest: return "nearest";
  }
  return "?";
}

namespace {

// sha256 over whatever `feed` passes to its argument, lowercase hex.
template <typename Feed>
std::string sha256_hex(Feed&& feed) {
  std::unique_ptr<EVP_MD_CTX, EvpDeleter> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error("OpenSSL: cannot start sha256");
  feed([&](const char* data, std::size_t size) {
    if (size > 0 && EVP_DigestUpdate(ctx.get(), data, size) != 1) throw Error("OpenSSL: sha256 update failed");
  });
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md.data(), &len) != 1) throw Error("OpenSSL: sha256 final failed");
  std::string hex;
  hex.reserve(len * 2);
  char two[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(two, sizeof two, "%02x", md[i]);
    hex += two;
  }
  return hex;
}

}  // namespace

std::string sha256_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open for reading");
  std::string hex = sha256_hex([&](auto&& update) {
    std::vector<char> buf(1 << 20);
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      update(buf.data(), static_cast<std::size_t>(in.gcount()));
    }
  });
  if (in.bad()) throw Error(path.string() + ": read error");
  return hex;
}

std::string sha256_text(const std::string& text) {
  return sha256_hex([&](auto&& update) { update(text.data(), text.size()); });
}

struct Bundle::Impl {
  fs::path path;
  json manifest;
  InputSpec input;
  OutputSpec output;
  int num_classes = 0;
  bool trained = true;
  Reader reader{""};

  Artifact parse_artifact(const json& a, std::size_t i) const {
    const std::string p = "artifacts[" + std::to_string(i) + "]";
    Artifact art;
    art.file = reader.get<std::string>(a, "file", p + ".file");
    art.sha256 = reader.get<std::string>(a, "sha256", p + ".sha256");
    art.kind = reader.get<std::string>(a, "kind", p + ".kind");
    art.precision = reader.get<std::string>(a, "precision", p + ".precision");
    art.flavour = reader.get<std::string>(a, "flavour", p + ".flavour");
    if (a.contains("data_files")) {
      const json& d = a.at("data_files");
      if (!d.is_array()) throw Error(reader.where() + ": '" + p + ".data_files' must be a list");
      for (std::size_t j = 0; j < d.size(); ++j) {
        const std::string dp = p + ".data_files[" + std::to_string(j) + "]";
        art.data_files.push_back(
            {reader.get<std::string>(d[j], "file", dp + ".file"), reader.get<std::string>(d[j], "sha256", dp + ".sha256")});
      }
    }
    // fp32/fp16: the tolerance the export held the variant to (parity.tolerance); INT8 variants pass an accuracy
    // gate instead and record what bit-check holds them to (check_tolerance).
    const json* found = nullptr;
    std::string tp;
    if (a.contains("parity") && a.at("parity").is_object() && a.at("parity").contains("tolerance")) {
      found = &a.at("parity").at("tolerance");
      tp = p + ".parity.tolerance";
    } else if (a.contains("check_tolerance")) {
      found = &a.at("check_tolerance");
      tp = p + ".check_tolerance";
    }
    const auto read_tolerance = [&](const json& t, const std::string& where) {
      Tolerance tol;
      tol.rel_l2 = reader.get<double>(t, "rel_l2", where + ".rel_l2");
      tol.cosine_min = reader.get<double>(t, "cosine_min", where + ".cosine_min");
      tol.max_abs_over_scale = reader.get<double>(t, "max_abs_over_scale", where + ".max_abs_over_scale");
      tol.top1_decisive = reader.get_or<double>(t, "top1_decisive", where + ".top1_decisive", 1.0);
      return tol;
    };
    if (found != nullptr) art.tolerance = read_tolerance(*found, tp);
    // The fp16 variant: what a host running it in bf16 holds it to (engine/compute_gate.py's BF16_PARITY)
    if (a.contains("bf16_tolerance")) art.bf16_tolerance = read_tolerance(a.at("bf16_tolerance"), p + ".bf16_tolerance");
    if (art.kind == "engine") {
      art.library = reader.get_or<std::string>(a, "library", p + ".library", "tensorrt");
      art.library_version = reader.get_or<std::string>(a, "library_version", p + ".library_version", "");
      if (a.contains("target") && a.at("target").is_object()) {
        const json& t = a.at("target");
        art.target_kind = reader.get_or<std::string>(t, "kind", p + ".target.kind", "");
        art.compute_capability = reader.get_or<std::string>(t, "compute_capability", p + ".target.compute_capability", "");
      }
      const json& profile = reader.at(a, "profile", p + ".profile");
      art.profile_min = reader.get<int>(profile, "min", p + ".profile.min");
      art.profile_opt = reader.get<int>(profile, "opt", p + ".profile.opt");
      art.profile_max = reader.get<int>(profile, "max", p + ".profile.max");
    }
    return art;
  }
};

Bundle::Bundle(const fs::path& dir) {
  auto impl = std::make_shared<Impl>();
  impl->path = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error("bundle '" + dir.string() + "' does not exist or is not a directory");
  const fs::path manifest_path = dir / kManifest;
  if (!fs::exists(manifest_path, ec))
    throw Error("'" + dir.string() + "' is not a bit-trt bundle (no " + kManifest + "); an interrupted export leaves none");
  std::ifstream in(manifest_path);
  if (!in) throw Error(manifest_path.string() + ": cannot open");
  try {
    impl->manifest = json::parse(in);
  } catch (const json::exception& exc) {
    throw Error(manifest_path.string() + ": unreadable manifest (" + exc.what() + ")");
  }
  impl->reader = Reader(manifest_path.string());
  const Reader& r = impl->reader;
  const json& m = impl->manifest;
  if (!m.is_object() || !m.contains("format") || m.at("format") != kFormat)
    throw Error(manifest_path.string() + ": not a bit-trt manifest");
  if (!m.contains("format_version") || m.at("format_version") != kFormatVersion) {
    std::string got = m.contains("format_version") ? m.at("format_version").dump() : "none";
    if (got == "1")  // version 1 called the flavour `variant` and had no `flavours` table; Python reads it still
      throw Error(manifest_path.string() + ": bundle format version 1 predates this reader (version " +
                  std::to_string(kFormatVersion) + "); upgrade it in place with: bit-engine " + dir.string() +
                  " --upgrade-manifest (or re-export)");
    throw Error(manifest_path.string() + ": bundle format version " + got + " is not supported (this reader reads version " +
                std::to_string(kFormatVersion) + "); re-export with this version");
  }
  const json& in_ = r.at(m, "input", "input");
  InputSpec& spec = impl->input;
  spec.resolution = r.get<int>(in_, "resolution", "input.resolution");
  if (spec.resolution <= 0 || spec.resolution > 1 << 15)
    throw Error(manifest_path.string() + ": 'input.resolution' " + std::to_string(spec.resolution) + " is out of range");
  spec.resize = resize_from_name(r.get_or<std::string>(in_, "resize", "input.resize", "bilinear"));
  spec.layout = r.get_or<std::string>(in_, "layout", "input.layout", "NHWC");
  spec.dtype = r.get_or<std::string>(in_, "dtype", "input.dtype", "float32");
  spec.color = r.get_or<std::string>(in_, "color", "input.color", "RGB");
  spec.name = r.get_or<std::string>(in_, "name", "input.name", "images");
  if (in_.contains("value_range")) {
    const json& vr = in_.at("value_range");
    if (!vr.is_array() || vr.size() != 2) throw Error(manifest_path.string() + ": 'input.value_range' must be [min, max]");
    spec.value_min = r.as<float>(vr[0], "input.value_range[0]");
    spec.value_max = r.as<float>(vr[1], "input.value_range[1]");
  }
  // What this reader implements; anything else would be silently wrong.
  if (spec.layout != "NHWC" || spec.dtype != "float32" || spec.color != "RGB" || spec.value_min != 0.0f ||
      spec.value_max != 1.0f)
    throw Error(manifest_path.string() + ": input contract " + spec.layout + "/" + spec.dtype + "/" + spec.color +
                " is not the NHWC float32 RGB [0, 1] this reader implements");
  if (m.contains("output")) impl->output.name = r.get_or<std::string>(m.at("output"), "name", "output.name", "logits");
  impl->num_classes = r.get<int>(r.at(m, "model", "model"), "num_classes", "model.num_classes");
  if (impl->num_classes <= 0) throw Error(manifest_path.string() + ": 'model.num_classes' must be positive");
  impl->trained = r.get_or<bool>(m.at("model"), "trained", "model.trained", true);
  impl_ = std::move(impl);
}

const fs::path& Bundle::path() const { return impl_->path; }
const InputSpec& Bundle::input() const { return impl_->input; }
const OutputSpec& Bundle::output() const { return impl_->output; }
int Bundle::num_classes() const { return impl_->num_classes; }
bool Bundle::trained() const { return impl_->trained; }

std::vector<Artifact> Bundle::artifacts(const std::string& kind) const {
  std::vector<Artifact> out;
  const json& m = impl_->manifest;
  if (!m.contains("artifacts")) return out;
  const json& list = m.at("artifacts");
  if (!list.is_array()) throw Error(impl_->reader.where() + ": 'artifacts' must be a list");
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (impl_->reader.get<std::string>(list[i], "kind", "artifacts[" + std::to_string(i) + "].kind") == kind)
      out.push_back(impl_->parse_artifact(list[i], i));
  }
  return out;
}

Artifact Bundle::artifact(const std::string& flavour, const std::string& kind) const {
  std::string have;
  for (auto& a : artifacts(kind)) {
    if (a.flavour == flavour) return a;
    have += (have.empty() ? "" : ", ") + a.flavour;
  }
  throw Error("bundle '" + path().string() + "' has no " + flavour + " " + kind + " artifact; it has: " +
              (have.empty() ? "none" : have));
}

std::string Bundle::flavour_for(const std::string& backend, const std::string& precision) const {
  const Reader& r = impl_->reader;
  const json& table = r.at(r.at(impl_->manifest, "flavours", "flavours"), backend, "flavours." + backend);
  if (!table.is_object()) throw Error(r.where() + ": 'flavours." + backend + "' must be an object");
  if (table.contains(precision)) return r.get<std::string>(table, precision, "flavours." + backend + "." + precision);
  for (const auto& a : artifacts("onnx"))
    if (a.flavour == precision) return precision;
  std::string offered;
  for (const auto& item : table.items()) offered += (offered.empty() ? "" : ", ") + item.key();
  throw Error("unknown precision '" + precision + "'; choose " + (offered.empty() ? "none" : offered) +
              " (or an exact artifact flavour of the bundle)");
}

fs::path Bundle::verified_path(const FileRecord& record) const {
  if (record.file.empty() || fs::path(record.file).is_absolute() || record.file.find("..") != std::string::npos)
    throw Error("bundle '" + path().string() + "': file name '" + record.file + "' is not a plain name in the bundle");
  const fs::path full = path() / record.file;
  std::error_code ec;
  if (!fs::is_regular_file(full, ec))
    throw Error("bundle '" + path().string() + "' is missing " + record.file + "; re-export it");
  if (sha256_file(full) != record.sha256)
    throw Error("bundle '" + path().string() + "': " + record.file +
                " does not match its manifest checksum (corrupt or modified); re-export it");
  return full;
}

fs::path Bundle::verified_path(const Artifact& artifact) const {
  for (const auto& d : artifact.data_files) verified_path(d);
  return verified_path(FileRecord{artifact.file, artifact.sha256});
}

std::vector<Label> Bundle::labels() const {
  const Reader& r = impl_->reader;
  const json& rec = r.at(impl_->manifest, "labels", "labels");
  FileRecord file{r.get<std::string>(rec, "file", "labels.file"), r.get_or<std::string>(rec, "sha256", "labels.sha256", "")};
  fs::path full;
  if (file.sha256.empty()) {
    full = path() / file.file;
  } else {
    full = verified_path(file);
  }
  std::ifstream in(full);
  if (!in) throw Error("bundle '" + path().string() + "': cannot read labels (" + full.string() + ")");
  json list;
  try {
    list = json::parse(in);
  } catch (const json::exception& exc) {
    throw Error("bundle '" + path().string() + "': cannot read labels (" + exc.what() + ")");
  }
  if (!list.is_array()) throw Error(full.string() + ": labels must be a list");
  if (static_cast<int>(list.size()) != num_classes())
    throw Error("bundle '" + path().string() + "': " + std::to_string(list.size()) + " labels for " +
                std::to_string(num_classes()) + " classes");
  Reader lr(full.string());
  std::vector<Label> labels;
  labels.reserve(list.size());
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string p = "[" + std::to_string(i) + "]";
    labels.push_back({lr.get_or<int>(list[i], "index", p + ".index", static_cast<int>(i)),
                      lr.get<std::string>(list[i], "name", p + ".name")});
  }
  return labels;
}

ParityRawRecord Bundle::parity_raw_record() const {
  const Reader& r = impl_->reader;
  const json& m = impl_->manifest;
  if (!m.contains("reference") || !m.at("reference").is_object() || !m.at("reference").contains("raw"))
    throw Error("bundle '" + path().string() + "' has no parity_inputs.raw (manifest 'reference.raw'); re-export it with this bit-trt");
  const json& raw = m.at("reference").at("raw");
  ParityRawRecord rec;
  rec.file = {r.get<std::string>(raw, "file", "reference.raw.file"), r.get<std::string>(raw, "sha256", "reference.raw.sha256")};
  rec.bytes = r.get<std::uint64_t>(raw, "bytes", "reference.raw.bytes");
  const json& images = r.at(raw, "images", "reference.raw.images");
  const json& logits = r.at(raw, "logits", "reference.raw.logits");
  if (r.get<std::string>(images, "dtype", "reference.raw.images.dtype") != "uint8")
    throw Error(r.where() + ": 'reference.raw.images.dtype' must be uint8");
  if (r.get<std::string>(logits, "dtype", "reference.raw.logits.dtype") != "float32-le")
    throw Error(r.where() + ": 'reference.raw.logits.dtype' must be float32-le");
  rec.images_offset = r.get<std::uint64_t>(images, "offset", "reference.raw.images.offset");
  rec.logits_offset = r.get<std::uint64_t>(logits, "offset", "reference.raw.logits.offset");
  rec.images_shape = shape_of(r, images, "reference.raw.images");
  rec.logits_shape = shape_of(r, logits, "reference.raw.logits");
  return rec;
}

ParitySet Bundle::parity_set() const {
  const ParityRawRecord rec = parity_raw_record();
  const std::string where = impl_->reader.where();
  const auto& is = rec.images_shape;
  const auto& ls = rec.logits_shape;
  const int res = input().resolution;
  if (is.size() != 4 || is[1] != res || is[2] != res || is[3] != 3)
    throw Error(where + ": 'reference.raw.images.shape' must be [N, " + std::to_string(res) + ", " + std::to_string(res) + ", 3]");
  if (ls.size() != 2 || ls[0] != is[0] || ls[1] != num_classes())
    throw Error(where + ": 'reference.raw.logits.shape' must be [" + std::to_string(is[0]) + ", " +
                std::to_string(num_classes()) + "]");
  if (is[0] == 0) throw Error(where + ": the parity set is empty");
  const std::uint64_t image_bytes = element_count(is);
  const std::uint64_t logit_bytes = element_count(ls) * 4;
  if (rec.images_offset > rec.bytes || image_bytes > rec.bytes - rec.images_offset || rec.logits_offset > rec.bytes ||
      logit_bytes > rec.bytes - rec.logits_offset)
    throw Error(where + ": 'reference.raw' offsets and shapes run past its " + std::to_string(rec.bytes) + " bytes");
  const fs::path full = verified_path(rec.file);
  if (fs::file_size(full) != rec.bytes)
    throw Error(full.string() + ": " + std::to_string(fs::file_size(full)) + " bytes, the manifest says " +
                std::to_string(rec.bytes));
  std::ifstream in(full, std::ios::binary);
  if (!in) throw Error(full.string() + ": cannot open");
  ParitySet set;
  set.count = static_cast<std::size_t>(is[0]);
  set.resolution = res;
  set.classes = num_classes();
  set.images.resize(image_bytes);
  in.seekg(static_cast<std::streamoff>(rec.images_offset));
  in.read(reinterpret_cast<char*>(set.images.data()), static_cast<std::streamsize>(image_bytes));
  std::vector<unsigned char> raw(logit_bytes);
  in.seekg(static_cast<std::streamoff>(rec.logits_offset));
  in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(logit_bytes));
  if (!in) throw Error(full.string() + ": short read");
  set.logits.resize(logit_bytes / 4);
  for (std::size_t i = 0; i < set.logits.size(); ++i) {  // little-endian on any host
    std::uint32_t bits = static_cast<std::uint32_t>(raw[4 * i]) | static_cast<std::uint32_t>(raw[4 * i + 1]) << 8 |
                         static_cast<std::uint32_t>(raw[4 * i + 2]) << 16 | static_cast<std::uint32_t>(raw[4 * i + 3]) << 24;
    float f;
    static_assert(sizeof f == sizeof bits);
    std::memcpy(&f, &bits, sizeof f);
    set.logits[i] = f;
  }
  return set;
}

}  // namespace bit
