// Fused softmax + cross-entropy on the GPU vs the CPU reference (f64): losses, dlogits,
// the returned sum, ignored rows, the async form, a bad target, determinism.
//
// Tolerances: a row's sum of V = 50257 exponentials is in f64 over expf values (2 ulp),
// so its log is off by ~1e-7: losses (size ~11) within 1e-5, the sum of N within N * 1e-5.
// dlogits = p * scale - onehot * scale: relative error of p ~ 3e-7, 1e-6 * max |ref|.

#include "cuda_test_util.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("cuda softmax cross-entropy matches the reference", "[cuda][softmax_xent]") {
  for (auto [N, V] : {std::pair{1, 1}, std::pair{3, 1000}, std::pair{16, 50257}}) {
    INFO("N=" << N << " V=" << V);
    auto logits = randn(size_t(N) * V, 110, {1}, 2.0f);
    auto targets = rand_tokens(size_t(N), V, 110, {2});
    if (N > 2) targets[1] = -1;  // ignored row
    const float scale = 1.0f / float(N);
    std::vector<float> losses_ref(static_cast<size_t>(N)), dlogits_ref(logits.size());
    const double sum_ref = ops::softmax_xent_forward_backward_ref(losses_ref.data(), dlogits_ref.data(), logits.data(),
                                                                  targets.data(), N, V, scale);
    DeviceArray<float> d_logits(logits), d_losses(static_cast<size_t>(N)), d_dlogits(logits.size());
    DeviceArray<int32_t> d_targets(targets);
    d_losses.poison();
    d_dlogits.poison();
    const double sum = cuda::softmax_xent_forward_backward(d_losses.get(), d_dlogits.get(), d_logits.get(),
                                                           d_targets.get(), N, V, scale);
    CHECK(std::fabs(sum - sum_ref) <= 1e-5 * N);
    CHECK_CLOSE_ARRAYS(d_losses.download().data(), losses_ref.data(), losses_ref.size(), 1e-5);
    CHECK_CLOSE_ARRAYS(d_dlogits.download().data(), dlogits_ref.data(), dlogits_ref.size(),
                       1e-6 * max_abs(dlogits_ref.data(), dlogits_ref.size()));

    // without dlogits: the same losses, the same sum, bit for bit
    const auto losses = d_losses.download();
    d_losses.poison();
    const double sum2 =
        cuda::softmax_xent_forward_backward(d_losses.get(), nullptr, d_logits.get(), d_targets.get(), N, V, scale);
    CHECK(sum2 == sum);
    CHECK(bitwise_equal(d_losses.download(), losses));

    // async: the sum lands in device memory, the same bits
    DeviceArray<double> d_sum(1);
    cuda::softmax_xent_forward_backward_async(d_sum.get(), d_losses.get(), d_dlogits.get(), d_logits.get(),
                                              d_targets.get(), N, V, scale);
    CHECK(d_sum.download()[0] == sum);
  }
}

TEST_CASE("cuda softmax cross-entropy: a target outside the vocabulary throws", "[cuda][softmax_xent]") {
  const int N = 4, V = 10;
  DeviceArray<float> logits(randn(size_t(N) * V, 111, {1})), losses(static_cast<size_t>(N)), dlogits(size_t(N) * V);
  DeviceArray<int32_t> targets(std::vector<int32_t>{1, 2, 10, 3});
  CHECK_THROWS_WITH(
      cuda::softmax_xent_forward_backward(losses.get(), dlogits.get(), logits.get(), targets.get(), N, V, 1.0f),
      Catch::Contains("row 2") && Catch::Contains("vocabulary of 10"));
  // the async form poisons the sum instead
  DeviceArray<double> sum(1);
  cuda::softmax_xent_forward_backward_async(sum.get(), losses.get(), dlogits.get(), logits.get(), targets.get(), N, V,
                                            1.0f);
  CHECK(std::isnan(sum.download()[0]));
}

TEST_CASE("cuda softmax cross-entropy is deterministic", "[cuda][softmax_xent][determinism]") {
  const int N = 64, V = 32000;
  DeviceArray<float> logits(randn(size_t(N) * V, 112, {1}, 3.0f)), losses(static_cast<size_t>(N)),
      dlogits(size_t(N) * V);
  DeviceArray<int32_t> targets(rand_tokens(size_t(N), V, 112, {2}));
  const double a =
      cuda::softmax_xent_forward_backward(losses.get(), dlogits.get(), logits.get(), targets.get(), N, V, 1.0f / N);
  const auto la = losses.download(), da = dlogits.download();
  const double b =
      cuda::softmax_xent_forward_backward(losses.get(), dlogits.get(), logits.get(), targets.get(), N, V, 1.0f / N);
  CHECK(a == b);
  CHECK(bitwise_equal(losses.download(), la));
  CHECK(bitwise_equal(dlogits.download(), da));
}
