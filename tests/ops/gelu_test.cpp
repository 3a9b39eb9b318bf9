// GELU (tanh form): fast vs reference, gradient check, thread determinism.

#include "ops_test_util.h"

using namespace troupe;
using namespace troupe::test;

namespace {

// Random inputs over the interesting range plus special points: 0, tiny, the minimum of
// GELU (x ~ -0.75, zero derivative) and large magnitudes where exp under- or overflows.
std::vector<float> gelu_inputs(size_t n, uint64_t seed) {
  auto x = randu(n, seed, {1}, -8.0f, 8.0f);
  const float special[] = {0.0f,  -0.0f,  1e-8f,  -1e-8f,  -0.7518f, 1.0f, -1.0f,
                           15.0f, -15.0f, 100.0f, -100.0f, 1e4f,     -1e4f};
  for (size_t i = 0; i < std::size(special) && i < n; i++) x[i] = special[i];
  return x;
}

}  // namespace

TEST_CASE("gelu fast matches reference", "[ops][gelu]") {
  // The fast kernel evaluates 0.5 (1 + tanh u) as sigmoid(2u) with our exp (<2e-7
  // relative); the reference uses tanhf. Both are within a few f32 ulps of the true
  // value, so |out| <= 1e4 gives tolerance 2e-7 relative + 1e-6 absolute (near 0 the
  // reference's 1 + tanh(u) cancels; gradients are O(1) times dout).
  for (size_t n : {size_t(1), size_t(13), size_t(1000), size_t(4099)}) {
    auto x = gelu_inputs(n, 40), dout = randn(n, 40, {2});
    std::vector<float> out(n), out_r(n);
    ops::gelu_forward(out.data(), x.data(), int64_t(n));
    ops::gelu_forward_ref(out_r.data(), x.data(), int64_t(n));
    for (size_t i = 0; i < n; i++) {
      INFO("x = " << x[i]);
      CHECK(std::fabs(out[i] - out_r[i]) <= 2e-7 * std::fabs(out_r[i]) + 1e-6);
    }
    auto dinp = randn(n, 40, {3});
    auto dinp_r = dinp;
    ops::gelu_backward(dinp.data(), x.data(), dout.data(), int64_t(n));
    ops::gelu_backward_ref(dinp_r.data(), x.data(), dout.data(), int64_t(n));
    CHECK_CLOSE_ARRAYS(dinp.data(), dinp_r.data(), n, 4e-6);
  }
}

TEST_CASE("gelu gradient matches finite differences", "[ops][gelu]") {
  // Elementwise: perturbing x[i] changes only out[i] (|out| < 5, |w| < 4), rounded by at
  // most 3e-7 * 4, over 2 eps = 2e-2: < 6e-5. Truncation eps^2/6 * |gelu'''| * |w| < 1e-4.
  // rtol 1e-3, atol 2e-4 (the derivative crosses 0 near x = -0.75, hence an atol).
  const size_t n = 64;
  auto x = randu(n, 41, {1}, -5.0f, 5.0f), w = randn(n, 41, {2});
  std::vector<float> out(n), dinp(n, 0.0f);
  auto loss = [&] {
    ops::gelu_forward_ref(out.data(), x.data(), int64_t(n));
    return weighted_sum(out, w);
  };
  ops::gelu_backward_ref(dinp.data(), x.data(), w.data(), int64_t(n));
  check_gradient("dinp", x, dinp, loss, 1e-2, 1e-3, 2e-4);
  // and the fast backward against the same differences
  std::vector<float> dinp_fast(n, 0.0f);
  ops::gelu_backward(dinp_fast.data(), x.data(), w.data(), int64_t(n));
  check_gradient("dinp (fast)", x, dinp_fast, loss, 1e-2, 1e-3, 2e-4);
}

TEST_CASE("gelu is bitwise independent of the thread count", "[ops][gelu][determinism]") {
  const size_t n = 100003;
  auto x = gelu_inputs(n, 42), dout = randn(n, 42, {2});
  auto run = [&](int threads) {
    std::vector<float> out(n), dinp(n, 0.0f);
    with_threads(threads, [&] {
      ops::gelu_forward(out.data(), x.data(), int64_t(n));
      ops::gelu_backward(dinp.data(), x.data(), dout.data(), int64_t(n));
    });
    out.insert(out.end(), dinp.begin(), dinp.end());
    return out;
  };
  const auto one = run(1);
  CHECK(bitwise_equal(one, run(2)));
  CHECK(bitwise_equal(one, run(3)));
}

TEST_CASE("gelu limits", "[ops][gelu]") {
  const std::vector<float> x = {0.0f, 50.0f, -50.0f, 1e30f, -1e30f};
  std::vector<float> out(x.size()), dinp(x.size(), 0.0f), ones(x.size(), 1.0f);
  ops::gelu_forward(out.data(), x.data(), int64_t(x.size()));
  ops::gelu_backward(dinp.data(), x.data(), ones.data(), int64_t(x.size()));
  CHECK(out[0] == 0.0f);
  CHECK(out[1] == 50.0f);  // gelu(x) = x for large x
  CHECK(out[2] == 0.0f);   // and 0 for very negative x
  CHECK(out[3] == 1e30f);
  CHECK(out[4] == 0.0f);
  CHECK(dinp[0] == 0.5f);  // gelu'(0) = 1/2
  CHECK(dinp[1] == 1.0f);
  CHECK(dinp[2] == 0.0f);
}
