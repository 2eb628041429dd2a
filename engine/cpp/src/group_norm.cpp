// The C++ twin of engine/openvino_group_norm.py: why the rewrite exists, and what it gained, is said there and in
// docs/cpu.md ("GroupNorm on OpenVINO"). Each step below mirrors a function of that module.
#include "bit/group_norm.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include <openvino/op/ops.hpp>

namespace bit {
namespace {

using ov::Node;
using ov::Output;
namespace op = ov::op;

// Ops that change a constant's shape, not its values.
bool reshapes(const std::shared_ptr<Node>& node) {
  return ov::is_type<op::v1::Reshape>(node) || ov::is_type<op::v0::Unsqueeze>(node) ||
         ov::is_type<op::v0::Squeeze>(node) || ov::is_type<op::v1::Broadcast>(node) ||
         ov::is_type<op::v3::Broadcast>(node);
}

// Whether one input of the elementwise `node` is a constant holding only `value`, maybe reshaped (_constant_equal).
bool constant_equal(const std::shared_ptr<Node>& node, float value) {
  for (std::size_t i = 0; i < node->get_input_size(); ++i) {
    std::shared_ptr<Node> source = node->get_input_node_shared_ptr(i);
    while (reshapes(source)) source = source->get_input_node_shared_ptr(0);
    if (auto constant = ov::as_type_ptr<op::v0::Constant>(source)) {
      const std::vector<float> values = constant->cast_vector<float>();
      return std::all_of(values.begin(), values.end(), [value](float v) { return v == value; });
    }
  }
  return false;
}

struct Chain {
  Output<Node> x;
  std::int64_t groups = 0;
  float eps = 0;
  bool inside_sqrt = true;
  std::shared_ptr<Node> back;
};

// The grouped reshape of a 4-D x with static channels, normalized over each group, whose output reaches a Reshape
// back to x's shape through identity ops only (_chain); false where `mvn` is anything else.
bool chain_of(const std::shared_ptr<op::v6::MVN>& mvn, Chain& chain) {
  auto grouped = ov::as_type_ptr<op::v1::Reshape>(mvn->get_input_node_shared_ptr(0));
  if (!grouped) return false;
  chain.x = grouped->input_value(0);
  const ov::PartialShape x_shape = chain.x.get_partial_shape();
  const ov::PartialShape g_shape = grouped->get_output_partial_shape(0);
  if (x_shape.rank().is_dynamic() || x_shape.size() != 4 || g_shape.rank().is_dynamic() || g_shape.size() != 3)
    return false;
  if (x_shape[1].is_dynamic() || g_shape[1].is_dynamic()) return false;
  chain.groups = g_shape[1].get_length();
  if (chain.groups < 1 || x_shape[1].get_length() % chain.groups) return false;
  auto axes = ov::as_type_ptr<op::v0::Constant>(mvn->get_input_node_shared_ptr(1));
  if (!mvn->get_normalize_variance() || !axes) return false;
  const std::vector<std::int64_t> over = axes->cast_vector<std::int64_t>();
  if (over.size() != 1 || (over[0] % 3 + 3) % 3 != 2) return false;  // over each group, not across groups
  std::shared_ptr<Node> node = mvn;
  while (true) {
    // ShapeOf only reads the shape, to broadcast InstanceNormalization's scale and bias: it goes with the chain
    std::vector<std::shared_ptr<Node>> consumers;
    for (const auto& input : node->output(0).get_target_inputs()) {
      std::shared_ptr<Node> consumer = input.get_node()->shared_from_this();
      if (!ov::is_type<op::v0::ShapeOf>(consumer) && !ov::is_type<op::v3::ShapeOf>(consumer))
        consumers.push_back(consumer);
    }
    if (consumers.size() != 1) return false;
    node = consumers[0];
    if (ov::is_type<op::v1::Reshape>(node)) break;
    const bool identity = (ov::is_type<op::v1::Multiply>(node) && constant_equal(node, 1.0f)) ||
                          (ov::is_type<op::v1::Add>(node) && constant_equal(node, 0.0f));
    if (!identity) return false;
  }
  if (!node->get_output_partial_shape(0).compatible(x_shape)) return false;
  chain.eps = mvn->get_eps();
  chain.inside_sqrt = mvn->get_eps_mode() == op::MVNEpsMode::INSIDE_SQRT;
  chain.back = node;
  return true;
}

std::shared_ptr<op::v0::Constant> i64(const std::vector<std::int64_t>& values) {
  return op::v0::Constant::create(ov::element::i64, ov::Shape{values.size()}, values);
}

// Whether `value` is a constant (maybe converted or reshaped) holding one value per channel of an [N,C,H,W] tensor:
// shape [C,1,1] or [1,C,1,1] (a [C] would broadcast along W), or one value for all (_per_channel_constant).
bool per_channel_constant(const Output<Node>& value, std::int64_t channels) {
  const ov::PartialShape shape = value.get_partial_shape();
  if (shape.is_dynamic()) return false;
  const ov::Shape dims = shape.to_shape();
  const auto size = static_cast<std::int64_t>(ov::shape_size(dims));
  const std::size_t rank = dims.size();
  const bool per_channel = size == channels && (rank == 3 || rank == 4) &&
                           static_cast<std::int64_t>(dims[rank - 3]) == channels && dims[rank - 2] == 1 &&
                           dims[rank - 1] == 1;
  if (size != 1 && !per_channel) return false;
  std::shared_ptr<Node> node = value.get_node_shared_ptr();
  while (reshapes(node) || ov::is_type<op::v0::Convert>(node)) node = node->get_input_node_shared_ptr(0);
  return ov::is_type<op::v0::Constant>(node);
}

struct Affine {
  Output<Node> gamma, beta;
  std::shared_ptr<Node> add;  // the Add of beta, whose output the rewrite replaces
};

// The chain's Reshape back read only by a Multiply by gamma, read only by an Add of beta, each a per-channel
// constant (_affine); false where it is anything else.
bool affine_of(const Chain& chain, Affine& affine) {
  const std::int64_t channels = chain.x.get_partial_shape()[1].get_length();
  std::shared_ptr<Node> node = chain.back;
  Output<Node> values[2];
  for (int step = 0; step < 2; ++step) {
    const auto readers = node->output(0).get_target_inputs();
    if (readers.size() != 1) return false;
    const ov::Input<Node> reader = *readers.begin();
    std::shared_ptr<Node> next = reader.get_node()->shared_from_this();
    if (step == 0 ? !ov::is_type<op::v1::Multiply>(next) : !ov::is_type<op::v1::Add>(next)) return false;
    values[step] = next->input_value(1 - reader.get_index());
    if (!per_channel_constant(values[step], channels)) return false;
    node = next;
  }
  affine.gamma = values[0];
  affine.beta = values[1];
  affine.add = node;
  return true;
}

// (x - group mean) / sqrt(group variance + eps), on x's own shape, where the chain's Reshape back was; or, with
// `affine`, that times gamma plus beta as x*a + b where the Add of beta was (_replace).
void replace(const Chain& chain, const Affine* affine) {
  const std::int64_t channels = chain.x.get_partial_shape()[1].get_length();
  const std::int64_t per_group = channels / chain.groups;
  const ov::element::Type type = chain.x.get_element_type();
  const auto group_mean = [&](const Output<Node>& per_channel) -> Output<Node> {  // [N,C,1,1] -> [N,G,1]
    auto split = std::make_shared<op::v1::Reshape>(per_channel, i64({0, chain.groups, per_group}), true);
    return std::make_shared<op::v1::ReduceMean>(split, i64({2}), true);
  };
  const auto tiled = [&](const Output<Node>& group) -> Output<Node> {  // [N,G,1] -> [N,G,C/G]
    return std::make_shared<op::v0::Tile>(group, i64({1, 1, per_group}));
  };
  const auto per_channel = [&](const Output<Node>& grouped) -> Output<Node> {  // [N,G,C/G] -> [N,C,1,1]
    return std::make_shared<op::v1::Reshape>(grouped, i64({0, channels, 1, 1}), true);
  };
  const auto hw = i64({2, 3});
  Output<Node> mean = group_mean(std::make_shared<op::v1::ReduceMean>(chain.x, hw, true));
  auto centred = std::make_shared<op::v1::Subtract>(chain.x, per_channel(tiled(mean)));
  Output<Node> variance = group_mean(std::make_shared<op::v1::ReduceMean>(
      std::make_shared<op::v1::Multiply>(centred, centred), hw, true));
  auto epsilon = op::v0::Constant::create(type, ov::Shape{}, std::vector<float>{chain.eps});
  Output<Node> deviation;
  if (chain.inside_sqrt)
    deviation = std::make_shared<op::v0::Sqrt>(std::make_shared<op::v1::Add>(variance, epsilon));
  else
    deviation = std::make_shared<op::v1::Add>(std::make_shared<op::v0::Sqrt>(variance), epsilon);
  std::shared_ptr<Node> out, replaced;
  if (!affine) {
    out = std::make_shared<op::v1::Divide>(centred, per_channel(tiled(deviation)));
    replaced = chain.back;
  } else {
    // a and b on the [N,G,C/G] statistics, before the Reshape to [N,C,1,1]: OpenVINO fuses elementwise ops on
    // small tensors into the pass over x that reads them, and would compute them once per pixel there
    const auto grouped = [&](const Output<Node>& value) -> Output<Node> {  // [1,G,C/G]; one for all as [1,1,1]
      const bool per_channel = static_cast<std::int64_t>(ov::shape_size(value.get_shape())) == channels;
      return std::make_shared<op::v1::Reshape>(std::make_shared<op::v0::Convert>(value, type),
                                               per_channel ? i64({1, chain.groups, per_group}) : i64({1, 1, 1}),
                                               false);
    };
    auto one = op::v0::Constant::create(type, ov::Shape{}, std::vector<float>{1.0f});
    auto a = std::make_shared<op::v1::Multiply>(tiled(std::make_shared<op::v1::Divide>(one, deviation)),
                                                grouped(affine->gamma));
    auto b = std::make_shared<op::v1::Subtract>(grouped(affine->beta),
                                                std::make_shared<op::v1::Multiply>(tiled(mean), a));
    out = std::make_shared<op::v1::Add>(std::make_shared<op::v1::Multiply>(chain.x, per_channel(a)), per_channel(b));
    replaced = affine->add;
  }
  out->set_friendly_name(replaced->get_friendly_name());
  replaced->output(0).replace(out->output(0));
}

}  // namespace

GroupNorms rewrite_group_norms(const std::shared_ptr<ov::Model>& model) {
  GroupNorms done;
  for (const auto& node : model->get_ordered_ops()) {
    auto mvn = ov::as_type_ptr<op::v6::MVN>(node);
    Chain chain;
    if (mvn && chain_of(mvn, chain)) {
      Affine affine;
      const bool folded = affine_of(chain, affine);
      replace(chain, folded ? &affine : nullptr);
      ++done.rewritten;
      done.folded += folded;
    }
  }
  if (done.rewritten) model->validate_nodes_and_infer_types();
  return done;
}

}  // namespace bit
