// Linear layer (OpenBLAS sgemm): fast vs reference, gradient check, bf16 weights,
// thread determinism.

#include "core/dtype.h"
#include "ops_test_util.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct Shape {
  int N, C, OC;
};

// Tolerance for f32 dot products of length K over unit-normal data against the f64
// reference: the f32 sum's rounding error is at most about K * 2^-24 * sum|a b|, and
// sum|a b| ~ 0.64 K; we allow K * 1e-6, far below the O(1) errors of a wrong index.
double dot_tol(int K) {
  return 1e-6 * K + 1e-6;
}

}  // namespace

TEST_CASE("linear fast matches reference", "[ops][linear]") {
  for (const Shape& s : {Shape{1, 1, 1}, Shape{7, 13, 5}, Shape{33, 70, 129}, Shape{64, 64, 64}, Shape{100, 96, 300},
                         Shape{600, 40, 530}}) {
    const int N = s.N, C = s.C, OC = s.OC;
    INFO("N=" << N << " C=" << C << " OC=" << OC);
    auto inp = randn(size_t(N) * C, 10, {1}), w = randn(size_t(OC) * C, 10, {2}), bias = randn(size_t(OC), 10, {3});
    for (bool with_bias : {true, false}) {
      const float* bp = with_bias ? bias.data() : nullptr;
      std::vector<float> out(size_t(N) * OC, NAN), out_ref(out.size());
      ops::linear_forward(out.data(), inp.data(), w.data(), bp, N, C, OC);
      ops::linear_forward_ref(out_ref.data(), inp.data(), w.data(), bp, N, C, OC);
      CHECK_CLOSE_ARRAYS(out.data(), out_ref.data(), out.size(), dot_tol(C));

      auto dout = randn(out.size(), 10, {4});
      // nonzero starting gradients: backward accumulates
      auto dinp = randn(inp.size(), 10, {5}), dw = randn(w.size(), 10, {6}), db = randn(bias.size(), 10, {7});
      auto dinp_ref = dinp, dw_ref = dw, db_ref = db;
      ops::linear_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, dout.data(), inp.data(), w.data(),
                           N, C, OC);
      ops::linear_backward_ref(dinp_ref.data(), dw_ref.data(), with_bias ? db_ref.data() : nullptr, dout.data(),
                               inp.data(), w.data(), N, C, OC);
      CHECK_CLOSE_ARRAYS(dinp.data(), dinp_ref.data(), dinp.size(), dot_tol(OC));
      CHECK_CLOSE_ARRAYS(dw.data(), dw_ref.data(), dw.size(), dot_tol(N));
      CHECK(bitwise_equal(db, db_ref));  // same row order in both
    }
  }
}

TEST_CASE("linear backward without dinp leaves it alone", "[ops][linear]") {
  const int N = 5, C = 6, OC = 7;
  auto inp = randn(size_t(N) * C, 11, {1}), w = randn(size_t(OC) * C, 11, {2}), dout = randn(size_t(N) * OC, 11, {3});
  std::vector<float> dw(w.size(), 0.0f), dw_ref(w.size(), 0.0f);
  ops::linear_backward(nullptr, dw.data(), nullptr, dout.data(), inp.data(), w.data(), N, C, OC);
  ops::linear_backward_ref(nullptr, dw_ref.data(), nullptr, dout.data(), inp.data(), w.data(), N, C, OC);
  CHECK_CLOSE_ARRAYS(dw.data(), dw_ref.data(), dw.size(), dot_tol(N));
}

