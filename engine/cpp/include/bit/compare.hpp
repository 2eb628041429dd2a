// The parity metrics and tolerance check of engine/compare.py (measure, Tolerance.check), in float64.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "bit/bundle.hpp"

namespace bit {

struct Metrics {
  std::size_t samples = 0;
  double max_abs = 0;
  double mean_abs = 0;
  double rel_l2 = 0;
  double cosine_min = 0;
  double top1_agreement = 0;
  double top1_agreement_decisive = 0;
  double logit_scale = 0;
  std::vector<bool> top1_equal;
};

// test and reference: row-major [samples, classes].
Metrics measure(const std::vector<float>& test, const std::vector<float>& reference, std::size_t samples,
                std::size_t classes);
// The tolerances `metrics` breaks, as readable lines; empty when it passes.
std::vector<std::string> check(const Tolerance& tolerance, const Metrics& metrics);

}  // namespace bit
