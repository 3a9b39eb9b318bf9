// Causal grouped-query attention (flash-style CPU kernel): fast vs reference, gradient
// check, causality, T = 1, thread determinism.

#include <cmath>

#include "ops_test_util.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct Shape {
  int B, T, NH, NKV, HS;
};

struct AttnData {
  Shape s;
  std::vector<float> q, k, v, dout;
  AttnData(const Shape& s_, uint64_t seed, float qscale = 1.0f) : s(s_) {
    const size_t nq = size_t(s.B) * s.T * s.NH * s.HS, nkv = size_t(s.B) * s.T * s.NKV * s.HS;
    q = randn(nq, seed, {1}, qscale);
    k = randn(nkv, seed, {2});
    v = randn(nkv, seed, {3});
    dout = randn(nq, seed, {4});
  }
  size_t nlse() const { return size_t(s.B) * s.NH * s.T; }
};

struct AttnResult {
  std::vector<float> out, lse, dq, dk, dv;
};

// Forward, then backward from the forward's own out and lse, accumulating onto the
// given starting gradients.
AttnResult run_attention(const AttnData& d, bool fast, const std::vector<float>& dq0, const std::vector<float>& dk0,
                         const std::vector<float>& dv0) {
  const Shape& s = d.s;
  AttnResult r{std::vector<float>(d.q.size()), std::vector<float>(d.nlse()), dq0, dk0, dv0};
  auto fwd = fast ? ops::attention_forward : ops::attention_forward_ref;
  auto bwd = fast ? ops::attention_backward : ops::attention_backward_ref;
  fwd(r.out.data(), r.lse.data(), d.q.data(), d.k.data(), d.v.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  bwd(r.dq.data(), r.dk.data(), r.dv.data(), d.dout.data(), d.q.data(), d.k.data(), d.v.data(), r.out.data(),
      r.lse.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  return r;
}

AttnResult run_attention(const AttnData& d, bool fast) {
  return run_attention(d, fast, std::vector<float>(d.q.size()), std::vector<float>(d.k.size()),
                       std::vector<float>(d.v.size()));
}

}  // namespace

TEST_CASE("attention fast matches reference", "[ops][attention]") {
  // The fast kernel works in f32 (fma dot products of length HS and tile-by-tile sums),
  // the reference in f64. Scores are O(1) (q, k ~ N(0,1), scaled by 1/sqrt(HS)), so
  // out and lse agree to ~1e-6; gradients sum up to T terms. Tolerances: out and lse
  // 1e-5, gradients 2e-5 times max(1, the largest reference gradient).
  // Shapes: T = 1; odd HS; exactly one 64 x 64 tile; T not a multiple of the tile with
  // GQA groups of 3; multi-query (NKV = 1) over three key blocks; HS = 48 (half-width
  // micro-kernel); sharper softmax (q scaled by 4).
  const Shape shapes[] = {{1, 1, 1, 1, 8},    {2, 5, 4, 2, 13},   {1, 64, 2, 2, 64},
                          {2, 100, 6, 2, 32}, {1, 130, 4, 1, 64}, {1, 77, 2, 2, 48}};
  for (const Shape& s : shapes) {
    for (float qscale : {1.0f, 4.0f}) {
      INFO("B=" << s.B << " T=" << s.T << " NH=" << s.NH << " NKV=" << s.NKV << " HS=" << s.HS << " qscale=" << qscale);
      AttnData d(s, 100, qscale);
      // nonzero starting gradients: backward accumulates
      auto dq0 = randn(d.q.size(), 100, {5}), dk0 = randn(d.k.size(), 100, {6}), dv0 = randn(d.v.size(), 100, {7});
      const AttnResult f = run_attention(d, true, dq0, dk0, dv0), r = run_attention(d, false, dq0, dk0, dv0);
      CHECK_CLOSE_ARRAYS(f.out.data(), r.out.data(), f.out.size(), 1e-5);
      CHECK_CLOSE_ARRAYS(f.lse.data(), r.lse.data(), f.lse.size(), 1e-5);
      auto tol = [](const std::vector<float>& x) { return 2e-5 * std::max(1.0, max_abs(x.data(), x.size())); };
      CHECK_CLOSE_ARRAYS(f.dq.data(), r.dq.data(), f.dq.size(), tol(r.dq));
      CHECK_CLOSE_ARRAYS(f.dk.data(), r.dk.data(), f.dk.size(), tol(r.dk));
      CHECK_CLOSE_ARRAYS(f.dv.data(), r.dv.data(), f.dv.size(), tol(r.dv));
    }
  }
}

TEST_CASE("attention gradient matches finite differences", "[ops][attention]") {
  // Small GQA case (2 query heads share 1 kv head). eps = 1e-2: perturbing a key changes
  // up to T*NH*HS = 40 f32 outputs (|out| < 3, |w| < 4), each rounded by at most
  // 2.4e-7 * 4, over 2 eps: < 2e-4 worst case, ~3e-5 typically. Truncation eps^2/6 * f'''
  // ~ 1e-5. rtol 2e-3, atol 2e-4.
  const Shape s{1, 5, 2, 1, 4};
  AttnData d(s, 101);
  std::vector<float> out(d.q.size()), lse(d.nlse());
  auto loss = [&] {
    ops::attention_forward_ref(out.data(), lse.data(), d.q.data(), d.k.data(), d.v.data(), s.B, s.T, s.NH, s.NKV, s.HS);
    return weighted_sum(out, d.dout);
  };
  loss();
  std::vector<float> dq(d.q.size(), 0.0f), dk(d.k.size(), 0.0f), dv(d.v.size(), 0.0f);
  ops::attention_backward_ref(dq.data(), dk.data(), dv.data(), d.dout.data(), d.q.data(), d.k.data(), d.v.data(),
                              out.data(), lse.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  check_gradient("dq", d.q, dq, loss, 1e-2, 2e-3, 2e-4);
  check_gradient("dk", d.k, dk, loss, 1e-2, 2e-3, 2e-4);
  check_gradient("dv", d.v, dv, loss, 1e-2, 2e-3, 2e-4);
}

TEST_CASE("attention is causal", "[ops][attention]") {
  // Changing keys and values after position t0 leaves outputs up to t0 bitwise unchanged.
  const Shape s{1, 150, 2, 1, 64};
  const int t0 = 70;
  AttnData d(s, 102);
  const AttnResult a = run_attention(d, true);
  for (size_t i = size_t(t0 + 1) * s.NKV * s.HS; i < d.k.size(); i++) {
    d.k[i] += 1.0f;
    d.v[i] -= 2.0f;
  }
  const AttnResult b = run_attention(d, true);
  const size_t prefix = size_t(t0 + 1) * s.NH * s.HS;
  CHECK(std::memcmp(a.out.data(), b.out.data(), prefix * sizeof(float)) == 0);
  CHECK(std::memcmp(a.out.data(), b.out.data(), a.out.size() * sizeof(float)) != 0);
}

TEST_CASE("attention over one position returns v", "[ops][attention]") {
  // T = 1: softmax over a single key is 1, so out = v, lse = q.k / sqrt(HS), dv = dout,
  // and dq = dk = 0 up to rounding (dP - D = dout.v - dout.out).
  const Shape s{2, 1, 4, 2, 16};
  AttnData d(s, 103);
  const AttnResult r = run_attention(d, true);
  for (int b = 0; b < s.B; b++)
    for (int h = 0; h < s.NH; h++) {
      const int kvh = h / (s.NH / s.NKV);
      const float* o = r.out.data() + (size_t(b) * s.NH + h) * s.HS;
      const float* vv = d.v.data() + (size_t(b) * s.NKV + kvh) * s.HS;
      for (int i = 0; i < s.HS; i++) CHECK(o[i] == vv[i]);
      double dot = 0;
      for (int i = 0; i < s.HS; i++)
        dot += double(d.q[(size_t(b) * s.NH + h) * s.HS + i]) * d.k[(size_t(b) * s.NKV + kvh) * s.HS + i];
      CHECK(std::fabs(r.lse[size_t(b) * s.NH + h] - dot / 4.0) < 1e-5);
    }
  // each kv head collects dout of its 2 query heads
  for (int b = 0; b < s.B; b++)
    for (int kvh = 0; kvh < s.NKV; kvh++)
      for (int i = 0; i < s.HS; i++) {
        const float* dy = d.dout.data() + size_t(b) * s.NH * s.HS;
        const float expect = dy[(2 * kvh) * s.HS + i] + dy[(2 * kvh + 1) * s.HS + i];
        CHECK(std::fabs(r.dv[(size_t(b) * s.NKV + kvh) * s.HS + i] - expect) <= 1e-6);
      }
  CHECK(max_abs(r.dq.data(), r.dq.size()) < 1e-5);
  CHECK(max_abs(r.dk.data(), r.dk.size()) < 1e-5);
}

TEST_CASE("attention is bitwise independent of the thread count", "[ops][attention][determinism]") {
  // GQA, T spanning partial tiles, B * NKV = 4 backward tasks.
  const Shape s{2, 150, 4, 2, 64};
  AttnData d(s, 104);
  auto run = [&](int threads) {
    AttnResult r;
    with_threads(threads, [&] { r = run_attention(d, true); });
    for (auto* v : {&r.lse, &r.dq, &r.dk, &r.dv}) r.out.insert(r.out.end(), v->begin(), v->end());
    return r.out;
  };
  const auto one = run(1);
  CHECK(bitwise_equal(one, run(2)));
  CHECK(bitwise_equal(one, run(3)));
}

TEST_CASE("attention rejects NH not a multiple of NKV", "[ops][attention]") {
  std::vector<float> x(64), lse(3);
  CHECK_THROWS(ops::attention_forward(x.data(), lse.data(), x.data(), x.data(), x.data(), 1, 1, 3, 2, 4));
}
