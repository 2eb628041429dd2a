// The C++ twin of engine/openvino_graph.py.
#include "bit/openvino_graph.hpp"

#include "bit/group_norm.hpp"
#include "bit/pad_pool.hpp"
#include "bit/requantized_sum.hpp"

namespace bit {

std::string Rewrites::describe() const {
  std::string text;
  if (group_norms) text = std::to_string(group_norms) + " GroupNorms on channel statistics";
  if (group_norms_folded)
    text += ", " + std::to_string(group_norms_folded) + " with gamma and beta in one multiply-add";
  if (pad_pools) {
    if (!text.empty()) text += ", ";
    text += pad_pools == 1 ? std::string("1 zero Pad in its MaxPool")
                           : std::to_string(pad_pools) + " zero Pads in their MaxPools";
  }
  if (requantized_sums) {
    if (!text.empty()) text += ", ";
    text += requantized_sums == 1 ? std::string("1 sum of convolutions without their Q/DQ")
                                  : std::to_string(requantized_sums) + " sums of convolutions without their Q/DQ";
  }
  if (sums_written_once) text += ", " + std::to_string(sums_written_once) + " of them through one reader";
  return text;
}

std::shared_ptr<ov::Model> read_rewritten(ov::Core& core, const std::string& path, bool bf16, Rewrites* rewrites) {
  std::shared_ptr<ov::Model> model = core.read_model(path);
  Rewrites done;
  const GroupNorms norms = rewrite_group_norms(model);
  done.group_norms = norms.rewritten;
  done.group_norms_folded = norms.folded;
  done.pad_pools = rewrite_pad_pools(model);
  if (bf16) {
    const RequantizedSums sums = rewrite_requantized_sums(model);
    done.requantized_sums = sums.fed;
    done.sums_written_once = sums.written_once;
  }
  if (rewrites) *rewrites = done;
  return model;
}

}  // namespace bit
