#include "bit/classifier.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>

#include <openvino/openvino.hpp>

#include "bit/compare.hpp"
#include "bit/compute_gate.hpp"
#include "bit/cpu_host.hpp"
#include "bit/openvino_graph.hpp"
#include "bit/preprocess.hpp"

namespace bit {
namespace fs = std::filesystem;

namespace {

std::string last_line(const std::string& text) {
  std::string s = text;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  auto nl = s.rfind('\n');
  std::string line = nl == std::string::npos ? s : s.substr(nl + 1);
  return line.substr(0, 300);
}

std::vector<std::string> capabilities(const ov::Core& core) {
  return core.get_property("CPU", ov::device::capabilities);
}

std::string joined(const std::vector<std::string>& parts, const std::string& separator = ", ") {
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : separator) + p;
  return out;
}

// What the fp16 tier computes in on this CPU (engine/openvino_runner.fp16_arithmetic): bf16 where OpenVINO offers it
// and it out-computes f32 on `cpu` (the CPU as oneDNN dispatches on it); else f32, and why.
Bf16Verdict fp16_arithmetic(const ov::Core& core, const CpuHost& cpu) {
  Bf16Verdict verdict = bf16_pays(cpu);
  const std::vector<std::string> offered = capabilities(core);
  if (verdict.pays && std::find(offered.begin(), offered.end(), "BF16") == offered.end())
    verdict = {false, "OpenVINO offers no bf16 here (" + verdict.why + ")"};
  if (!verdict.pays) verdict.why += "; OpenVINO's CPU capabilities: " + joined(offered);
  return verdict;
}

}  // namespace

struct Classifier::Impl {
  Bundle bundle;
  Artifact artifact;
  std::vector<Label> labels;
  std::string hint;
  std::uint64_t max_image_pixels = kDefaultMaxImagePixels;
  std::string version;
  mutable ov::Core core;  // thread-safe; compile_model is non-const
  std::size_t classes = 0;
  std::string model_path;
  ov::AnyMap config;
  std::string compute = "f32";  // what OpenVINO compiled: f32 or bf16 (read back, never assumed)
  std::string why_f32;          // for the fp16 tier (or INT8's float layers) run in f32: why
  CpuHost cpu = onednn_host();  // as oneDNN dispatches: decides the fp16 tier's arithmetic, keys its gate verdict
  Rewrites rewrites;  // what runs differently from the file (bit/openvino_graph.hpp)
  bool bf16 = false;  // bf16 float layers asked for: read with the rewrites that pay only there

  // A compiled model and its pool of infer requests. Infer requests are not thread-safe, the compiled model is:
  // every call borrows a request from the pool (making one when all are in use) and gives it back, so concurrent
  // callers never share one.
  struct Compiled {
    ov::CompiledModel model;  // create_infer_request is non-const; made under pool_mutex
    std::vector<std::unique_ptr<ov::InferRequest>> pool;
  };
  mutable std::mutex pool_mutex;      // guards every pool, and the three below
  mutable Compiled dynamic;           // the bundle's dynamic batch
  mutable std::map<std::size_t, Compiled> fixed;  // batch size -> the model compiled for it alone (nodes stay put)
  mutable std::set<std::size_t> seen, tried;      // sizes called with once; sizes compiling, compiled or refused
  std::size_t static_shapes = 0;
  static constexpr std::size_t kSeenShapes = 64;  // sizes remembered as seen once: bounded whatever callers send

