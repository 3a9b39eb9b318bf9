// Token + position embedding: fast vs reference, gradient check, thread determinism.

#include "ops_test_util.h"

using namespace troupe;
using namespace troupe::test;

namespace {

std::vector<int32_t> random_tokens(size_t n, int V, uint64_t seed) {
  RngStream s(seed, {99});
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; i++) t[i] = int32_t(s.bits(i) % uint32_t(V));
  return t;
}

}  // namespace

TEST_CASE("embedding fast matches reference", "[ops][embedding]") {
  // Forward is a copy (+ one add) and backward adds in the same row order in both: the
  // results must be bitwise equal.
  struct Shape {
    int B, T, C, V, pos0;
  };
  for (const Shape& sh : {Shape{2, 5, 13, 7, 0}, Shape{3, 17, 70, 11, 3}, Shape{1, 1, 64, 2, 9}}) {
    const int B = sh.B, T = sh.T, C = sh.C, V = sh.V, pos0 = sh.pos0;
    const int N = B * T, maxT = T + pos0;
    auto tok = random_tokens(size_t(N), V, 1);
    auto wte = randn(size_t(V) * C, 1, {1}), wpe = randn(size_t(maxT) * C, 1, {2});
    for (bool with_pos : {true, false}) {
      const float* p = with_pos ? wpe.data() : nullptr;
      std::vector<float> out(size_t(N) * C), out_ref(out.size());
      ops::embedding_forward(out.data(), tok.data(), wte.data(), p, B, T, C, pos0);
      ops::embedding_forward_ref(out_ref.data(), tok.data(), wte.data(), p, B, T, C, pos0);
      CHECK(bitwise_equal(out, out_ref));

      auto dout = randn(out.size(), 1, {3});
      // start from nonzero gradients: backward must accumulate
      auto dwte = randn(wte.size(), 1, {4}), dwpe = randn(wpe.size(), 1, {5});
      auto dwte_ref = dwte, dwpe_ref = dwpe;
      ops::embedding_backward(dwte.data(), with_pos ? dwpe.data() : nullptr, dout.data(), tok.data(), B, T, C, pos0);
      ops::embedding_backward_ref(dwte_ref.data(), with_pos ? dwpe_ref.data() : nullptr, dout.data(), tok.data(), B, T,
                                  C, pos0);
      CHECK(bitwise_equal(dwte, dwte_ref));
      CHECK(bitwise_equal(dwpe, dwpe_ref));
    }
  }
}

TEST_CASE("embedding gradient matches finite differences", "[ops][embedding]") {
  // The loss is linear in wte and wpe: no truncation error, so eps = 0.1. Noise: a
  // perturbation changes at most 3 outputs (|out| < 5, |w| < 4), each rounded by at most
  // 3e-7 * 4, over 2 eps = 0.2: < 2e-5. rtol 1e-4, atol 1e-4.
  const int B = 2, T = 3, C = 5, V = 5;
  auto tok = std::vector<int32_t>{1, 3, 1, 0, 1, 2};  // token 1 repeats: its gradient sums
  auto wte = randn(size_t(V) * C, 2, {1}), wpe = randn(size_t(T) * C, 2, {2});
  auto w = randn(size_t(B) * T * C, 2, {3});
  std::vector<float> out(w.size()), dwte(wte.size(), 0.0f), dwpe(wpe.size(), 0.0f);
  auto loss = [&] {
    ops::embedding_forward_ref(out.data(), tok.data(), wte.data(), wpe.data(), B, T, C);
    return weighted_sum(out, w);
  };
  ops::embedding_backward_ref(dwte.data(), dwpe.data(), w.data(), tok.data(), B, T, C);
  check_gradient("dwte", wte, dwte, loss, 0.1, 1e-4, 1e-4);
  check_gradient("dwpe", wpe, dwpe, loss, 0.1, 1e-4, 1e-4);
  // token 4 does not occur: zero gradient row
  for (int c = 0; c < C; c++) CHECK(dwte[4 * C + c] == 0.0f);
}

TEST_CASE("embedding is bitwise independent of the thread count", "[ops][embedding][determinism]") {
  const int B = 4, T = 33, C = 200, V = 50;  // many repeated tokens, C spans several chunks
  auto tok = random_tokens(size_t(B) * T, V, 3);
  auto wte = randn(size_t(V) * C, 3, {1}), wpe = randn(size_t(T) * C, 3, {2});
  auto dout = randn(size_t(B) * T * C, 3, {3});
  auto run = [&](int threads) {
    std::vector<float> out(dout.size()), dwte(wte.size(), 0.0f), dwpe(wpe.size(), 0.0f);
    with_threads(threads, [&] {
      ops::embedding_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, C);
      ops::embedding_backward(dwte.data(), dwpe.data(), dout.data(), tok.data(), B, T, C);
    });
    out.insert(out.end(), dwte.begin(), dwte.end());
    out.insert(out.end(), dwpe.begin(), dwpe.end());
    return out;
  };
  const auto one = run(1);
  CHECK(bitwise_equal(one, run(2)));
  CHECK(bitwise_equal(one, run(3)));
}
