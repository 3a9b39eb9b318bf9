// RoPE (rotate-half form): fast vs reference, known angles, gradient (adjoint) check,
// thread determinism.

#include <cmath>

#include "ops_test_util.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("rope fast matches reference bitwise", "[ops][rope]") {
  // Both use the same f32 angle table formula and the same rotation expression.
  struct Shape {
    int B, T, NHx, HS, pos0;
  };
  for (const Shape& s :
       {Shape{1, 1, 1, 2, 0}, Shape{2, 7, 3, 14, 0}, Shape{1, 65, 2, 64, 5}, Shape{2, 9, 1, 128, 1000}}) {
    INFO("B=" << s.B << " T=" << s.T << " NHx=" << s.NHx << " HS=" << s.HS << " pos0=" << s.pos0);
    auto x = randn(size_t(s.B) * s.T * s.NHx * s.HS, 70, {1});
    auto y = x, y_r = x;
    ops::rope_forward(y.data(), s.B, s.T, s.NHx, s.HS, 10000.0f, s.pos0);
    ops::rope_forward_ref(y_r.data(), s.B, s.T, s.NHx, s.HS, 10000.0f, s.pos0);
    CHECK(bitwise_equal(y, y_r));
    ops::rope_backward(y.data(), s.B, s.T, s.NHx, s.HS, 10000.0f, s.pos0);
    ops::rope_backward_ref(y_r.data(), s.B, s.T, s.NHx, s.HS, 10000.0f, s.pos0);
    CHECK(bitwise_equal(y, y_r));
    // a rotation followed by its inverse is the identity up to rounding
    CHECK_CLOSE_ARRAYS(y.data(), x.data(), x.size(), 1e-5);
  }
}

TEST_CASE("rope rotates pair (i, i + HS/2) by pos * theta^(-2i/HS)", "[ops][rope]") {
  // HS = 4, theta = 100: inv_freq = {1, 0.1}. At position p, the pair (x0, x2) turns by
  // p radians and (x1, x3) by p/10.
  const int HS = 4, T = 3;
  std::vector<float> x(size_t(T) * HS);
  for (int t = 0; t < T; t++) {
    x[size_t(t) * HS + 0] = 1.0f;  // (x0, x2) = (1, 0)
    x[size_t(t) * HS + 1] = 0.0f;  // (x1, x3) = (0, 1)
    x[size_t(t) * HS + 2] = 0.0f;
    x[size_t(t) * HS + 3] = 1.0f;
  }
  ops::rope_forward(x.data(), 1, T, 1, HS, 100.0f, 2);  // positions 2, 3, 4
  for (int t = 0; t < T; t++) {
    const double p = 2 + t;
    const float* v = x.data() + size_t(t) * HS;
    CHECK(std::fabs(v[0] - std::cos(p)) < 1e-6);
    CHECK(std::fabs(v[2] - std::sin(p)) < 1e-6);
    CHECK(std::fabs(v[1] - -std::sin(p / 10)) < 1e-6);
    CHECK(std::fabs(v[3] - std::cos(p / 10)) < 1e-6);
  }
  // position 0 is the identity
  auto z = randn(8, 71, {1});
  auto z0 = z;
  ops::rope_forward(z.data(), 1, 1, 2, 4, 10000.0f, 0);
  CHECK(bitwise_equal(z, z0));
}

TEST_CASE("rope backward is the gradient of forward", "[ops][rope]") {
  // RoPE is linear: no truncation error, so eps = 0.1. Noise: 2 outputs change per
  // perturbation (|out| < 4, |w| < 4), each rounded by at most 2.4e-7 * 4, over 0.2:
  // < 1e-5. rtol 1e-4, atol 1e-4. The analytic gradient is rope_backward(w).
  const int B = 1, T = 4, NHx = 2, HS = 6;
  auto x = randn(size_t(B) * T * NHx * HS, 72, {1}), w = randn(x.size(), 72, {2});
  std::vector<float> y(x.size());
  auto loss = [&] {
    y = x;
    ops::rope_forward_ref(y.data(), B, T, NHx, HS, 10000.0f, 3);
    return weighted_sum(y, w);
  };
  auto grad = w;
  ops::rope_backward_ref(grad.data(), B, T, NHx, HS, 10000.0f, 3);
  check_gradient("dx", x, grad, loss, 0.1, 1e-4, 1e-4);
}

TEST_CASE("rope is bitwise independent of the thread count", "[ops][rope][determinism]") {
  const int B = 2, T = 100, NHx = 3, HS = 64;
  auto x = randn(size_t(B) * T * NHx * HS, 73, {1});
  auto run = [&](int threads) {
    auto y = x, d = x;
    with_threads(threads, [&] {
      ops::rope_forward(y.data(), B, T, NHx, HS, 10000.0f, 7);
      ops::rope_backward(d.data(), B, T, NHx, HS, 10000.0f, 7);
    });
    y.insert(y.end(), d.begin(), d.end());
    return y;
  };
  const auto one = run(1);
  CHECK(bitwise_equal(one, run(2)));
  CHECK(bitwise_equal(one, run(3)));
}

TEST_CASE("rope rejects an odd head size", "[ops][rope]") {
  std::vector<float> x(3);
  CHECK_THROWS(ops::rope_forward(x.data(), 1, 1, 1, 3, 10000.0f));
}
