// Linear layer on the GPU: out = inp @ weight^T + bias.
// inp (N, C), weight (OC, C) like torch.nn.Linear, bias (OC) or null, out (N, OC).
//
// Products go to cublasSgemm (f32; TF32 only if set_tf32(true)). cuBLAS is column-major:
// a row-major (R, K) matrix is a column-major (K, R) one, so each product below is
// written for the transposes (out^T = W inp^T and so on). cuBLAS gives the same bits on
// every run for a given GPU and toolkit (one handle per stream, see context.h). The
// bias gradient is ours: deterministic column sums (reduce.cuh).

#include "ops/cuda/context.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/reduce.cuh"

namespace troupe::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void fill_rows_kernel(float* out, const float* bias, int OC, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = bias[i % OC];
}

__global__ void bf16_to_f32_kernel(float* out, const uint16_t* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __uint_as_float(uint32_t(in[i]) << 16);
}

struct DoutTerm {
  const float* dout;
  int OC;
  __device__ void operator()(int n, int c, float (&t)[1]) const { t[0] = dout[int64_t(n) * OC + c]; }
};

}  // namespace

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC,
                    cudaStream_t stream) {
  if (N == 0 || OC == 0) return;
  cublasHandle_t h = cublas_handle(stream);
  if (bias) {
    const int64_t total = int64_t(N) * OC;
    fill_rows_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(out, bias, OC, total);
    CUDA_CHECK_LAUNCH();
  }
  const float one = 1.0f, beta = bias ? 1.0f : 0.0f;
  // out^T (OC, N) = W (OC, C) @ inp^T (C, N) [+ out^T]
  CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, &one, weight, C, inp, C, &beta, out, OC));
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC, cudaStream_t stream) {
  cublasHandle_t h = cublas_handle(stream);
  const float one = 1.0f;
  // in the forward pass this was out = inp @ weight^T + bias, so:
  // dinp (N, C) += dout (N, OC) @ weight (OC, C), i.e. dinp^T (C, N) += W^T (C, OC) @ dout^T (OC, N)
  if (dinp && N > 0 && C > 0)
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, &one, weight, C, dout, OC, &one, dinp, C));
  // dweight (OC, C) += dout^T (OC, N) @ inp (N, C), i.e. dweight^T (C, OC) += inp^T (C, N) @ dout (N, OC)
  if (OC > 0 && C > 0)
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, &one, inp, C, dout, OC, &one, dweight, C));
  // dbias (OC) += sum over rows of dout
  if (dbias && N > 0 && OC > 0) {
    auto* partial = static_cast<float*>(scratch(stream, column_sums_scratch_floats(1, N, OC) * sizeof(float)));
    column_sums_accumulate<1>(ColumnTargets<1>{{dbias}}, partial, N, OC, DoutTerm{dout, OC}, stream);
  }
}

void linear_forward_bf16w(float* out, const float* inp, const uint16_t* weight, const float* bias, int N, int C, int OC,
                          cudaStream_t stream) {
  if (N == 0 || OC == 0) return;
  // bf16 -> f32 is exact (the top 16 bits of the f32), so this is linear_forward on the
  // widened weight, which lives in this stream's scratch memory for the call.
  const int64_t nw = int64_t(OC) * C;
  auto* wf = static_cast<float*>(scratch(stream, size_t(nw) * sizeof(float)));
  bf16_to_f32_kernel<<<elementwise_blocks(nw, kThreads), kThreads, 0, stream>>>(wf, weight, nw);
  CUDA_CHECK_LAUNCH();
  linear_forward(out, inp, wf, bias, N, C, OC, stream);
}

}  // namespace troupe::cuda
