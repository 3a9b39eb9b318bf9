// RMSNorm: fast vs reference, gradient check, thread determinism.

#include "ops_test_util.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct Shape {
  int N, C;
};

}  // namespace

TEST_CASE("rmsnorm fast matches reference", "[ops][rmsnorm]") {
  // f32 (16-lane) row sums against f64: out and dinp agree to ~1e-6 for |out| <~ 10.
  // Tolerances 2e-5 absolute, rstd 1e-5 relative; dweight uses the same formula and row
  // order in both, so it must be bitwise equal.
  for (const Shape& s : {Shape{1, 1}, Shape{5, 13}, Shape{33, 64}, Shape{7, 576}, Shape{64, 200}}) {
    const int N = s.N, C = s.C;
    INFO("N=" << N << " C=" << C);
    const size_t NC = size_t(N) * C;
    auto inp = randn(NC, 30, {1}, 2.0f), w = randn(size_t(C), 30, {2}), dout = randn(NC, 30, {3});
    std::vector<float> out(NC), rstd(static_cast<size_t>(N)), out_r(NC), rstd_r(static_cast<size_t>(N));
    ops::rmsnorm_forward(out.data(), rstd.data(), inp.data(), w.data(), N, C, 1e-6f);
    ops::rmsnorm_forward_ref(out_r.data(), rstd_r.data(), inp.data(), w.data(), N, C, 1e-6f);
    CHECK_CLOSE_ARRAYS(out.data(), out_r.data(), NC, 2e-5);
    for (int n = 0; n < N; n++) CHECK(std::fabs(rstd[n] - rstd_r[n]) <= 1e-5 * rstd_r[n]);

    auto dinp = randn(NC, 30, {4}), dw = randn(size_t(C), 30, {5});
    auto dinp_r = dinp, dw_r = dw;
    ops::rmsnorm_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), rstd_r.data(), N, C);
    ops::rmsnorm_backward_ref(dinp_r.data(), dw_r.data(), dout.data(), inp.data(), w.data(), rstd_r.data(), N, C);
    CHECK_CLOSE_ARRAYS(dinp.data(), dinp_r.data(), NC, 2e-5);
    CHECK(bitwise_equal(dw, dw_r));
  }
}

TEST_CASE("rmsnorm gradient matches finite differences", "[ops][rmsnorm]") {
  // Same budget as LayerNorm's check: eps = 1e-2, rounding of a row of 7 outputs over
  // 2 eps ~2e-4 typically, truncation ~1e-5: rtol 1e-3, atol 5e-4.
  const int N = 3, C = 7;
  auto inp = randn(size_t(N) * C, 31, {1}), w = randn(size_t(C), 31, {2}), wl = randn(size_t(N) * C, 31, {3});
  std::vector<float> out(wl.size()), rstd(static_cast<size_t>(N));
  auto loss = [&] {
    ops::rmsnorm_forward_ref(out.data(), rstd.data(), inp.data(), w.data(), N, C, 1e-6f);
    return weighted_sum(out, wl);
  };
  loss();
  std::vector<float> dinp(inp.size(), 0.0f), dw(size_t(C), 0.0f);
  ops::rmsnorm_backward_ref(dinp.data(), dw.data(), wl.data(), inp.data(), w.data(), rstd.data(), N, C);
  check_gradient("dinp", inp, dinp, loss, 1e-2, 1e-3, 5e-4);
  check_gradient("dweight", w, dw, loss, 1e-2, 1e-3, 5e-4);
}

TEST_CASE("rmsnorm is bitwise independent of the thread count", "[ops][rmsnorm][determinism]") {
  const int N = 300, C = 200;
  auto inp = randn(size_t(N) * C, 32, {1}), w = randn(size_t(C), 32, {2}), dout = randn(size_t(N) * C, 32, {3});
  auto run = [&](int threads) {
    std::vector<float> out(inp.size()), rstd(static_cast<size_t>(N)), dinp(inp.size(), 0.0f), dw(size_t(C), 0.0f);
    with_threads(threads, [&] {
      ops::rmsnorm_forward(out.data(), rstd.data(), inp.data(), w.data(), N, C, 1e-6f);
      ops::rmsnorm_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), rstd.data(), N, C);
    });
    for (auto* v : {&rstd, &dinp, &dw}) out.insert(out.end(), v->begin(), v->end());
    return out;
  };
  const auto one = run(1);
  CHECK(bitwise_equal(one, run(2)));
  CHECK(bitwise_equal(one, run(3)));
}

TEST_CASE("rmsnorm of a zero row is zero", "[ops][rmsnorm]") {
  // mean(x^2) = 0: rstd = 1/sqrt(eps) stays finite and the output is exactly 0
  const int C = 9;
  std::vector<float> inp(C, 0.0f), w = randn(C, 33, {1}), out(C, NAN), rstd(1);
  ops::rmsnorm_forward(out.data(), rstd.data(), inp.data(), w.data(), 1, C, 1e-6f);
  CHECK(std::fabs(rstd[0] - 1000.0f) < 1e-2f);
  for (float o : out) CHECK(o == 0.0f);
}
