// The kernels' shared helpers: exp accuracy and limits, fixed-order sums.

#include "ops/cpu/vec_math.h"

#include <cmath>

#include "ops_test_util.h"

using namespace troupe;
using namespace troupe::ops::cpu;

TEST_CASE("exp_fast is accurate to 2e-7 relative", "[ops][vec_math]") {
  double worst = 0;
  float worst_x = 0;
  for (int i = 0; i <= 2000000; i++) {
    const float x = -87.0f + 175.3f * float(i) / 2000000.0f;  // [-87, 88.3]
    const double e = std::exp(double(x));
    const double rel = std::fabs(exp_fast(x) - e) / e;
    if (rel > worst) {
      worst = rel;
      worst_x = x;
    }
  }
  INFO("worst relative error " << worst << " at x = " << worst_x);
  CHECK(worst < 2e-7);
  CHECK(exp_fast(0.0f) == 1.0f);
  CHECK(exp_fast(-INFINITY) == 0.0f);
  CHECK(exp_fast(-1000.0f) == 0.0f);
  CHECK(exp_fast(INFINITY) == INFINITY);
  CHECK(exp_fast(100.0f) == INFINITY);
  CHECK(std::isnan(exp_fast(NAN)));
}

TEST_CASE("sigmoid_fast and its complement", "[ops][vec_math]") {
  for (float x : {-100.0f, -20.0f, -3.0f, -1e-3f, 0.0f, 1e-3f, 2.0f, 17.0f, 100.0f}) {
    const Sigmoid s = sigmoid_fast(x);
    const double ref = 1.0 / (1.0 + std::exp(-double(x)));
    INFO("x = " << x);
    CHECK(std::fabs(s.s - ref) <= 3e-7 * ref + 1e-37);  // exp_fast flushes subnormals
    CHECK(std::fabs(s.one_minus_s - (1.0 - ref)) <= 3e-7 * (1.0 - ref) + 1e-30);
  }
}

TEST_CASE("reduce_sum uses 16 interleaved lanes combined pairwise", "[ops][vec_math]") {
  // The order is part of the contract (results must not depend on vector width or
  // alignment): compare with the same order spelled out.
  auto x = test::randn(1000, 60, {1});
  float lanes[16] = {};
  for (size_t i = 0; i < x.size(); i++) lanes[i % 16] += x[i];
  for (int w = 8; w >= 1; w /= 2)
    for (int l = 0; l < w; l++) lanes[l] += lanes[l + w];
  const float got = reduce_sum(int64_t(x.size()), [&](int64_t i) { return x[size_t(i)]; });
  CHECK(got == lanes[0]);
  // and from an unaligned start the order is the same relative to the start
  const float got1 = reduce_sum(999, [&](int64_t i) { return x[size_t(i) + 1]; });
  float lanes1[16] = {};
  for (size_t i = 0; i < 999; i++) lanes1[i % 16] += x[i + 1];
  for (int w = 8; w >= 1; w /= 2)
    for (int l = 0; l < w; l++) lanes1[l] += lanes1[l + w];
  CHECK(got1 == lanes1[0]);
}

TEST_CASE("reduce_max skips NaN like std::max", "[ops][vec_math]") {
  std::vector<float> x = {1.0f, 5.0f, -2.0f, 4.0f, 3.0f, 0.0f, 1.0f, 2.0f, 3.0f,
                          4.0f, 1.0f, 2.0f,  3.0f, 4.0f, 1.0f, 2.0f, 3.0f, 4.5f};
  CHECK(reduce_max(x.data(), int64_t(x.size())) == 5.0f);
  x[17] = NAN;
  CHECK(reduce_max(x.data(), int64_t(x.size())) == 5.0f);
  CHECK(reduce_max(x.data(), 0) == -INFINITY);
}
