// SwiGLU on the GPU vs the CPU reference. expf (CUDA: at most 2 ulp) and fused
// multiply-adds aside, the same f32 formula: 2e-6 * max(1, max |ref|) for gate and up
// ~ N(0, 3), products of size up to ~100.

#include "cuda_test_util.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("cuda swiglu matches the reference", "[cuda][swiglu]") {
  for (auto [N, H] : {std::pair{1, 1}, std::pair{37, 129}, std::pair{256, 1024}}) {
    INFO("N=" << N << " H=" << H);
    auto inp = randn(size_t(N) * 2 * H, 70, {1}, 3.0f), dout = randn(size_t(N) * H, 70, {2});
    auto dinp0 = randn(inp.size(), 70, {3});
    std::vector<float> out_ref(size_t(N) * H), dinp_ref = dinp0;
    ops::swiglu_forward_ref(out_ref.data(), inp.data(), N, H);
    ops::swiglu_backward_ref(dinp_ref.data(), inp.data(), dout.data(), N, H);
    DeviceArray<float> d_inp(inp), d_out(out_ref.size()), d_dout(dout), d_dinp(dinp0);
    d_out.poison();
    cuda::swiglu_forward(d_out.get(), d_inp.get(), N, H);
    cuda::swiglu_backward(d_dinp.get(), d_inp.get(), d_dout.get(), N, H);
    CHECK_CLOSE_ARRAYS(d_out.download().data(), out_ref.data(), out_ref.size(), scaled_tol(out_ref, 2e-6));
    CHECK_CLOSE_ARRAYS(d_dinp.download().data(), dinp_ref.data(), dinp_ref.size(), scaled_tol(dinp_ref, 2e-6));
  }
}
