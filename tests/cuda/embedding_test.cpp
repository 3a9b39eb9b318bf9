// Embedding on the GPU vs the CPU reference. Forward is one add per element and backward
// adds each dwte/dwpe element's contributions in row order, exactly as the reference
// does, so both must match it bit for bit (which also proves run-to-run determinism).

#include "cuda_test_util.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct Shape {
  int B, T, C, V, pos0;
  bool with_wpe;
};

}  // namespace

TEST_CASE("cuda embedding matches the reference bit for bit", "[cuda][embedding]") {
  // few tokens (V = 5, 13): long runs of repeats in backward; C not a multiple of the
  // 128-channel blocks; a learned-position table with an offset; B*T above one block row
  const Shape shapes[] = {{1, 1, 1, 1, 0, true},
                          {2, 9, 70, 13, 3, true},
                          {3, 17, 130, 5, 0, false},
                          {4, 256, 96, 50, 0, true},
                          {2, 300, 33, 7, 11, true}};
  for (const Shape& s : shapes) {
    INFO("B=" << s.B << " T=" << s.T << " C=" << s.C << " V=" << s.V << " pos0=" << s.pos0 << " wpe=" << s.with_wpe);
    const size_t N = size_t(s.B) * s.T, maxT = size_t(s.T + s.pos0);
    auto tokens = rand_tokens(N, s.V, 30, {1});
    auto wte = randn(size_t(s.V) * s.C, 30, {2}), wpe = randn(maxT * s.C, 30, {3});
    auto dout = randn(N * s.C, 30, {4});
    // nonzero starting gradients: backward accumulates
    auto dwte0 = randn(wte.size(), 30, {5}), dwpe0 = randn(wpe.size(), 30, {6});

    std::vector<float> out_ref(N * s.C), dwte_ref = dwte0, dwpe_ref = dwpe0;
    const float* wpe_h = s.with_wpe ? wpe.data() : nullptr;
    ops::embedding_forward_ref(out_ref.data(), tokens.data(), wte.data(), wpe_h, s.B, s.T, s.C, s.pos0);
    ops::embedding_backward_ref(dwte_ref.data(), s.with_wpe ? dwpe_ref.data() : nullptr, dout.data(), tokens.data(),
                                s.B, s.T, s.C, s.pos0);

    DeviceArray<int32_t> d_tokens(tokens);
    DeviceArray<float> d_wte(wte), d_wpe(wpe), d_out(out_ref.size()), d_dout(dout), d_dwte(dwte0), d_dwpe(dwpe0);
    d_out.poison();
    cuda::embedding_forward(d_out.get(), d_tokens.get(), d_wte.get(), s.with_wpe ? d_wpe.get() : nullptr, s.B, s.T, s.C,
                            s.pos0);
    cuda::embedding_backward(d_dwte.get(), s.with_wpe ? d_dwpe.get() : nullptr, d_dout.get(), d_tokens.get(), s.B, s.T,
                             s.C, s.pos0);
    CHECK(bitwise_equal(d_out.download(), out_ref));
    CHECK(bitwise_equal(d_dwte.download(), dwte_ref));
    CHECK(bitwise_equal(d_dwpe.download(), dwpe_ref));  // untouched when there is no wpe
  }
}
