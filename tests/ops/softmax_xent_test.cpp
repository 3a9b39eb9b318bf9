// Fused softmax + cross-entropy: fast vs reference, gradient check, ignored targets,
// thread determinism.

#include <cmath>

#include "ops_test_util.h"

using namespace troupe;
using namespace troupe::test;

namespace {

std::vector<int32_t> random_targets(int N, int V, uint64_t seed) {
  RngStream s(seed, {9});
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (int n = 0; n < N; n++) t[size_t(n)] = int32_t(s.bits(uint64_t(n)) % uint32_t(V));
  return t;
}

}  // namespace

TEST_CASE("softmax_xent fast matches reference", "[ops][softmax_xent]") {
  // Our exp is within 2e-7 relative of the true one and sums run in f64, so per-row
  // losses agree to ~1e-6 absolute (losses are O(10)) and probabilities to ~1e-7
  // absolute. Tolerances: losses 1e-5, dlogits 1e-6 * |dloss_scale|, total 1e-6 relative.
  struct Shape {
    int N, V;
  };
  for (const Shape& s : {Shape{1, 1}, Shape{4, 7}, Shape{16, 1000}, Shape{3, 50257}}) {
    const int N = s.N, V = s.V;
    INFO("N=" << N << " V=" << V);
    auto logits = randn(size_t(N) * V, 80, {1}, 3.0f);
    auto targets = random_targets(N, V, 80);
    if (N > 1) targets[1] = -1;  // ignored row
    const float scale = 1.0f / float(N);
    std::vector<float> losses(static_cast<size_t>(N)), losses_r(static_cast<size_t>(N)), d(logits.size(), NAN),
        d_r(logits.size());
    const double sum =
        ops::softmax_xent_forward_backward(losses.data(), d.data(), logits.data(), targets.data(), N, V, scale);
    const double sum_r =
        ops::softmax_xent_forward_backward_ref(losses_r.data(), d_r.data(), logits.data(), targets.data(), N, V, scale);
    CHECK(std::fabs(sum - sum_r) <= 1e-6 * std::fabs(sum_r) + 1e-6);
    CHECK_CLOSE_ARRAYS(losses.data(), losses_r.data(), losses.size(), 1e-5);
    CHECK_CLOSE_ARRAYS(d.data(), d_r.data(), d.size(), 1e-6 * scale);
    // without dlogits: the same losses
    std::vector<float> losses2(static_cast<size_t>(N));
    const double sum2 =
        ops::softmax_xent_forward_backward(losses2.data(), nullptr, logits.data(), targets.data(), N, V, scale);
    CHECK(sum2 == sum);
    CHECK(bitwise_equal(losses2, losses));
  }
}

TEST_CASE("softmax_xent gradient matches finite differences", "[ops][softmax_xent]") {
  // The reference returns the loss in f64 computed from the f32 logits: no f32 rounding
  // noise, and with eps = 1e-3 the truncation eps^2/6 * |f'''| is < 1e-7. rtol 1e-4,
  // atol 1e-6: the check is essentially exact.
  const int N = 3, V = 6;
  const float scale = 0.5f;
  auto logits = randn(size_t(N) * V, 81, {1}, 2.0f);
  std::vector<int32_t> targets = {2, -1, 5};
  std::vector<float> losses(static_cast<size_t>(N)), d(logits.size());
  ops::softmax_xent_forward_backward_ref(losses.data(), d.data(), logits.data(), targets.data(), N, V, scale);
  auto loss = [&] {
    return scale *
           ops::softmax_xent_forward_backward_ref(losses.data(), nullptr, logits.data(), targets.data(), N, V, scale);
  };
  check_gradient("dlogits", logits, d, loss, 1e-3, 1e-4, 1e-6);
  // the fast gradient against the same differences
  std::vector<float> d_fast(logits.size());
  ops::softmax_xent_forward_backward(losses.data(), d_fast.data(), logits.data(), targets.data(), N, V, scale);
  check_gradient("dlogits (fast)", logits, d_fast, loss, 1e-3, 1e-4, 1e-6);
}

