// RMSNorm (Llama) on the GPU: out = (x * rstd) * weight, rstd = 1 / sqrt(mean(x^2) + eps).
// inp (N, C), weight (C), out (N, C), rstd (N) saved for backward.
//
// Same split as LayerNorm: one warp per row for per-row work, deterministic column sums
// (reduce.cuh) for dweight.

#include "ops/cuda/context.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/reduce.cuh"

namespace troupe::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // one warp each

__global__ void rmsnorm_forward_kernel(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                                       float eps) {
  const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (n >= N) return;
  const float* x = inp + int64_t(n) * C;
  float* o = out + int64_t(n) * C;
  float s = 0.0f;
  for (int i = lane; i < C; i += kWarp) s += x[i] * x[i];
  const float r = 1.0f / sqrtf(warp_sum(s) / float(C) + eps);
  for (int i = lane; i < C; i += kWarp) o[i] = (x[i] * r) * weight[i];
  if (lane == 0) rstd[n] = r;
}

__global__ void rmsnorm_backward_dinp_kernel(float* dinp, const float* dout, const float* inp, const float* weight,
                                             const float* rstd, int N, int C) {
  const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (n >= N) return;
  const float* x = inp + int64_t(n) * C;
  const float* dy = dout + int64_t(n) * C;
  float* dx = dinp + int64_t(n) * C;
  const float r = rstd[n];
  // in the forward pass this was out = norm * w with norm = x * rstd, so dnorm = dout * w
  // and, since rstd depends on x: dx = rstd * (dnorm - norm * mean(dnorm * norm))
  float a = 0.0f;
  for (int i = lane; i < C; i += kWarp) a += dy[i] * weight[i] * (x[i] * r);
  const float dnorm_norm_mean = warp_sum(a) / float(C);
  for (int i = lane; i < C; i += kWarp) dx[i] += (dy[i] * weight[i] - (x[i] * r) * dnorm_norm_mean) * r;
}

// dweight += dout * norm, summed over rows
struct RmsNormWeightTerm {
  const float *dout, *inp, *rstd;
  int C;
  __device__ void operator()(int n, int c, float (&t)[1]) const {
    const int64_t i = int64_t(n) * C + c;
    t[0] = (inp[i] * rstd[n]) * dout[i];
  }
};

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps,
                     cudaStream_t stream) {
  if (N == 0) return;
  rmsnorm_forward_kernel<<<ceil_div(N, kRowsPerBlock), kRowsPerBlock * kWarp, 0, stream>>>(out, rstd, inp, weight, N, C,
                                                                                           eps);
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int N, int C, cudaStream_t stream) {
  if (N == 0 || C == 0) return;
  rmsnorm_backward_dinp_kernel<<<ceil_div(N, kRowsPerBlock), kRowsPerBlock * kWarp, 0, stream>>>(dinp, dout, inp,
                                                                                                 weight, rstd, N, C);
  CUDA_CHECK_LAUNCH();
  auto* partial = static_cast<float*>(scratch(stream, column_sums_scratch_floats(1, N, C) * sizeof(float)));
  column_sums_accumulate<1>(ColumnTargets<1>{{dweight}}, partial, N, C, RmsNormWeightTerm{dout, inp, rstd, C}, stream);
}

}  // namespace troupe::cuda
