// LayerNorm and RMSNorm on the GPU vs the CPU references (f64), forward and backward,
// and run-to-run determinism of the backward's sums over rows.
//
// Tolerances: per-row statistics are f32 warp sums of C terms of size ~1 against f64,
// relative error ~ sqrt(C) * 6e-8 < 1e-5 for C <= 4096; outputs inherit it: 1e-5 times
// max(1, max |ref|). Gradients sum C (dinp) or N (dweight, dbias) terms: 2e-5 scaled.

#include "cuda_test_util.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct Shape {
  int N, C;
};

// N > 256 rows and not a multiple of 256: several row chunks in the column sums
const Shape kShapes[] = {{1, 1}, {33, 70}, {64, 768}, {5, 4096}, {600, 96}};

struct NormData {
  std::vector<float> x, w, b, dout, dx0, dw0, db0;
  NormData(const Shape& s, uint64_t seed)
      : x(randn(size_t(s.N) * s.C, seed, {1}, 3.0f)),
        w(randn(size_t(s.C), seed, {2})),
        b(randn(size_t(s.C), seed, {3})),
        dout(randn(x.size(), seed, {4})),
        dx0(randn(x.size(), seed, {5})),
        dw0(randn(w.size(), seed, {6})),
        db0(randn(b.size(), seed, {7})) {
    for (size_t i = 0; i < x.size(); i++) x[i] += 0.5f;  // a row mean away from 0
  }
};

}  // namespace

TEST_CASE("cuda layernorm matches the reference", "[cuda][layernorm]") {
  const float eps = 1e-5f;
  for (const Shape& s : kShapes) {
    INFO("N=" << s.N << " C=" << s.C);
    NormData d(s, 50);
    std::vector<float> out_ref(d.x.size()), mean_ref(size_t(s.N)), rstd_ref(size_t(s.N));
    ops::layernorm_forward_ref(out_ref.data(), mean_ref.data(), rstd_ref.data(), d.x.data(), d.w.data(), d.b.data(),
                               s.N, s.C, eps);
    auto dx_ref = d.dx0, dw_ref = d.dw0, db_ref = d.db0;
    ops::layernorm_backward_ref(dx_ref.data(), dw_ref.data(), db_ref.data(), d.dout.data(), d.x.data(), d.w.data(),
                                mean_ref.data(), rstd_ref.data(), s.N, s.C);

    DeviceArray<float> x(d.x), w(d.w), b(d.b), dout(d.dout), out(d.x.size()), mean(size_t(s.N)), rstd(size_t(s.N));
    DeviceArray<float> dx(d.dx0), dw(d.dw0), db(d.db0);
    out.poison();
    mean.poison();
    rstd.poison();
    cuda::layernorm_forward(out.get(), mean.get(), rstd.get(), x.get(), w.get(), b.get(), s.N, s.C, eps);
    CHECK_CLOSE_ARRAYS(out.download().data(), out_ref.data(), out_ref.size(), scaled_tol(out_ref, 1e-5));
    CHECK_CLOSE_ARRAYS(mean.download().data(), mean_ref.data(), mean_ref.size(), scaled_tol(mean_ref, 1e-5));
    CHECK_CLOSE_ARRAYS(rstd.download().data(), rstd_ref.data(), rstd_ref.size(), scaled_tol(rstd_ref, 1e-5));
    // backward from the reference's statistics, so that only the backward is under test
    mean.upload(mean_ref);
    rstd.upload(rstd_ref);
    cuda::layernorm_backward(dx.get(), dw.get(), db.get(), dout.get(), x.get(), w.get(), mean.get(), rstd.get(), s.N,
                             s.C);
    CHECK_CLOSE_ARRAYS(dx.download().data(), dx_ref.data(), dx_ref.size(), scaled_tol(dx_ref, 2e-5));
    CHECK_CLOSE_ARRAYS(dw.download().data(), dw_ref.data(), dw_ref.size(), scaled_tol(dw_ref, 2e-5));
    CHECK_CLOSE_ARRAYS(db.download().data(), db_ref.data(), db_ref.size(), scaled_tol(db_ref, 2e-5));
  }
}

TEST_CASE("cuda rmsnorm matches the reference", "[cuda][rmsnorm]") {
  const float eps = 1e-6f;
  for (const Shape& s : kShapes) {
    INFO("N=" << s.N << " C=" << s.C);
    NormData d(s, 51);
    std::vector<float> out_ref(d.x.size()), rstd_ref(size_t(s.N));
    ops::rmsnorm_forward_ref(out_ref.data(), rstd_ref.data(), d.x.data(), d.w.data(), s.N, s.C, eps);
    auto dx_ref = d.dx0, dw_ref = d.dw0;
    ops::rmsnorm_backward_ref(dx_ref.data(), dw_ref.data(), d.dout.data(), d.x.data(), d.w.data(), rstd_ref.data(), s.N,
                              s.C);

    DeviceArray<float> x(d.x), w(d.w), dout(d.dout), out(d.x.size()), rstd(size_t(s.N)), dx(d.dx0), dw(d.dw0);
    out.poison();
    rstd.poison();
    cuda::rmsnorm_forward(out.get(), rstd.get(), x.get(), w.get(), s.N, s.C, eps);
    CHECK_CLOSE_ARRAYS(out.download().data(), out_ref.data(), out_ref.size(), scaled_tol(out_ref, 1e-5));
    CHECK_CLOSE_ARRAYS(rstd.download().data(), rstd_ref.data(), rstd_ref.size(), scaled_tol(rstd_ref, 1e-5));
    rstd.upload(rstd_ref);
    cuda::rmsnorm_backward(dx.get(), dw.get(), dout.get(), x.get(), w.get(), rstd.get(), s.N, s.C);
    CHECK_CLOSE_ARRAYS(dx.download().data(), dx_ref.data(), dx_ref.size(), scaled_tol(dx_ref, 2e-5));
    CHECK_CLOSE_ARRAYS(dw.download().data(), dw_ref.data(), dw_ref.size(), scaled_tol(dw_ref, 2e-5));
  }
}

TEST_CASE("cuda layernorm and rmsnorm are deterministic", "[cuda][layernorm][rmsnorm][determinism]") {
  const Shape s{1000, 768};
  NormData d(s, 52);
  DeviceArray<float> x(d.x), w(d.w), b(d.b), dout(d.dout), out(d.x.size()), mean(size_t(s.N)), rstd(size_t(s.N));
  std::vector<float> first[5];
  for (int run = 0; run < 2; run++) {
    DeviceArray<float> dx(d.dx0), dw(d.dw0), db(d.db0), rdx(d.dx0), rdw(d.dw0);
    cuda::layernorm_forward(out.get(), mean.get(), rstd.get(), x.get(), w.get(), b.get(), s.N, s.C, 1e-5f);
    cuda::layernorm_backward(dx.get(), dw.get(), db.get(), dout.get(), x.get(), w.get(), mean.get(), rstd.get(), s.N,
                             s.C);
    cuda::rmsnorm_forward(out.get(), rstd.get(), x.get(), w.get(), s.N, s.C, 1e-6f);
    cuda::rmsnorm_backward(rdx.get(), rdw.get(), dout.get(), x.get(), w.get(), rstd.get(), s.N, s.C);
    std::vector<float> now[5] = {dx.download(), dw.download(), db.download(), rdx.download(), rdw.download()};
    for (int i = 0; i < 5; i++) {
      if (run == 0)
        first[i] = now[i];
      else
        CHECK(bitwise_equal(now[i], first[i]));
    }
  }
}