TEST_CASE("linear gradient matches finite differences", "[ops][linear]") {
  // The loss is linear in each of inp, weight, bias: no truncation error, so eps = 0.1.
  // Noise: a perturbation changes at most 5 outputs (|out| < 8, |w| < 4), each rounded
  // by at most 5e-7 * 4, over 2 eps = 0.2: < 5e-5. rtol 1e-4, atol 1e-4.
  const int N = 3, C = 4, OC = 5;
  auto inp = randn(size_t(N) * C, 12, {1}), w = randn(size_t(OC) * C, 12, {2}), bias = randn(size_t(OC), 12, {3});
  auto wl = randn(size_t(N) * OC, 12, {4});
  std::vector<float> out(wl.size()), dinp(inp.size(), 0.0f), dw(w.size(), 0.0f), db(bias.size(), 0.0f);
  auto loss = [&] {
    ops::linear_forward_ref(out.data(), inp.data(), w.data(), bias.data(), N, C, OC);
    return weighted_sum(out, wl);
  };
  ops::linear_backward_ref(dinp.data(), dw.data(), db.data(), wl.data(), inp.data(), w.data(), N, C, OC);
  check_gradient("dinp", inp, dinp, loss, 0.1, 1e-4, 1e-4);
  check_gradient("dweight", w, dw, loss, 0.1, 1e-4, 1e-4);
  check_gradient("dbias", bias, db, loss, 0.1, 1e-4, 1e-4);
}

TEST_CASE("linear with bf16 weights matches the f32 product of the rounded weights", "[ops][linear]") {
  // The GEMM grid has 512 x 512 blocks: the first shape spans 2 x 3 of them, partial ones too.
  for (const Shape& s : {Shape{600, 24, 1100}, Shape{17, 13, 9}}) {
    const int N = s.N, C = s.C, OC = s.OC;
    auto inp = randn(size_t(N) * C, 13, {1}), w = randn(size_t(OC) * C, 13, {2}), bias = randn(size_t(OC), 13, {3});
    std::vector<uint16_t> wb(w.size());
    std::vector<float> wr(w.size());
    for (size_t i = 0; i < w.size(); i++) {
      wb[i] = f32_to_bf16(w[i]);
      wr[i] = bf16_to_f32(wb[i]);
    }
    for (bool with_bias : {true, false}) {
      const float* bp = with_bias ? bias.data() : nullptr;
      std::vector<float> out(size_t(N) * OC, NAN), out_ref(out.size());
      ops::linear_forward_bf16w(out.data(), inp.data(), wb.data(), bp, N, C, OC);
      ops::linear_forward_ref(out_ref.data(), inp.data(), wr.data(), bp, N, C, OC);
      CHECK_CLOSE_ARRAYS(out.data(), out_ref.data(), out.size(), dot_tol(C));
    }
  }
}

TEST_CASE("linear is bitwise independent of the thread count", "[ops][linear][determinism]") {
  // Several blocks of the 512 x 512 grid (with partial ones), and a single-block shape.
  for (const Shape& s : {Shape{700, 96, 600}, Shape{257, 190, 333}}) {
    const int N = s.N, C = s.C, OC = s.OC;
    auto inp = randn(size_t(N) * C, 14, {1}), w = randn(size_t(OC) * C, 14, {2}), bias = randn(size_t(OC), 14, {3});
    auto dout = randn(size_t(N) * OC, 14, {4});
    std::vector<uint16_t> wb(w.size());
    for (size_t i = 0; i < w.size(); i++) wb[i] = f32_to_bf16(w[i]);
    auto run = [&](int threads) {
      std::vector<float> out(size_t(N) * OC), out16(out.size()), dinp(inp.size(), 0.0f), dw(w.size(), 0.0f),
          db(bias.size(), 0.0f);
      with_threads(threads, [&] {
        ops::linear_forward(out.data(), inp.data(), w.data(), bias.data(), N, C, OC);
        ops::linear_forward_bf16w(out16.data(), inp.data(), wb.data(), bias.data(), N, C, OC);
        ops::linear_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(), N, C, OC);
      });
      for (auto* v : {&out16, &dinp, &dw, &db}) out.insert(out.end(), v->begin(), v->end());
      return out;
    };
    const auto one = run(1);
    CHECK(bitwise_equal(one, run(2)));
    CHECK(bitwise_equal(one, run(3)));
  }
}
