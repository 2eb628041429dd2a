// The C++ twin of engine/openvino_pad_pool.py: why the rewrite exists, and what it gained, is said there and in
// docs/cpu.md ("The stem's Pad on OpenVINO"). Each step below mirrors a function of that module.
#include "bit/pad_pool.hpp"

#include <cstdint>
#include <limits>
#include <vector>

#include <openvino/op/ops.hpp>
#include <openvino/op/util/max_pool_base.hpp>
#include <openvino/op/util/pad_base.hpp>

namespace bit {
namespace {

using ov::Node;
namespace op = ov::op;

struct Fold {
  std::shared_ptr<Node> pad;
  std::shared_ptr<op::util::MaxPoolBase> pool;
  std::vector<std::int64_t> begin, end;  // the spatial pads
};

// The Pad's constant input `i` as integers; false where it is not a constant.
bool constant_ints(const std::shared_ptr<Node>& node, std::size_t i, std::vector<std::int64_t>& out) {
  auto constant = ov::as_type_ptr<op::v0::Constant>(node->get_input_node_shared_ptr(i));
  if (!constant) return false;
  out = constant->cast_vector<std::int64_t>();
  return true;
}

// A zero Pad on the spatial axes of a 4-D tensor of static height and width, whose only consumer is a
// floor-rounded MaxPool with no padding and no used indices (_pool_after); false where `node` is anything else.
bool fold_of(const std::shared_ptr<Node>& node, Fold& fold) {
  auto pad = ov::as_type_ptr<op::util::PadBase>(node);
  if (!pad || pad->get_pad_mode() != op::PadMode::CONSTANT) return false;
  std::vector<std::int64_t> begin, end;
  if (!constant_ints(pad, 1, begin) || !constant_ints(pad, 2, end)) return false;
  if (pad->get_input_size() > 3) {  // without a value input, ONNX's Pad pads zeros
    auto value = ov::as_type_ptr<op::v0::Constant>(pad->get_input_node_shared_ptr(3));
    if (!value) return false;
    for (float v : value->cast_vector<float>())
      if (v != 0.0f) return false;
  }
  const ov::PartialShape shape = pad->get_input_partial_shape(0);
  if (shape.rank().is_dynamic() || shape.size() != 4 || begin.size() != 4 || end.size() != 4) return false;
  if (shape[2].is_dynamic() || shape[3].is_dynamic()) return false;  // the window mask needs the height and width
  if (begin[0] || begin[1] || end[0] || end[1]) return false;
  bool any = false;
  for (std::size_t i = 2; i < 4; ++i) {
    if (begin[i] < 0 || end[i] < 0) return false;
    any = any || begin[i] || end[i];
  }
  if (!any) return false;
  const auto consumers = pad->output(0).get_target_inputs();
  if (consumers.size() != 1) return false;
  // MaxPool v1, v8 and v14 (MaxPoolBase has no other kind)
  auto pool = ov::as_type_ptr<op::util::MaxPoolBase>(consumers.begin()->get_node()->shared_from_this());
  if (!pool) return false;
  if (pool->get_rounding_type() != op::RoundingType::FLOOR) return false;
  const op::PadType auto_pad = pool->get_auto_pad();
  if (auto_pad != op::PadType::EXPLICIT && auto_pad != op::PadType::VALID) return false;
  if (auto_pad == op::PadType::EXPLICIT) {
    for (auto p : pool->get_pads_begin())
      if (p) return false;
    for (auto p : pool->get_pads_end())
      if (p) return false;
  }
  // MaxPool v8 and v14 also return indices, which would index the padded tensor
  if (pool->get_output_size() > 1 && !pool->output(1).get_target_inputs().empty()) return false;
  fold.pad = pad;
  fold.pool = pool;
  fold.begin = {begin[2], begin[3]};
  fold.end = {end[2], end[3]};
  return true;
}

// Per axis: which outputs' windows take a padded position, and which take any position inside the padded input
// (window_mask's per_axis).
void per_axis(std::int64_t n, std::int64_t b, std::int64_t e, std::int64_t k, std::int64_t s, std::int64_t d,
              std::int64_t out, std::vector<bool>& padded, std::vector<bool>& inside) {
  padded.assign(static_cast<std::size_t>(out), false);
  inside.assign(static_cast<std::size_t>(out), false);
  for (std::int64_t i = 0; i < out; ++i) {
    for (std::int64_t t = 0; t < k; ++t) {
      const std::int64_t tap = i * s + t * d - b;
      if (tap < -b || tap >= n + e) continue;
      inside[static_cast<std::size_t>(i)] = true;
      if (tap < 0 || tap >= n) padded[static_cast<std::size_t>(i)] = true;
    }
  }
}

// MaxPool(x, padded by -inf) then Maximum(that, the zero-window mask) where the pool's output was (_replace); false,
// and the graph untouched, where the padded pool's output shape differs from the pool's.
bool replace(const Fold& fold) {
  const ov::Output<Node> x = fold.pad->input_value(0);
  const ov::Shape kernel = fold.pool->get_kernel();
  const ov::Strides strides = fold.pool->get_strides();
  ov::Strides dilations(kernel.size(), 1);
  if (auto v8 = ov::as_type_ptr<op::v8::MaxPool>(fold.pool)) dilations = v8->get_dilations();
  if (auto v14 = ov::as_type_ptr<op::v14::MaxPool>(fold.pool)) dilations = v14->get_dilations();
  const ov::Shape begin{static_cast<std::size_t>(fold.begin[0]), static_cast<std::size_t>(fold.begin[1])};
  const ov::Shape end{static_cast<std::size_t>(fold.end[0]), static_cast<std::size_t>(fold.end[1])};
  auto padded_pool = std::make_shared<op::v8::MaxPool>(x, strides, dilations, begin, end, kernel);
  const ov::PartialShape out = padded_pool->get_output_partial_shape(0);
  if (out != fold.pool->get_output_partial_shape(0) || out.rank().is_dynamic() || out[2].is_dynamic() ||
      out[3].is_dynamic())
    return false;
  const ov::PartialShape in = x.get_partial_shape();
  const std::int64_t out_h = out[2].get_length(), out_w = out[3].get_length();
  std::vector<bool> rows_padded, rows_inside, cols_padded, cols_inside;
  per_axis(in[2].get_length(), fold.begin[0], fold.end[0], static_cast<std::int64_t>(kernel[0]),
           static_cast<std::int64_t>(strides[0]), static_cast<std::int64_t>(dilations[0]), out_h, rows_padded,
           rows_inside);
  per_axis(in[3].get_length(), fold.begin[1], fold.end[1], static_cast<std::int64_t>(kernel[1]),
           static_cast<std::int64_t>(strides[1]), static_cast<std::int64_t>(dilations[1]), out_w, cols_padded,
           cols_inside);
  std::vector<float> mask(static_cast<std::size_t>(out_h * out_w), -std::numeric_limits<float>::infinity());
  for (std::int64_t i = 0; i < out_h; ++i)
    for (std::int64_t j = 0; j < out_w; ++j) {
      const auto r = static_cast<std::size_t>(i), c = static_cast<std::size_t>(j);
      if ((rows_padded[r] && cols_inside[c]) || (rows_inside[r] && cols_padded[c]))
        mask[static_cast<std::size_t>(i * out_w + j)] = 0.0f;
    }
  auto constant = op::v0::Constant::create(x.get_element_type(),
                                           ov::Shape{1, 1, static_cast<std::size_t>(out_h),
                                                     static_cast<std::size_t>(out_w)},
                                           mask);
  auto folded = std::make_shared<op::v1::Maximum>(padded_pool->output(0), constant);
  folded->set_friendly_name(fold.pool->get_friendly_name());
  fold.pool->output(0).replace(folded->output(0));
  return true;
}

}  // namespace

int rewrite_pad_pools(const std::shared_ptr<ov::Model>& model) {
  int count = 0;
  for (const auto& node : model->get_ordered_ops()) {
    Fold fold;
    if (fold_of(node, fold) && replace(fold)) ++count;
  }
  if (count) model->validate_nodes_and_infer_types();
  return count;
}

}  // namespace bit
