#include "bit/compare.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace bit {

namespace {

std::size_t argmax(const double* row, std::size_t n) {
  return static_cast<std::size_t>(std::max_element(row, row + n) - row);
}

std::string fmt(const char* format, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, a, b, c);
  return buf;
}

}  // namespace

Metrics measure(const std::vector<float>& test, const std::vector<float>& reference, std::size_t samples,
                std::size_t classes) {
  if (samples == 0 || classes == 0 || test.size() != samples * classes || reference.size() != samples * classes)
    throw Error("cannot compare logits of " + std::to_string(test.size()) + " values with reference logits of " +
                std::to_string(reference.size()) + " values (" + std::to_string(samples) + " x " +
                std::to_string(classes) + " expected)");
  std::vector<double> t(test.begin(), test.end()), r(reference.begin(), reference.end());
  Metrics m;
  m.samples = samples;
  double sum_abs = 0, diff_sq = 0, ref_sq = 0;
  m.cosine_min = std::numeric_limits<double>::infinity();
  std::size_t top1 = 0, decisive = 0, top1_decisive = 0;
  for (std::size_t i = 0; i < samples; ++i) {
    const double* tr = &t[i * classes];
    const double* rr = &r[i * classes];
    double dot = 0, nt = 0, nr = 0, row_max_abs = 0;
    for (std::size_t j = 0; j < classes; ++j) {
      const double d = tr[j] - rr[j];
      const double ad = std::abs(d);
      row_max_abs = std::max(row_max_abs, ad);
      sum_abs += ad;
      diff_sq += d * d;
      ref_sq += rr[j] * rr[j];
      dot += tr[j] * rr[j];
      nt += tr[j] * tr[j];
      nr += rr[j] * rr[j];
      m.logit_scale = std::max(m.logit_scale, std::abs(rr[j]));
    }
    if (std::isnan(dot)) row_max_abs = std::numeric_limits<double>::quiet_NaN();  // numpy's max propagates NaN
    m.max_abs = (std::isnan(row_max_abs) || std::isnan(m.max_abs)) ? std::numeric_limits<double>::quiet_NaN()
                                                                    : std::max(m.max_abs, row_max_abs);
    const double cos = dot / std::max(std::sqrt(nt) * std::sqrt(nr), 1e-30);
    m.cosine_min = std::isnan(cos) ? cos : std::min(m.cosine_min, cos);
    const bool equal = argmax(tr, classes) == argmax(rr, classes);
    m.top1_equal.push_back(equal);
    top1 += equal;
    // A flip between two classes closer than twice the error is no evidence of a broken export (compare.py).
    double margin = std::numeric_limits<double>::infinity();
    if (classes > 1) {
      std::vector<double> row(rr, rr + classes);
      std::nth_element(row.begin(), row.end() - 2, row.end());
      margin = row[classes - 1] - row[classes - 2];
    }
    if (margin > 2 * row_max_abs) {
      ++decisive;
      top1_decisive += equal;
    }
  }
  m.mean_abs = sum_abs / static_cast<double>(samples * classes);
  m.rel_l2 = std::sqrt(diff_sq) / std::max(std::sqrt(ref_sq), 1e-30);
  m.top1_agreement = static_cast<double>(top1) / static_cast<double>(samples);
  m.top1_agreement_decisive = decisive ? static_cast<double>(top1_decisive) / static_cast<double>(decisive) : 1.0;
  return m;
}

std::vector<std::string> check(const Tolerance& tol, const Metrics& m) {
  // `!(a <= b)` as compare.py writes it: a NaN metric fails.
  std::vector<std::string> failures;
  if (!(m.rel_l2 <= tol.rel_l2)) failures.push_back(fmt("relative L2 %.3g > %g", m.rel_l2, tol.rel_l2));
  if (!(m.cosine_min >= tol.cosine_min)) failures.push_back(fmt("min cosine %.8f < %g", m.cosine_min, tol.cosine_min));
  const double scaled = m.max_abs / std::max(m.logit_scale, 1e-30);
  if (!(scaled <= tol.max_abs_over_scale))
    failures.push_back(fmt("max abs %.3g is %.3g of the logit scale > %g", m.max_abs, scaled, tol.max_abs_over_scale));
  if (!(m.top1_agreement_decisive >= tol.top1_decisive))
    failures.push_back(
        fmt("top-1 agreement on decisive samples %.3f < %g", m.top1_agreement_decisive, tol.top1_decisive));
  return failures;
}

}  // namespace bit
