// AdamW on the GPU vs the CPU reference: every operation is an explicitly rounded
// intrinsic in torch's order, so parameters and moments must be the same bits after
// several steps, for both branches of torch's lerp. sum_squares (f64, fixed order) and
// scale_inplace against the CPU kernels.

#include "cuda_test_util.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("cuda adamw matches the reference bit for bit", "[cuda][adamw]") {
  const int64_t n = 100003;
  ops::AdamWConfig configs[3];
  configs[1].weight_decay = 0.0f;  // biases and norm gains
  configs[2].beta1 = 0.4f;         // lerp weight 0.6: torch's other lerp branch
  configs[2].lr = 1e-2f;
  for (const ops::AdamWConfig& cfg : configs) {
    INFO("lr=" << cfg.lr << " beta1=" << cfg.beta1 << " wd=" << cfg.weight_decay);
    auto p = randn(size_t(n), 120, {1}), m = randn(size_t(n), 120, {2}, 0.1f), v = randu(size_t(n), 120, {3}, 0, 0.01f);
    DeviceArray<float> d_p(p), d_m(m), d_v(v), d_g(static_cast<size_t>(n));
    for (int t = 1; t <= 3; t++) {
      auto g = randn(size_t(n), 120, {4, uint64_t(t)});
      ops::adamw_update_ref(p.data(), g.data(), m.data(), v.data(), n, cfg, t);
      d_g.upload(g);
      cuda::adamw_update(d_p.get(), d_g.get(), d_m.get(), d_v.get(), n, cfg, t);
    }
    CHECK(bitwise_equal(d_p.download(), p));
    CHECK(bitwise_equal(d_m.download(), m));
    CHECK(bitwise_equal(d_v.download(), v));
  }
}

TEST_CASE("cuda sum_squares and scale_inplace match the CPU", "[cuda][adamw]") {
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(4096), int64_t(3 * 4096 + 17), int64_t(5000000)}) {
    INFO("n=" << n);
    auto x = randn(size_t(n), 121, {1});
    DeviceArray<float> d_x(x);
    // both sum f32 squares exactly in f64, in fixed but different orders: ~1e-16 relative
    const double ref = ops::sum_squares(x.data(), n);
    const double got = cuda::sum_squares(d_x.get(), n);
    CHECK(std::fabs(got - ref) <= 1e-12 * ref);
    CHECK(cuda::sum_squares(d_x.get(), n) == got);  // the same bits every run
    DeviceArray<double> d_sum(1);
    cuda::sum_squares_async(d_sum.get(), d_x.get(), n);
    CHECK(d_sum.download()[0] == got);

    ops::scale_inplace(x.data(), n, 0.37f);
    cuda::scale_inplace(d_x.get(), n, 0.37f);
    CHECK(bitwise_equal(d_x.download(), x));
  }
}
