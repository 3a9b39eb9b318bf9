// Linear layer: out = inp @ weight^T + bias.
// inp (N, C), weight (OC, C) like torch.nn.Linear, bias (OC) or null, out (N, OC).
//
// Matrix products go to OpenBLAS, but not to its threading: the bits OpenBLAS returns
// depend on its thread count (its threaded driver blocks the k loop differently from the
// serial one) and on the shape of each call. So each product is cut into a fixed grid of
// output blocks (kBlock x kBlock, from the shape alone), each block is one single-threaded
// sgemm over the whole k range, and OpenMP threads share out the blocks. The result is
// the same for any thread count; on 2 cores this costs about 5% against OpenBLAS's own
// threading. The bias gradient, ours, splits the output channels across threads and sums
// the rows in order.

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "core/dtype.h"
#include "ops/ops.h"

namespace troupe::ops {

namespace {

constexpr int kBlock = 512;        // output block edge of the GEMM grid (measured: 256 is ~10% slower)
constexpr int kChannelChunk = 64;  // output channels per task in the bias gradient

// Our OpenMP threads call OpenBLAS concurrently, each for one block: OpenBLAS itself must
// stay single-threaded (threads.cpp sets it so; this covers callers that never did).
void ensure_serial_openblas() {
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

int num_blocks(int n) {
  return (n + kBlock - 1) / kBlock;
}

// C (M, N) = op(A) (M, K) @ op(B) (K, N) + beta * C, row-major, on the fixed block grid.
void blocked_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const float* A, int lda, const float* B,
                   int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  ensure_serial_openblas();
  const int bm = num_blocks(M), bn = num_blocks(N);
#pragma omp parallel for schedule(dynamic, 1)
  for (int task = 0; task < bm * bn; task++) {
    const int m0 = task / bn * kBlock, n0 = task % bn * kBlock;
    const float* a = ta == CblasNoTrans ? A + int64_t(m0) * lda : A + m0;  // rows m0.. of op(A)
    const float* b = tb == CblasNoTrans ? B + n0 : B + int64_t(n0) * ldb;  // columns n0.. of op(B)
    cblas_sgemm(CblasRowMajor, ta, tb, std::min(kBlock, M - m0), std::min(kBlock, N - n0), K, 1.0f, a, lda, b, ldb,
                beta, C + int64_t(m0) * ldc + n0, ldc);
  }
}

// out[n,:] = bias, the starting value that sgemm accumulates onto with beta = 1.
void fill_rows_with_bias(float* out, const float* bias, int N, int OC) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float* __restrict o = out + int64_t(n) * OC;
    for (int j = 0; j < OC; j++) o[j] = bias[j];
  }
}

}  // namespace

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) {
  if (bias) fill_rows_with_bias(out, bias, N, OC);
  // out (N, OC) = inp (N, C) @ weight^T (C, OC) [+ out]
  blocked_sgemm(CblasNoTrans, CblasTrans, N, OC, C, inp, C, weight, C, bias ? 1.0f : 0.0f, out, OC);
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC) {
  // in the forward pass this was out = inp @ weight^T + bias, so:
  // dinp (N, C) += dout (N, OC) @ weight (OC, C)
  if (dinp) blocked_sgemm(CblasNoTrans, CblasNoTrans, N, C, OC, dout, OC, weight, C, 1.0f, dinp, C);
  // dweight (OC, C) += dout^T (OC, N) @ inp (N, C)
  blocked_sgemm(CblasTrans, CblasNoTrans, OC, C, N, dout, OC, inp, C, 1.0f, dweight, C);
  // dbias (OC) += sum over rows of dout
  if (dbias) {
    const int nchunks = (OC + kChannelChunk - 1) / kChannelChunk;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < nchunks; ch++) {
      const int o0 = ch * kChannelChunk, ow = std::min(kChannelChunk, OC - o0);
      float acc[kChannelChunk];
      for (int j = 0; j < ow; j++) acc[j] = dbias[o0 + j];
      for (int n = 0; n < N; n++) {
        const float* __restrict d = dout + int64_t(n) * OC + o0;
        for (int j = 0; j < ow; j++) acc[j] += d[j];
      }
      for (int j = 0; j < ow; j++) dbias[o0 + j] = acc[j];
    }
  }
}

void linear_forward_bf16w(float* out, const float* inp, const uint16_t* weight, const float* bias, int N, int C,
                          int OC) {
  if (N == 0 || OC == 0) return;
  if (bias) fill_rows_with_bias(out, bias, N, OC);
  ensure_serial_openblas();
  // The same block grid as linear_forward; each task converts its kBlock weight rows to
  // f32 in a buffer of its own (the f32 weight never exists whole) and runs one sgemm.
  const int bm = num_blocks(N), bn = num_blocks(OC);
#pragma omp parallel
  {
    std::vector<float> wf(size_t(std::min(kBlock, OC)) * size_t(C));
#pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < bm * bn; task++) {
      const int m0 = task / bn * kBlock, n0 = task % bn * kBlock;
      const int rows = std::min(kBlock, OC - n0);
      const uint16_t* __restrict w = weight + int64_t(n0) * C;
      float* __restrict f = wf.data();
      for (int64_t i = 0; i < int64_t(rows) * C; i++) f[i] = bf16_to_f32(w[i]);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, std::min(kBlock, N - m0), rows, C, 1.0f,
                  inp + int64_t(m0) * C, C, f, C, bias ? 1.0f : 0.0f, out + int64_t(m0) * OC + n0, OC);
    }
  }
}

void linear_forward_ref(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) {
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OC; o++) {
      double acc = 0;
      for (int c = 0; c < C; c++) acc += double(inp[int64_t(n) * C + c]) * double(weight[int64_t(o) * C + c]);
      out[int64_t(n) * OC + o] = float(acc + (bias ? double(bias[o]) : 0.0));
    }
}

void linear_backward_ref(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                         const float* weight, int N, int C, int OC) {
  if (dinp)
    for (int n = 0; n < N; n++)
      for (int c = 0; c < C; c++) {
        double acc = 0;
        for (int o = 0; o < OC; o++) acc += double(dout[int64_t(n) * OC + o]) * double(weight[int64_t(o) * C + c]);
        dinp[int64_t(n) * C + c] += float(acc);
      }
  for (int o = 0; o < OC; o++)
    for (int c = 0; c < C; c++) {
      double acc = 0;
      for (int n = 0; n < N; n++) acc += double(dout[int64_t(n) * OC + o]) * double(inp[int64_t(n) * C + c]);
      dweight[int64_t(o) * C + c] += float(acc);
    }
  if (dbias)
    for (int n = 0; n < N; n++)
      for (int o = 0; o < OC; o++) dbias[o] += dout[int64_t(n) * OC + o];
}

}  // namespace troupe::ops