  // The model for a batch of `batch`: its own on the size's second call while fewer than static_shapes sizes have
  // one (compiled here, outside the lock); else the dynamic model, also while another thread compiles it.
  Compiled& for_batch(std::size_t batch) const {
    {
      std::lock_guard<std::mutex> lock(pool_mutex);
      auto found = fixed.find(batch);
      if (found != fixed.end()) return found->second;
      if (tried.count(batch) || tried.size() >= static_shapes) return dynamic;
      if (!seen.count(batch)) {  // the first call: a one-off (a check) must not take a slot
        if (seen.size() < kSeenShapes) seen.insert(batch);
        return dynamic;
      }
      tried.insert(batch);
    }
    // Read again, maybe hours after construction: the file must still be the one verified then (throws bit::Error)
    bundle.verified_path(artifact);
    ov::CompiledModel model;
    try {
      model = compile(batch);
    } catch (const std::exception&) {  // OpenVINO can't fix this size: the dynamic model serves it, as before
      return dynamic;
    }
    std::lock_guard<std::mutex> lock(pool_mutex);
    Compiled& entry = fixed[batch];
    entry.model = std::move(model);
    return entry;
  }

  // The file read again, rewritten for the arithmetic asked for (`bf16`) and compiled with `config`: for one batch
  // size alone where `batch` is not 0, else with the file's dynamic batch. What was rewritten goes to `rewritten`
  // where given.
  ov::CompiledModel compile(std::size_t batch, Rewrites* rewritten = nullptr) const {
    std::shared_ptr<ov::Model> read = read_rewritten(core, model_path, bf16, rewritten);
    if (batch) {
      ov::PartialShape shape = read->input().get_partial_shape();
      shape[0] = static_cast<ov::Dimension::value_type>(batch);
      read->reshape(shape);
    }
    return core.compile_model(read, "CPU", config);
  }

