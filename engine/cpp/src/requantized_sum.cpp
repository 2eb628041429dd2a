// The C++ twin of engine/openvino_requantized_sum.py: why the rewrite exists, what it gained and where it applies
// are said there and in docs/cpu.md ("INT8's residual sums on OpenVINO"). Each step below mirrors a function of
// that module.
#include "bit/requantized_sum.hpp"

#include <array>
#include <limits>
#include <vector>

#include <openvino/op/ops.hpp>

namespace bit {
namespace {

using ov::Node;
namespace op = ov::op;

bool only_use(const std::shared_ptr<Node>& node) { return node->output(0).get_target_inputs().size() == 1; }

// A Constant, or a Convert of one (_constant).
bool constant(const ov::Output<Node>& value) {
  std::shared_ptr<Node> node = value.get_node_shared_ptr();
  if (ov::is_type<op::v0::Convert>(node)) node = node->get_input_node_shared_ptr(0);
  return ov::is_type<op::v0::Constant>(node);
}

// The convolution output that `value` is the dequantized quantize of: a Multiply by a constant scale, after an
// optional Subtract of a constant zero point, of a Convert to float of a Convert to 8 bits of a FakeQuantize of a
// Convolution, each step read only by the next (_quantized_convolution). An empty Output where it is not.
ov::Output<Node> quantized_convolution(const ov::Output<Node>& value) {
  std::shared_ptr<Node> node = value.get_node_shared_ptr();
  if (!ov::is_type<op::v1::Multiply>(node) || !constant(node->input_value(1)) || !only_use(node)) return {};
  node = node->get_input_node_shared_ptr(0);
  if (ov::is_type<op::v1::Subtract>(node)) {
    if (!constant(node->input_value(1)) || !only_use(node)) return {};
    node = node->get_input_node_shared_ptr(0);
  }
  std::array<ov::element::Type, 2> steps;
  for (auto& step : steps) {  // to float, from 8 bits
    if (!ov::is_type<op::v0::Convert>(node) || !only_use(node)) return {};
    step = node->get_output_element_type(0);
    node = node->get_input_node_shared_ptr(0);
  }
  if ((steps[1] != ov::element::u8 && steps[1] != ov::element::i8) || !ov::is_type<op::v0::FakeQuantize>(node) ||
      !only_use(node))
    return {};
  const ov::Output<Node> source = node->input_value(0);
  return ov::is_type<op::v1::Convolution>(source.get_node_shared_ptr()) ? source : ov::Output<Node>();
}

// Put the Add's readers, if more than one, behind Maximum(add, -inf): the same numbers, one reader. Whether it did
// (_one_reader).
bool one_reader(const std::shared_ptr<Node>& add) {
  const auto readers = add->output(0).get_target_inputs();
  if (readers.size() < 2) return false;
  auto lowest = op::v0::Constant::create(add->get_output_element_type(0), ov::Shape{},
                                         std::vector<float>{-std::numeric_limits<float>::infinity()});
  auto same = std::make_shared<op::v1::Maximum>(add->output(0), lowest);
  same->set_friendly_name(add->get_friendly_name() + "/written_once");
  for (ov::Input<Node> reader : readers) reader.replace_source_output(same->output(0));
  return true;
}

}  // namespace

RequantizedSums rewrite_requantized_sums(const std::shared_ptr<ov::Model>& model) {
  RequantizedSums count;
  for (const std::shared_ptr<Node>& node : model->get_ordered_ops()) {
    if (!ov::is_type<op::v1::Add>(node) || node->get_input_size() != 2) continue;
    const std::array<ov::Output<Node>, 2> sources = {quantized_convolution(node->input_value(0)),
                                                     quantized_convolution(node->input_value(1))};
    bool fed = false;
    for (std::size_t i = 0; i < 2; ++i) {
      if (!sources[i].get_node()) continue;
      node->input(i).replace_source_output(sources[i]);
      fed = true;
    }
    if (fed) {
      ++count.fed;
      count.written_once += one_reader(node);
    }
  }
  if (count.fed) model->validate_nodes_and_infer_types();
  return count;
}

}  // namespace bit
