// Linear layer (cuBLAS) on the GPU vs the CPU reference (f64 sums), forward and backward
// with and without bias / dinp; bf16 weights; the TF32 switch; determinism.

#include "core/dtype.h"
#include "cuda_test_util.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct LinearShape {
  int N, C, OC;
};

// f32 GEMM (TF32 off) against the f64 reference: a dot product of length K over
// unit-normal data has terms of size ~1 and partial sums of size ~sqrt(K); its f32
// rounding error stays near sqrt(K) * 2^-24 * sqrt(K) = K * 6e-8, so 1e-6 * K + 1e-6
// leaves a margin of ~16x while TF32 (errors ~ 5e-4 * sqrt(K)) or a wrong index fail.
double dot_tol(int K) {
  return 1e-6 * K + 1e-6;
}

struct LinearData {
  std::vector<float> inp, w, bias, dout, dinp0, dw0, db0;
  LinearData(const LinearShape& s, uint64_t seed)
      : inp(randn(size_t(s.N) * s.C, seed, {1})),
        w(randn(size_t(s.OC) * s.C, seed, {2})),
        bias(randn(size_t(s.OC), seed, {3})),
        dout(randn(size_t(s.N) * s.OC, seed, {4})),
        dinp0(randn(inp.size(), seed, {5})),
        dw0(randn(w.size(), seed, {6})),
        db0(randn(bias.size(), seed, {7})) {}
};

}  // namespace

TEST_CASE("cuda linear matches the reference", "[cuda][linear]") {
  for (const LinearShape& s : {LinearShape{1, 1, 1}, LinearShape{7, 13, 5}, LinearShape{33, 70, 129},
                               LinearShape{600, 40, 530}, LinearShape{256, 768, 512}}) {
    const int N = s.N, C = s.C, OC = s.OC;
    INFO("N=" << N << " C=" << C << " OC=" << OC);
    LinearData d(s, 40);
    DeviceArray<float> inp(d.inp), w(d.w), bias(d.bias), dout(d.dout), out(size_t(N) * OC);
    for (bool with_bias : {true, false}) {
      INFO("bias " << with_bias);
      std::vector<float> out_ref(size_t(N) * OC);
      ops::linear_forward_ref(out_ref.data(), d.inp.data(), d.w.data(), with_bias ? d.bias.data() : nullptr, N, C, OC);
      out.poison();
      cuda::linear_forward(out.get(), inp.get(), w.get(), with_bias ? bias.get() : nullptr, N, C, OC);
      CHECK_CLOSE_ARRAYS(out.download().data(), out_ref.data(), out_ref.size(), dot_tol(C));
    }
    for (bool with_dinp : {true, false}) {
      INFO("dinp and dbias " << with_dinp);
      auto dinp_ref = d.dinp0, dw_ref = d.dw0, db_ref = d.db0;
      ops::linear_backward_ref(with_dinp ? dinp_ref.data() : nullptr, dw_ref.data(),
                               with_dinp ? db_ref.data() : nullptr, d.dout.data(), d.inp.data(), d.w.data(), N, C, OC);
      DeviceArray<float> dinp(d.dinp0), dw(d.dw0), db(d.db0);
      cuda::linear_backward(with_dinp ? dinp.get() : nullptr, dw.get(), with_dinp ? db.get() : nullptr, dout.get(),
                            inp.get(), w.get(), N, C, OC);
      CHECK_CLOSE_ARRAYS(dinp.download().data(), dinp_ref.data(), dinp_ref.size(), dot_tol(OC));
      CHECK_CLOSE_ARRAYS(dw.download().data(), dw_ref.data(), dw_ref.size(), dot_tol(N));
      CHECK_CLOSE_ARRAYS(db.download().data(), db_ref.data(), db_ref.size(), dot_tol(N));
    }
  }
}

TEST_CASE("cuda linear with bf16 weights matches the reference on the widened weights", "[cuda][linear]") {
  const int N = 65, C = 200, OC = 300;
  auto inp = randn(size_t(N) * C, 41, {1}), wf = randn(size_t(OC) * C, 41, {2}), bias = randn(size_t(OC), 41, {3});
  std::vector<uint16_t> wb(wf.size());
  for (size_t i = 0; i < wf.size(); i++) {
    wb[i] = f32_to_bf16(wf[i]);
    wf[i] = bf16_to_f32(wb[i]);  // the reference sees exactly the stored weights
  }
  std::vector<float> out_ref(size_t(N) * OC);
  ops::linear_forward_ref(out_ref.data(), inp.data(), wf.data(), bias.data(), N, C, OC);
  DeviceArray<float> d_inp(inp), d_bias(bias), d_out(out_ref.size());
  DeviceArray<uint16_t> d_w(wb);
  d_out.poison();
  cuda::linear_forward_bf16w(d_out.get(), d_inp.get(), d_w.get(), d_bias.get(), N, C, OC);
  CHECK_CLOSE_ARRAYS(d_out.download().data(), out_ref.data(), out_ref.size(), dot_tol(C));
}

TEST_CASE("cuda linear: TF32 is off by default and the switch turns it on", "[cuda][linear]") {
  // With TF32 the inputs are rounded to 10 mantissa bits: errors grow ~100x over f32's.
  // Seeing that difference proves both that the default is f32 and that set_tf32 works.
  const int N = 256, C = 1024, OC = 256;
  auto inp = randn(size_t(N) * C, 42, {1}), w = randn(size_t(OC) * C, 42, {2});
  std::vector<float> out_ref(size_t(N) * OC);
  ops::linear_forward_ref(out_ref.data(), inp.data(), w.data(), nullptr, N, C, OC);
  DeviceArray<float> d_inp(inp), d_w(w), d_out(out_ref.size());
  REQUIRE_FALSE(cuda::tf32_enabled());
  cuda::linear_forward(d_out.get(), d_inp.get(), d_w.get(), nullptr, N, C, OC);
  const double err_f32 = max_abs_diff(d_out.download().data(), out_ref.data(), out_ref.size()).diff;
  cuda::set_tf32(true);
  cuda::linear_forward(d_out.get(), d_inp.get(), d_w.get(), nullptr, N, C, OC);
  const double err_tf32 = max_abs_diff(d_out.download().data(), out_ref.data(), out_ref.size()).diff;
  cuda::set_tf32(false);
  INFO("max error f32 " << err_f32 << ", tf32 " << err_tf32);
  CHECK(err_f32 <= dot_tol(C));
  CHECK(err_tf32 > 10 * err_f32);
  CHECK(err_tf32 < 1e-2 * std::sqrt(double(C)) * 4);  // still a product of the same matrices
}

TEST_CASE("cuda linear is deterministic", "[cuda][linear][determinism]") {
  const LinearShape s{512, 384, 768};
  LinearData d(s, 43);
  DeviceArray<float> inp(d.inp), w(d.w), bias(d.bias), dout(d.dout), out(size_t(s.N) * s.OC);
  std::vector<float> first[4];
  for (int run = 0; run < 2; run++) {
    DeviceArray<float> dinp(d.dinp0), dw(d.dw0), db(d.db0);
    cuda::linear_forward(out.get(), inp.get(), w.get(), bias.get(), s.N, s.C, s.OC);
    cuda::linear_backward(dinp.get(), dw.get(), db.get(), dout.get(), inp.get(), w.get(), s.N, s.C, s.OC);
    std::vector<float> now[4] = {out.download(), dinp.download(), dw.download(), db.download()};
    for (int i = 0; i < 4; i++) {
      if (run == 0)
        first[i] = now[i];
      else
        CHECK(bitwise_equal(now[i], first[i]));
    }
  }
}