TEST_CASE("softmax_xent ignores negative targets and overwrites dlogits", "[ops][softmax_xent]") {
  const int N = 3, V = 10;
  auto logits = randn(size_t(N) * V, 82, {1});
  std::vector<int32_t> targets = {-1, 4, -100};
  std::vector<float> losses(size_t(N), NAN), d(logits.size(), NAN);  // garbage must not survive
  const double sum =
      ops::softmax_xent_forward_backward(losses.data(), d.data(), logits.data(), targets.data(), N, V, 1.0f);
  CHECK(losses[0] == 0.0f);
  CHECK(losses[2] == 0.0f);
  CHECK(std::fabs(sum - losses[1]) <= 1e-6 * sum);
  for (int i = 0; i < V; i++) {
    CHECK(d[size_t(i)] == 0.0f);
    CHECK(d[size_t(2 * V + i)] == 0.0f);
  }
  // the kept row: softmax - onehot sums to 0, the target's entry is negative
  double row = 0;
  for (int i = 0; i < V; i++) row += d[size_t(V + i)];
  CHECK(std::fabs(row) < 1e-6);
  CHECK(d[size_t(V + 4)] < 0.0f);
  // all rows ignored: zero loss
  std::vector<int32_t> none = {-1, -1, -1};
  CHECK(ops::softmax_xent_forward_backward(losses.data(), d.data(), logits.data(), none.data(), N, V, 1.0f) == 0.0);
}

TEST_CASE("softmax_xent is stable for huge logits, propagates NaN, rejects bad targets", "[ops][softmax_xent]") {
  const int V = 5;
  std::vector<float> logits = {1e4f, 1e4f - 1.0f, -1e4f, 0.0f, 1e4f};
  std::vector<int32_t> target = {1};
  float loss;
  std::vector<float> d(static_cast<size_t>(V));
  ops::softmax_xent_forward_backward(&loss, d.data(), logits.data(), target.data(), 1, V, 1.0f);
  // softmax over {0, -1, -inf, -inf, 0} (relative to the max): loss = log(2 + e^-1) + 1
  CHECK(std::fabs(loss - (std::log(2.0 + std::exp(-1.0)) + 1.0)) < 1e-6);
  for (float x : d) CHECK(std::isfinite(x));
  // a NaN logit makes that row's loss and gradient NaN, not silently finite
  logits[3] = NAN;
  ops::softmax_xent_forward_backward(&loss, d.data(), logits.data(), target.data(), 1, V, 1.0f);
  CHECK(std::isnan(loss));
  CHECK(std::isnan(d[0]));
  std::vector<int32_t> bad = {V};
  CHECK_THROWS(ops::softmax_xent_forward_backward(&loss, d.data(), logits.data(), bad.data(), 1, V, 1.0f));
}

TEST_CASE("softmax_xent is bitwise independent of the thread count", "[ops][softmax_xent][determinism]") {
  const int N = 37, V = 5003;
  auto logits = randn(size_t(N) * V, 83, {1}, 3.0f);
  auto targets = random_targets(N, V, 83);
  targets[5] = -1;
  auto run = [&](int threads) {
    std::vector<float> losses(static_cast<size_t>(N)), d(logits.size());
    double sum = 0;
    with_threads(threads, [&] {
      sum = ops::softmax_xent_forward_backward(losses.data(), d.data(), logits.data(), targets.data(), N, V, 0.01f);
    });
    d.insert(d.end(), losses.begin(), losses.end());
    float sum_bits[2];
    std::memcpy(sum_bits, &sum, sizeof(sum));
    d.insert(d.end(), sum_bits, sum_bits + 2);
    return d;
  };
  const auto one = run(1);
  CHECK(bitwise_equal(one, run(2)));
  CHECK(bitwise_equal(one, run(3)));
}