  Impl(Bundle b, const ClassifierOptions& options) : bundle(std::move(b)) {
    if (options.hint != "LATENCY" && options.hint != "THROUGHPUT")
      throw Error("OpenVINO performance hint must be LATENCY or THROUGHPUT, got '" + options.hint + "'");
    hint = options.hint;
    if (options.static_shapes < 0)
      throw Error("OpenVINO static_shapes must be a whole number 0 or more, got " +
                  std::to_string(options.static_shapes));
    static_shapes = static_cast<std::size_t>(options.static_shapes);
    if (options.max_image_pixels == 0) throw Error("max_image_pixels must be at least 1");
    max_image_pixels = options.max_image_pixels;
    if (!options.inference_precision.empty() && options.inference_precision != "f32" &&
        options.inference_precision != "bf16")
      throw Error("OpenVINO inference precision must be f32 or bf16, got '" + options.inference_precision + "'");
    artifact = bundle.artifact(bundle.flavour_for("openvino", options.precision));
    // The tiers whose float arithmetic may run in bf16 (engine/openvino_runner.BF16_TIERS): fp32 keeps its parity
    const bool bf16_tier = artifact.precision == "fp16" || artifact.precision == "int8";
    if (options.inference_precision == "bf16" && !bf16_tier)
      throw Error("inference precision bf16 applies to the fp16 and int8 variants, whose records hold their gate "
                  "(bf16_tolerance); " + artifact.file + " is " + artifact.precision);
    if (options.inference_precision == "bf16" && !artifact.bf16_tolerance)
      throw Error(artifact.file + " records no bf16_tolerance, the gate a bf16 run is held to; add it with bit-engine "
                  "BUNDLE --upgrade-manifest, re-export the bundle, or use inference precision f32");
    model_path = bundle.verified_path(artifact).string();
    labels = bundle.labels();
    const InputSpec& spec = bundle.input();
    try {
      version = ov::get_openvino_version().buildNumber;
      version = version.substr(0, version.find('-'));
      const int threads = options.threads > 0 ? options.threads
                                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      config = {ov::hint::performance_mode(hint == "LATENCY" ? ov::hint::PerformanceMode::LATENCY
                                                             : ov::hint::PerformanceMode::THROUGHPUT),
                ov::inference_num_threads(threads)};
      // fp32 graphs in f32, as exported: the CPU plugin would otherwise run them in bf16 where the CPU has it. The
      // fp16 tier and INT8's float layers, unless told: bf16 where it computes faster than f32 here (bf16_pays, the
      // Python runner's rule from the same table: OpenVINO's own default takes bf16 on any native bf16, and AVX-512
      // BF16 computes half f32's FLOPs on Sapphire Rapids and later), gated below.
      std::string why;
      if (options.inference_precision == "bf16") {
        config.emplace(ov::hint::inference_precision(ov::element::bf16));
      } else if (!bf16_tier || options.inference_precision == "f32") {
        config.emplace(ov::hint::inference_precision(ov::element::f32));
        why = "f32 was asked for";
      } else if (!artifact.bf16_tolerance) {
        config.emplace(ov::hint::inference_precision(ov::element::f32));
        why = artifact.file +
              " records no bf16_tolerance (exported before bf16 runs were gated; add it with bit-engine BUNDLE "
              "--upgrade-manifest, or re-export)";
      } else {
        const Bf16Verdict verdict = fp16_arithmetic(core, cpu);
        config.emplace(ov::hint::inference_precision(verdict.pays ? ov::element::bf16 : ov::element::f32));
        why = verdict.why;
      }
      // The rewrites that pay only with bf16 float layers (bit/openvino_graph.hpp) go with a bf16 ask
      bf16 = config.at(ov::hint::inference_precision.name()).as<ov::element::Type>() == ov::element::bf16;
      std::shared_ptr<ov::Model> model = read_rewritten(core, model_path, bf16, &rewrites);
      if (model->inputs().size() != 1 || model->outputs().size() != 1)
        throw Error(model_path + ": expected one input and one output");
      const auto names = model->input().get_names();
      if (names.find(spec.name) == names.end())
        throw Error(model_path + ": has no input named '" + spec.name + "' (manifest input.name)");
      const ov::PartialShape in = model->input().get_partial_shape();
      const auto r = static_cast<ov::Dimension::value_type>(spec.resolution);
      if (in.rank().is_dynamic() || in.size() != 4 || !in[1].compatible(r) || !in[2].compatible(r) || !in[3].compatible(3))
        throw Error(model_path + ": input shape " + in.to_string() + " is not [batch, " +
                    std::to_string(spec.resolution) + ", " + std::to_string(spec.resolution) + ", 3]");
      const ov::PartialShape out = model->output().get_partial_shape();
      if (out.rank().is_dynamic() || out.size() != 2 || !out[1].compatible(bundle.num_classes()))
        throw Error(model_path + ": output shape " + out.to_string() + " is not [batch, " +
                    std::to_string(bundle.num_classes()) + "]");
      classes = static_cast<std::size_t>(bundle.num_classes());
      dynamic.model = core.compile_model(model, "CPU", config);
      // What was compiled, for the static-shape models too: they must run what the gate checked
      const ov::element::Type compiled = dynamic.model.get_property(ov::hint::inference_precision);
      compute = compiled == ov::element::bf16 ? "bf16" : "f32";
      config[ov::hint::inference_precision.name()] = compiled;
      if (compute == "f32" && options.inference_precision == "bf16")
        why_f32 = "bf16 runs as f32: OpenVINO compiled f32 (its CPU capabilities: " + joined(capabilities(core)) + ")";
      else if (compute == "f32" && bf16_tier)
        why_f32 = (artifact.precision == "int8" ? "int8's float layers run as f32: " : "fp16 runs as f32: ") + why;
    } catch (const Error&) {
      throw;
    } catch (const std::exception& exc) {
      throw Error("OpenVINO cannot load " + model_path + ": " + last_line(exc.what()));
    }
  }

