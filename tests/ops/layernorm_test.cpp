// LayerNorm: fast vs reference, gradient check, thread determinism.

#include "ops_test_util.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct Shape {
  int N, C;
};

struct LayerNormData {
  std::vector<float> inp, w, b, dout;
  LayerNormData(int N, int C, uint64_t seed) {
    inp = randn(size_t(N) * C, seed, {1}, 2.0f);
    for (auto& x : inp) x += 3.0f;  // a mean far from 0 tests the two-pass variance
    w = randn(size_t(C), seed, {2});
    b = randn(size_t(C), seed, {3});
    dout = randn(size_t(N) * C, seed, {4});
  }
};

}  // namespace

TEST_CASE("layernorm fast matches reference", "[ops][layernorm]") {
  // The fast kernel sums rows in f32 (16 lanes), the reference in f64; with |out| <~ 10
  // the outputs agree to ~1e-6 absolute. Tolerances: out and dinp 2e-5 absolute, mean
  // 1e-6, rstd 1e-5 relative. dweight/dbias use the same formula and row order in both
  // (given the same mean/rstd), so they must be bitwise equal.
  for (const Shape& s : {Shape{1, 1}, Shape{5, 13}, Shape{33, 64}, Shape{7, 768}, Shape{64, 200}}) {
    const int N = s.N, C = s.C;
    INFO("N=" << N << " C=" << C);
    LayerNormData d(N, C, 20);
    const size_t NC = size_t(N) * C;
    std::vector<float> out(NC), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N)), out_r(NC),
        mean_r(static_cast<size_t>(N)), rstd_r(static_cast<size_t>(N));
    ops::layernorm_forward(out.data(), mean.data(), rstd.data(), d.inp.data(), d.w.data(), d.b.data(), N, C, 1e-5f);
    ops::layernorm_forward_ref(out_r.data(), mean_r.data(), rstd_r.data(), d.inp.data(), d.w.data(), d.b.data(), N, C,
                               1e-5f);
    CHECK_CLOSE_ARRAYS(out.data(), out_r.data(), NC, 2e-5);
    CHECK_CLOSE_ARRAYS(mean.data(), mean_r.data(), size_t(N), 1e-6);
    for (int n = 0; n < N; n++) CHECK(std::fabs(rstd[n] - rstd_r[n]) <= 1e-5 * rstd_r[n]);

    auto dinp = randn(NC, 20, {5}), dw = randn(size_t(C), 20, {6}), db = randn(size_t(C), 20, {7});
    auto dinp_r = dinp, dw_r = dw, db_r = db;
    ops::layernorm_backward(dinp.data(), dw.data(), db.data(), d.dout.data(), d.inp.data(), d.w.data(), mean_r.data(),
                            rstd_r.data(), N, C);
    ops::layernorm_backward_ref(dinp_r.data(), dw_r.data(), db_r.data(), d.dout.data(), d.inp.data(), d.w.data(),
                                mean_r.data(), rstd_r.data(), N, C);
    CHECK_CLOSE_ARRAYS(dinp.data(), dinp_r.data(), NC, 2e-5);
    CHECK(bitwise_equal(dw, dw_r));
    CHECK(bitwise_equal(db, db_r));
  }
}

TEST_CASE("layernorm gradient matches finite differences", "[ops][layernorm]") {
  // eps = 1e-2. Noise: perturbing one input changes its row of C = 7 f32 outputs
  // (|out| < 8, |w| < 4), each rounded by at most 5e-7 * 4, over 2 eps: < 1e-3 in the
  // worst case, ~2e-4 typically (random signs). Truncation eps^2/6 * |f'''| ~ 1e-5.
  // rtol 1e-3, atol 5e-4; a wrong term would be off by O(0.1..1).
  const int N = 3, C = 7;
  LayerNormData d(N, C, 21);
  std::vector<float> out(size_t(N) * C), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
  auto loss = [&] {
    ops::layernorm_forward_ref(out.data(), mean.data(), rstd.data(), d.inp.data(), d.w.data(), d.b.data(), N, C, 1e-5f);
    return weighted_sum(out, d.dout);
  };
  loss();
  std::vector<float> dinp(d.inp.size(), 0.0f), dw(size_t(C), 0.0f), db(size_t(C), 0.0f);
  ops::layernorm_backward_ref(dinp.data(), dw.data(), db.data(), d.dout.data(), d.inp.data(), d.w.data(), mean.data(),
                              rstd.data(), N, C);
  check_gradient("dinp", d.inp, dinp, loss, 1e-2, 1e-3, 5e-4);
  check_gradient("dweight", d.w, dw, loss, 1e-2, 1e-3, 5e-4);
  check_gradient("dbias", d.b, db, loss, 1e-2, 1e-3, 5e-4);
}

TEST_CASE("layernorm is bitwise independent of the thread count", "[ops][layernorm][determinism]") {
  const int N = 300, C = 200;
  LayerNormData d(N, C, 22);
  auto run = [&](int threads) {
    std::vector<float> out(size_t(N) * C), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N)),
        dinp(out.size(), 0.0f), dw(size_t(C), 0.0f), db(size_t(C), 0.0f);
    with_threads(threads, [&] {
      ops::layernorm_forward(out.data(), mean.data(), rstd.data(), d.inp.data(), d.w.data(), d.b.data(), N, C, 1e-5f);
      ops::layernorm_backward(dinp.data(), dw.data(), db.data(), d.dout.data(), d.inp.data(), d.w.data(), mean.data(),
                              rstd.data(), N, C);
    });
    for (auto* v : {&mean, &rstd, &dinp, &dw, &db}) out.insert(out.end(), v->begin(), v->end());
    return out;
  };
  const auto one = run(1);
  CHECK(bitwise_equal(one, run(2)));
  CHECK(bitwise_equal(one, run(3)));
}

TEST_CASE("layernorm of a constant row is the bias", "[ops][layernorm]") {
  // variance 0: rstd = 1/sqrt(eps), x - mean = 0 exactly, so out = bias exactly
  const int C = 10;
  std::vector<float> inp(C, 2.5f), w = randn(C, 23, {1}), b = randn(C, 23, {2}), out(C), mean(1), rstd(1);
  ops::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(), 1, C, 1e-5f);
  CHECK(mean[0] == 2.5f);
  CHECK(bitwise_equal(out, b));
}
