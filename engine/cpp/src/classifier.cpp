#include "bit/classifier.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <numeric>
#include <thread>

#include <openvino/openvino.hpp>

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

}  // namespace

struct Classifier::Impl {
  Bundle bundle;
  Artifact artifact;
  std::vector<Label> labels;
  std::string hint;
  std::uint64_t max_image_pixels = kDefaultMaxImagePixels;
  std::string version;
  ov::Core core;
  mutable ov::CompiledModel compiled;  // create_infer_request is non-const; made under pool_mutex
  std::size_t classes = 0;

  // Infer requests are not thread-safe, the compiled model is: every call borrows a request from this pool
  // (making one when all are in use) and gives it back, so concurrent callers never share one.
  mutable std::mutex pool_mutex;
  mutable std::vector<std::unique_ptr<ov::InferRequest>> pool;

  Impl(Bundle b, const ClassifierOptions& options) : bundle(std::move(b)) {
    if (options.hint != "LATENCY" && options.hint != "THROUGHPUT")
      throw Error("OpenVINO performance hint must be LATENCY or THROUGHPUT, got '" + options.hint + "'");
    hint = options.hint;
    if (options.max_image_pixels == 0) throw Error("max_image_pixels must be at least 1");
    max_image_pixels = options.max_image_pixels;
    artifact = bundle.artifact(bundle.flavour_for("openvino", options.precision));
    const fs::path model_path = bundle.verified_path(artifact);
    labels = bundle.labels();
    const InputSpec& spec = bundle.input();
    try {
      version = ov::get_openvino_version().buildNumber;
      version = version.substr(0, version.find('-'));
      std::shared_ptr<ov::Model> model = core.read_model(model_path.string());
      if (model->inputs().size() != 1 || model->outputs().size() != 1)
        throw Error(model_path.string() + ": expected one input and one output");
      const auto names = model->input().get_names();
      if (names.find(spec.name) == names.end())
        throw Error(model_path.string() + ": has no input named '" + spec.name + "' (manifest input.name)");
      const ov::PartialShape in = model->input().get_partial_shape();
      const auto r = static_cast<ov::Dimension::value_type>(spec.resolution);
      if (in.rank().is_dynamic() || in.size() != 4 || !in[1].compatible(r) || !in[2].compatible(r) || !in[3].compatible(3))
        throw Error(model_path.string() + ": input shape " + in.to_string() + " is not [batch, " +
                    std::to_string(spec.resolution) + ", " + std::to_string(spec.resolution) + ", 3]");
      const ov::PartialShape out = model->output().get_partial_shape();
      if (out.rank().is_dynamic() || out.size() != 2 || !out[1].compatible(bundle.num_classes()))
        throw Error(model_path.string() + ": output shape " + out.to_string() + " is not [batch, " +
                    std::to_string(bundle.num_classes()) + "]");
      classes = static_cast<std::size_t>(bundle.num_classes());
      const int threads = options.threads > 0 ? options.threads
                                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      compiled = core.compile_model(
          model, "CPU",
          ov::hint::performance_mode(hint == "LATENCY" ? ov::hint::PerformanceMode::LATENCY
                                                       : ov::hint::PerformanceMode::THROUGHPUT),
          // f32: the CPU plugin would otherwise run FP32 models in bf16 where the CPU has it (openvino_runner.py).
          ov::hint::inference_precision(ov::element::f32), ov::inference_num_threads(threads));
    } catch (const Error&) {
      throw;
    } catch (const std::exception& exc) {
      throw Error("OpenVINO cannot load " + model_path.string() + ": " + last_line(exc.what()));
    }
  }

  // RAII: a borrowed request goes back to the pool when the lease ends, exception or not.
  class Lease {
   public:
    explicit Lease(const Impl& impl) : impl_(impl) {
      std::lock_guard<std::mutex> lock(impl_.pool_mutex);
      if (impl_.pool.empty()) {
        request_ = std::make_unique<ov::InferRequest>(impl_.compiled.create_infer_request());
      } else {
        request_ = std::move(impl_.pool.back());
        impl_.pool.pop_back();
      }
    }
    ~Lease() {
      std::lock_guard<std::mutex> lock(impl_.pool_mutex);
      impl_.pool.push_back(std::move(request_));
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ov::InferRequest& operator*() { return *request_; }

   private:
    const Impl& impl_;
    std::unique_ptr<ov::InferRequest> request_;
  };
};

Classifier::Classifier(Bundle bundle, const ClassifierOptions& options)
    : impl_(std::make_unique<Impl>(std::move(bundle), options)) {}
Classifier::~Classifier() = default;
Classifier::Classifier(Classifier&&) noexcept = default;
Classifier& Classifier::operator=(Classifier&&) noexcept = default;

const Bundle& Classifier::bundle() const { return impl_->bundle; }
const Artifact& Classifier::artifact() const { return impl_->artifact; }
int Classifier::num_classes() const { return static_cast<int>(impl_->classes); }

std::string Classifier::describe() const {
  std::string h = impl_->hint;
  std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return "openvino " + impl_->version + " CPU (" + h + ", f32)";
}

std::vector<float> Classifier::infer(const float* nhwc, std::size_t batch) const {
  if (batch == 0) throw Error("empty batch: pass at least one image");
  const auto r = static_cast<std::size_t>(bundle().input().resolution);
  try {
    Impl::Lease lease(*impl_);
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