  // RAII: a borrowed request goes back to the pool when the lease ends, exception or not.
  class Lease {
   public:
    Lease(const Impl& impl, std::size_t batch) : impl_(impl), compiled_(impl.for_batch(batch)) {
      std::lock_guard<std::mutex> lock(impl_.pool_mutex);
      if (compiled_.pool.empty()) {
        request_ = std::make_unique<ov::InferRequest>(compiled_.model.create_infer_request());
      } else {
        request_ = std::move(compiled_.pool.back());
        compiled_.pool.pop_back();
      }
    }
    ~Lease() {
      std::lock_guard<std::mutex> lock(impl_.pool_mutex);
      compiled_.pool.push_back(std::move(request_));
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ov::InferRequest& operator*() { return *request_; }

   private:
    const Impl& impl_;
    Compiled& compiled_;
    std::unique_ptr<ov::InferRequest> request_;
  };
};

Classifier::Classifier(Bundle bundle, const ClassifierOptions& options)
    : impl_(std::make_unique<Impl>(std::move(bundle), options)) {
  if (impl_->compute != "bf16") return;
  // bf16 is chosen on this host, not at export: the bundle's parity set in it against TF's stored logits, before
  // this classifier serves (engine/compute_gate.py). A failure refuses it, naming the measured error. The verdict
  // is kept per user, host and model (bit/compute_gate.hpp), so a server pays for it once, not on every start.
  const Tolerance& tolerance = *impl_->artifact.bf16_tolerance;
  const fs::path kept = gate_verdict_path(impl_->artifact.sha256, describe(), impl_->cpu, tolerance);
  std::optional<GateVerdict> verdict = read_gate_verdict(kept);
  if (!verdict) {
    const ParitySet parity = impl_->bundle.parity_set();
    std::vector<float> inputs(parity.images.size());
    scale_uint8(parity.images.data(), parity.images.size(), inputs.data());
    const Metrics m = measure(infer(inputs.data(), parity.count), parity.logits, parity.count,
                              static_cast<std::size_t>(parity.classes));
    verdict = GateVerdict{};
    verdict->failures = check(tolerance, m);
    verdict->passed = verdict->failures.empty();
    verdict->rel_l2 = m.rel_l2;
    verdict->cosine_min = m.cosine_min;
    verdict->max_abs = m.max_abs;
    verdict->top1_agreement = m.top1_agreement;
    verdict->described = describe();
    verdict->images = parity.count;
    keep_gate_verdict(kept, *verdict);
  }
  if (!verdict->passed) {
    const std::string failures = joined(verdict->failures, "; ");
    const bool int8 = impl_->artifact.precision == "int8";
    if (int8 && options.inference_precision != "bf16") {
      // INT8's bf16 float layers are a saving, not the precision asked for: f32, as the export gated it (the Python
      // runner does the same)
      Impl& impl = *impl_;
      impl.config[ov::hint::inference_precision.name()] = ov::element::f32;
      impl.bf16 = false;
      try {
        ov::CompiledModel f32 = impl.compile(0, &impl.rewrites);  // without the rewrites that pay only in bf16
        std::lock_guard<std::mutex> lock(impl.pool_mutex);
        impl.dynamic.pool.clear();  // requests of the bf16 model the gate ran
        impl.dynamic.model = std::move(f32);
        impl.fixed.clear();
        impl.seen.clear();
        impl.tried.clear();
      } catch (const std::exception& exc) {
        throw Error("OpenVINO cannot load " + impl.model_path + ": " + last_line(exc.what()));
      }
      impl.compute = "f32";
      impl.why_f32 = "int8's float layers run as f32: in bf16 it fails the accuracy gate against TF (" + failures + ")";
      return;
    }
    throw Error(describe() + ": the " + impl_->artifact.flavour + " model in bf16 fails the accuracy gate against TF "
                "on the bundle's parity set (" + failures + "), so it is refused here; use " +
                (int8 ? "inference precision f32, or precision fp32"
                      : "precision fp32 or int8, or inference precision f32"));
  }
}
Classifier::~Classifier() = default;
Classifier::Classifier(Classifier&&) noexcept = default;
Classifier& Classifier::operator=(Classifier&&) noexcept = default;

const Bundle& Classifier::bundle() const { return impl_->bundle; }
const Artifact& Classifier::artifact() const { return impl_->artifact; }
int Classifier::num_classes() const { return static_cast<int>(impl_->classes); }
const std::string& Classifier::compute() const { return impl_->compute; }
std::size_t Classifier::static_models() const {
  std::lock_guard<std::mutex> lock(impl_->pool_mutex);
  return impl_->fixed.size();
}

std::string Classifier::describe() const {
  std::string h = impl_->hint;
  std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const std::string rewritten = impl_->rewrites.describe();
  const std::string why = impl_->why_f32.empty() ? "" : "; " + impl_->why_f32;
  const std::string compute = impl_->artifact.precision == "int8" ? "int8, float layers " + impl_->compute
                                                                    : impl_->compute;
  return "openvino " + impl_->version + " CPU (" + h + (rewritten.empty() ? "" : ", " + rewritten) + ", " + compute +
         why + ")";
}

std::vector<float> Classifier::infer(const float* nhwc, std::size_t batch) const {
  if (batch == 0) throw Error("empty batch: pass at least one image");
  const auto r = static_cast<std::size_t>(bundle().input().resolution);
  try {
    Impl::Lease lease(*impl_, batch);
    ov::InferRequest& request = *lease;
    // The tensor views the caller's memory; OpenVINO reads it, never writes it.
    ov::Tensor input(ov::element::f32, ov::Shape{batch, r, r, 3}, const_cast<float*>(nhwc));
    request.set_input_tensor(input);
    request.infer();
    const ov::Tensor output = request.get_output_tensor();
    if (output.get_size() != batch * impl_->classes)
      throw Error("openvino: output has " + std::to_string(output.get_size()) + " values, expected " +
                  std::to_string(batch * impl_->classes));
    const float* data = output.data<const float>();
    return std::vector<float>(data, data + output.get_size());
  } catch (const Error&) {
    throw;
  } catch (const std::exception& exc) {
    throw Error("openvino: inference failed for a batch of " + std::to_string(batch) + ": " + last_line(exc.what()));
  }
}

std::vector<float> Classifier::infer(const std::vector<float>& nhwc) const {
  const auto r = static_cast<std::size_t>(bundle().input().resolution);
  const std::size_t per = r * r * 3;
  if (nhwc.empty() || nhwc.size() % per != 0)
    throw Error("input of " + std::to_string(nhwc.size()) + " floats is not a whole batch of [" + std::to_string(r) +
                ", " + std::to_string(r) + ", 3] images");
  return infer(nhwc.data(), nhwc.size() / per);
}

std::vector<TopClass> Classifier::top_k(const float* logits, std::size_t k) const {
  const std::size_t c = impl_->classes;
  k = std::min(k, c);
  // softmax in float64, as engine/compare.py softmax
  double mx = -std::numeric_limits<double>::infinity();
  for (std::size_t j = 0; j < c; ++j) mx = std::max(mx, static_cast<double>(logits[j]));
  std::vector<double> e(c);
  double sum = 0;
  for (std::size_t j = 0; j < c; ++j) sum += e[j] = std::exp(static_cast<double>(logits[j]) - mx);
  std::vector<std::size_t> order(c);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return logits[a] > logits[b]; });
  std::vector<TopClass> top;
  for (std::size_t i = 0; i < k; ++i) {
    const std::size_t j = order[i];
    top.push_back({static_cast<int>(j), impl_->labels[j].name, e[j] / sum, logits[j]});
  }
  return top;
}

std::vector<std::vector<TopClass>> Classifier::classify(const std::vector<fs::path>& images, std::size_t k) const {
  const std::vector<float> logits = infer(preprocess(images, bundle().input(), impl_->max_image_pixels));
  std::vector<std::vector<TopClass>> out;
  for (std::size_t i = 0; i < images.size(); ++i) out.push_back(top_k(logits.data() + i * impl_->classes, k));
  return out;
}

}  // namespace bit
