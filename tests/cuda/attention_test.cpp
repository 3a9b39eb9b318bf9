// Causal grouped-query attention (flash-style CUDA kernels) vs the CPU reference, which
// materializes the (T, T) probabilities in f64; determinism of forward and backward.
//
// Tolerances as for the CPU flash kernel, scaled by max(1, max |ref|): the GPU works in
// f32 (fma dot products of length HS, tile-by-tile online softmax, exp2f within 2 ulp).
// Scores are O(1) for q, k ~ N(0,1) and reach ~20 with q scaled by 4, where lse itself
// is ~20 (f32 ulp 2e-6) and a score's rounding moves p by ~1e-6 relative: out and lse
// within 1e-5 (H100: at most 5.7e-6). Gradients sum up to T terms: 2e-5.

#include "cuda_test_util.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct Shape {
  int B, T, NH, NKV, HS;
};

struct AttnData {
  Shape s;
  std::vector<float> q, k, v, dout, dq0, dk0, dv0;
  AttnData(const Shape& s_, uint64_t seed, float qscale = 1.0f) : s(s_) {
    const size_t nq = size_t(s.B) * s.T * s.NH * s.HS, nkv = size_t(s.B) * s.T * s.NKV * s.HS;
    q = randn(nq, seed, {1}, qscale);
    k = randn(nkv, seed, {2});
    v = randn(nkv, seed, {3});
    dout = randn(nq, seed, {4});
    // nonzero starting gradients: backward accumulates
    dq0 = randn(nq, seed, {5});
    dk0 = randn(nkv, seed, {6});
    dv0 = randn(nkv, seed, {7});
  }
  size_t nlse() const { return size_t(s.B) * s.NH * s.T; }
};

struct AttnResult {
  std::vector<float> out, lse, dq, dk, dv;
};

// Forward, then backward from the forward's own out and lse.
AttnResult run_reference(const AttnData& d) {
  const Shape& s = d.s;
  AttnResult r{std::vector<float>(d.q.size()), std::vector<float>(d.nlse()), d.dq0, d.dk0, d.dv0};
  ops::attention_forward_ref(r.out.data(), r.lse.data(), d.q.data(), d.k.data(), d.v.data(), s.B, s.T, s.NH, s.NKV,
                             s.HS);
  ops::attention_backward_ref(r.dq.data(), r.dk.data(), r.dv.data(), d.dout.data(), d.q.data(), d.k.data(), d.v.data(),
                              r.out.data(), r.lse.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  return r;
}

AttnResult run_gpu(const AttnData& d) {
  const Shape& s = d.s;
  DeviceArray<float> q(d.q), k(d.k), v(d.v), dout(d.dout), out(d.q.size()), lse(d.nlse());
  DeviceArray<float> dq(d.dq0), dk(d.dk0), dv(d.dv0);
  out.poison();
  lse.poison();
  cuda::attention_forward(out.get(), lse.get(), q.get(), k.get(), v.get(), s.B, s.T, s.NH, s.NKV, s.HS);
  cuda::attention_backward(dq.get(), dk.get(), dv.get(), dout.get(), q.get(), k.get(), v.get(), out.get(), lse.get(),
                           s.B, s.T, s.NH, s.NKV, s.HS);
  return {out.download(), lse.download(), dq.download(), dk.download(), dv.download()};
}

}  // namespace

TEST_CASE("cuda attention matches the reference", "[cuda][attention]") {
  // T = 1; odd HS (padded to 32); exactly one 64 x 64 tile; T not a multiple of the tile
  // with GQA groups of 3; multi-query (NKV = 1) over three key tiles; HS = 48 and 96
  // (padded head columns); HS = 128 (the largest); sharper softmax (q scaled by 4).
  const Shape shapes[] = {{1, 1, 1, 1, 8},    {2, 5, 4, 2, 13},  {1, 64, 2, 2, 64},  {2, 100, 6, 2, 32},
                          {1, 130, 4, 1, 64}, {1, 77, 2, 2, 48}, {1, 200, 2, 1, 96}, {2, 129, 2, 2, 128}};
  for (const Shape& s : shapes) {
    for (float qscale : {1.0f, 4.0f}) {
      INFO("B=" << s.B << " T=" << s.T << " NH=" << s.NH << " NKV=" << s.NKV << " HS=" << s.HS << " qscale=" << qscale);
      AttnData d(s, 100, qscale);
      const AttnResult g = run_gpu(d), r = run_reference(d);
      CHECK_CLOSE_ARRAYS(g.out.data(), r.out.data(), r.out.size(), scaled_tol(r.out, 1e-5));
      CHECK_CLOSE_ARRAYS(g.lse.data(), r.lse.data(), r.lse.size(), scaled_tol(r.lse, 1e-5));
      CHECK_CLOSE_ARRAYS(g.dq.data(), r.dq.data(), r.dq.size(), scaled_tol(r.dq, 2e-5));
      CHECK_CLOSE_ARRAYS(g.dk.data(), r.dk.data(), r.dk.size(), scaled_tol(r.dk, 2e-5));
      CHECK_CLOSE_ARRAYS(g.dv.data(), r.dv.data(), r.dv.size(), scaled_tol(r.dv, 2e-5));
    }
  }
}

TEST_CASE("cuda attention is causal", "[cuda][attention]") {
  // Changing keys and values at positions >= t0 must not change the outputs before t0.
  const Shape s{1, 150, 2, 1, 64};
  const int t0 = 70;
  AttnData a(s, 101), b(s, 101);
  for (int t = t0; t < s.T; t++)
    for (int i = 0; i < s.NKV * s.HS; i++) {
      b.k[size_t(t) * s.NKV * s.HS + i] += 1.0f;
      b.v[size_t(t) * s.NKV * s.HS + i] -= 2.0f;
    }
  const AttnResult ga = run_gpu(a), gb = run_gpu(b);
  const size_t prefix = size_t(t0) * s.NH * s.HS;
  CHECK(bitwise_equal(std::vector<float>(ga.out.begin(), ga.out.begin() + long(prefix)),
                      std::vector<float>(gb.out.begin(), gb.out.begin() + long(prefix))));
  CHECK_FALSE(bitwise_equal(ga.out, gb.out));
}

TEST_CASE("cuda attention is deterministic", "[cuda][attention][determinism]") {
  const Shape s{2, 300, 4, 2, 64};
  AttnData d(s, 102);
  const AttnResult a = run_gpu(d), b = run_gpu(d);
  CHECK(bitwise_equal(a.out, b.out));
  CHECK(bitwise_equal(a.lse, b.lse));
  CHECK(bitwise_equal(a.dq, b.dq));
  CHECK(bitwise_equal(a.dk, b.dk));
  CHECK(bitwise_equal(a.dv, b.dv));
}

TEST_CASE("cuda attention rejects unsupported shapes", "[cuda][attention]") {
  DeviceArray<float> x(1024);
  CHECK_THROWS_WITH(cuda::attention_forward(x.get(), x.get(), x.get(), x.get(), x.get(), 1, 1, 3, 2, 8),
                    Catch::Contains("NH must be a multiple of NKV"));
  CHECK_THROWS_WITH(cuda::attention_forward(x.get(), x.get(), x.get(), x.get(), x.get(), 1, 1, 1, 1, 256),
                    Catch::Contains("HS <= 128"));
}
