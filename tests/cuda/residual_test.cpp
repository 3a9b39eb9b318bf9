// Residual on the GPU vs the CPU kernel: one correctly rounded add per element, so the
// results must be the same bits.

#include "cuda_test_util.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("cuda residual matches the CPU bit for bit", "[cuda][residual]") {
  for (int64_t n : {int64_t(1), int64_t(4097), int64_t(3000001)}) {
    INFO("n=" << n);
    auto a = randn(size_t(n), 80, {1}), b = randn(size_t(n), 80, {2}), dout = randn(size_t(n), 80, {3});
    auto da0 = randn(size_t(n), 80, {4}), db0 = randn(size_t(n), 80, {5});
    std::vector<float> out_ref(static_cast<size_t>(n)), da_ref = da0, db_ref = db0;
    ops::residual_forward(out_ref.data(), a.data(), b.data(), n);
    ops::residual_backward(da_ref.data(), db_ref.data(), dout.data(), n);
    DeviceArray<float> d_a(a), d_b(b), d_out(static_cast<size_t>(n)), d_dout(dout), d_da(da0), d_db(db0);
    d_out.poison();
    cuda::residual_forward(d_out.get(), d_a.get(), d_b.get(), n);
    cuda::residual_backward(d_da.get(), d_db.get(), d_dout.get(), n);
    CHECK(bitwise_equal(d_out.download(), out_ref));
    CHECK(bitwise_equal(d_da.download(), da_ref));
    CHECK(bitwise_equal(d_db.download(), db_ref));
  }
}
