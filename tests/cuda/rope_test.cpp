// RoPE on the GPU vs the CPU reference. The inverse frequencies are computed on the host
// exactly as the CPU does and the angles are the same f32 products, so the only
// differences are sincosf (CUDA: at most 2 ulp, also for large angles) and fused
// multiply-adds: 4e-6 * max(1, max |x|). Positions up to 5000 + T exercise large angles.

#include "cuda_test_util.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct Shape {
  int B, T, NHx, HS, pos0;
};

}  // namespace

TEST_CASE("cuda rope matches the reference", "[cuda][rope]") {
  const Shape shapes[] = {{1, 1, 1, 2, 0}, {2, 33, 3, 64, 0}, {1, 70, 2, 128, 5000}, {3, 17, 5, 6, 11}};
  for (const Shape& s : shapes) {
    INFO("B=" << s.B << " T=" << s.T << " NHx=" << s.NHx << " HS=" << s.HS << " pos0=" << s.pos0);
    const float theta = 10000.0f;
    auto x = randn(size_t(s.B) * s.T * s.NHx * s.HS, 90, {1});
    auto fwd_ref = x, bwd_ref = x;
    ops::rope_forward_ref(fwd_ref.data(), s.B, s.T, s.NHx, s.HS, theta, s.pos0);
    ops::rope_backward_ref(bwd_ref.data(), s.B, s.T, s.NHx, s.HS, theta, s.pos0);
    DeviceArray<float> fwd(x), bwd(x);
    cuda::rope_forward(fwd.get(), s.B, s.T, s.NHx, s.HS, theta, s.pos0);
    cuda::rope_backward(bwd.get(), s.B, s.T, s.NHx, s.HS, theta, s.pos0);
    const double tol = 4e-6 * std::max(1.0, max_abs(x.data(), x.size()));
    CHECK_CLOSE_ARRAYS(fwd.download().data(), fwd_ref.data(), fwd_ref.size(), tol);
    CHECK_CLOSE_ARRAYS(bwd.download().data(), bwd_ref.data(), bwd_ref.size(), tol);
    // backward undoes forward (a rotation and its inverse)
    cuda::rope_backward(fwd.get(), s.B, s.T, s.NHx, s.HS, theta, s.pos0);
    CHECK_CLOSE_ARRAYS(fwd.download().data(), x.data(), x.size(), 2 * tol);
  }
}

TEST_CASE("cuda rope rejects an odd head size", "[cuda][rope]") {
  DeviceArray<float> x(6);
  CHECK_THROWS_WITH(cuda::rope_forward(x.get(), 1, 1, 2, 3, 10000.0f), Catch::Contains("even head size"));
}
