// GELU (tanh form) on the GPU vs the CPU reference. Both evaluate the same f32 formula;
// they differ only in tanhf (CUDA: at most 2 ulp) and in nvcc's fused multiply-adds, so
// forward and backward agree to a few ulp of x: 1e-6 * max(1, |x|) over x in about
// [-12, 12] (normal, stddev 4, which reaches both tails of tanh).

#include "cuda_test_util.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("cuda gelu matches the reference", "[cuda][gelu]") {
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(100003)}) {
    INFO("n=" << n);
    auto x = randn(size_t(n), 60, {1}, 4.0f), dout = randn(size_t(n), 60, {2}), dx0 = randn(size_t(n), 60, {3});
    std::vector<float> out_ref(static_cast<size_t>(n)), dx_ref = dx0;
    ops::gelu_forward_ref(out_ref.data(), x.data(), n);
    ops::gelu_backward_ref(dx_ref.data(), x.data(), dout.data(), n);
    DeviceArray<float> d_x(x), d_out(static_cast<size_t>(n)), d_dout(dout), d_dx(dx0);
    d_out.poison();
    cuda::gelu_forward(d_out.get(), d_x.get(), n);
    cuda::gelu_backward(d_dx.get(), d_x.get(), d_dout.get(), n);
    const double tol = 1e-6 * std::max(1.0, max_abs(x.data(), x.size()));
    CHECK_CLOSE_ARRAYS(d_out.download().data(), out_ref.data(), out_ref.size(), tol);
    CHECK_CLOSE_ARRAYS(d_dx.download().data(), dx_ref.data(), dx_ref.size(), tol);
  }
}
