#pragma once
// Helpers for the kernel tests: random inputs, thread-count runs, bitwise comparison and
// a central finite-difference gradient check.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <vector>

#include "core/rng.h"
#include "ops/ops.h"
#include "test_util.h"

namespace troupe::test {

// n normal draws (mean 0) from the stream keyed by (seed, ids).
inline std::vector<float> randn(size_t n, uint64_t seed, std::initializer_list<uint64_t> ids = {},
                                float stddev = 1.0f) {
  std::vector<float> x(n);
  RngStream(seed, ids).fill_normal(x.data(), int64_t(n), 0.0f, stddev);
  return x;
}
inline std::vector<float> randu(size_t n, uint64_t seed, std::initializer_list<uint64_t> ids, float lo, float hi) {
  std::vector<float> x(n);
  RngStream(seed, ids).fill_uniform(x.data(), int64_t(n), lo, hi);
  return x;
}

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs f with the kernels limited to n threads, then restores the previous count.
template <class F>
void with_threads(int n, F&& f) {
  const int before = ops::num_threads();
  ops::set_num_threads(n);
  f();
  ops::set_num_threads(before);
}

// sum_i out[i] * w[i] in f64: the scalar loss whose gradient with respect to out is w.
inline double weighted_sum(const std::vector<float>& out, const std::vector<float>& w) {
  double s = 0;
  for (size_t i = 0; i < out.size(); i++) s += double(out[i]) * double(w[i]);
  return s;
}

// Central differences (loss(x + eps) - loss(x - eps)) / (2 eps) for every element of x,
// compared with the analytic gradient: |fd - grad| <= rtol * |grad| + atol. Callers state
// why their eps, rtol and atol fit: truncation error is O(eps^2), and f32 rounding of the
// outputs that change adds about (their count) * 6e-8 * |out| * |w| / (2 eps).
// loss() must read x (which is perturbed in place and restored).
inline void check_gradient(const char* name, std::vector<float>& x, const std::vector<float>& grad,
                           const std::function<double()>& loss, double eps, double rtol, double atol) {
  REQUIRE(x.size() == grad.size());
  double worst = 0, worst_fd = 0;
  size_t worst_i = 0;
  for (size_t i = 0; i < x.size(); i++) {
    const float x0 = x[i];
    x[i] = float(x0 + eps);
    const double lp = loss();
    x[i] = float(x0 - eps);
    const double lm = loss();
    x[i] = x0;
    // divide by the step actually taken in f32
    const double fd = (lp - lm) / (double(float(x0 + eps)) - double(float(x0 - eps)));
    const double ratio = std::fabs(fd - grad[i]) / (rtol * std::fabs(grad[i]) + atol);
    if (!(ratio <= worst)) {
      worst = ratio;
      worst_i = i;
      worst_fd = fd;
    }
  }
  INFO(name << ": worst element " << worst_i << ": finite difference " << worst_fd << " vs analytic " << grad[worst_i]
            << " (error/tolerance " << worst << ")");
  CHECK(worst <= 1.0);
  CHECK(max_abs(grad.data(), grad.size()) > 10 * atol);  // a check on a ~zero gradient would prove nothing
  if (std::getenv("TROUPE_TEST_VERBOSE")) std::printf("%s: worst error/tolerance %.3f\n", name, worst);
}

}  // namespace troupe::test
