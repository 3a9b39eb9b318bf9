// SwiGLU: fast vs reference, gradient check, thread determinism.

#include "ops_test_util.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("swiglu fast matches reference", "[ops][swiglu]") {
  // The fast kernel's sigmoid uses our exp (<2e-7 relative) and 1/(1+e) from e <= 1; the
  // reference uses expf. With gate, up ~ 2 N(0,1) (|out| <~ 50): tolerance 2e-6 relative
  // to the largest value, in forward and backward.
  struct Shape {
    int N, H;
  };
  for (const Shape& s : {Shape{1, 1}, Shape{3, 13}, Shape{17, 64}, Shape{8, 1536}}) {
    const int N = s.N, H = s.H;
    INFO("N=" << N << " H=" << H);
    auto inp = randn(size_t(N) * 2 * H, 50, {1}, 2.0f), dout = randn(size_t(N) * H, 50, {2});
    inp[0] = 100.0f;  // saturated gate
    if (inp.size() > 1) inp[1] = -100.0f;
    std::vector<float> out(size_t(N) * H), out_r(out.size());
    ops::swiglu_forward(out.data(), inp.data(), N, H);
    ops::swiglu_forward_ref(out_r.data(), inp.data(), N, H);
    CHECK_CLOSE_ARRAYS(out.data(), out_r.data(), out.size(), 2e-6 * max_abs(out_r.data(), out_r.size()));
    auto dinp = randn(inp.size(), 50, {3});
    auto dinp_r = dinp;
    ops::swiglu_backward(dinp.data(), inp.data(), dout.data(), N, H);
    ops::swiglu_backward_ref(dinp_r.data(), inp.data(), dout.data(), N, H);
    CHECK_CLOSE_ARRAYS(dinp.data(), dinp_r.data(), dinp.size(), 2e-6 * max_abs(dinp_r.data(), dinp_r.size()));
  }
}

TEST_CASE("swiglu gradient matches finite differences", "[ops][swiglu]") {
  // One output changes per perturbation (|out| < 20, |w| < 4): rounding < 1e-6 * 4 over
  // 2 eps = 2e-2 is < 2e-4; truncation eps^2/6 * |f'''| * |w| ~ 1e-4 (f is linear in up).
  // rtol 1e-3, atol 5e-4.
  const int N = 4, H = 5;
  auto inp = randn(size_t(N) * 2 * H, 51, {1}, 2.0f), w = randn(size_t(N) * H, 51, {2});
  std::vector<float> out(w.size()), dinp(inp.size(), 0.0f), dinp_fast(inp.size(), 0.0f);
  auto loss = [&] {
    ops::swiglu_forward_ref(out.data(), inp.data(), N, H);
    return weighted_sum(out, w);
  };
  ops::swiglu_backward_ref(dinp.data(), inp.data(), w.data(), N, H);
  check_gradient("dinp", inp, dinp, loss, 1e-2, 1e-3, 5e-4);
  ops::swiglu_backward(dinp_fast.data(), inp.data(), w.data(), N, H);
  check_gradient("dinp (fast)", inp, dinp_fast, loss, 1e-2, 1e-3, 5e-4);
}

TEST_CASE("swiglu is bitwise independent of the thread count", "[ops][swiglu][determinism]") {
  const int N = 301, H = 200;
  auto inp = randn(size_t(N) * 2 * H, 52, {1}, 2.0f), dout = randn(size_t(N) * H, 52, {2});
  auto run = [&](int threads) {
    std::vector<float> out(size_t(N) * H), dinp(inp.size(), 0.0f);
    with_threads(threads, [&] {
      ops::swiglu_forward(out.data(), inp.data(), N, H);
      ops::swiglu_backward(dinp.data(), inp.data(), dout.data(), N, H);
    });
    out.insert(out.end(), dinp.begin(), dinp.end());
    return out;
  };
  const auto one = run(1);
  CHECK(bitwise_equal(one, run(2)));
  CHECK(bitwise_equal(one, run(3)));
}
