// LayerNorm over the last dimension on the GPU: out = (x - mean) * rstd * weight + bias.
// inp (N, C), weight/bias (C), out (N, C), mean/rstd (N) saved for backward.
//
// One warp per row for everything that is per row (statistics, out, dinp); the sums over
// rows for dweight/dbias are deterministic column sums (reduce.cuh).

#include "ops/cuda/context.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/reduce.cuh"

namespace troupe::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // one warp each

__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                         const float* bias, int N, int C, float eps) {
  const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (n >= N) return;
  const float* x = inp + int64_t(n) * C;
  float* o = out + int64_t(n) * C;
  float s = 0.0f;
  for (int i = lane; i < C; i += kWarp) s += x[i];
  const float m = warp_sum(s) / float(C);
  float v = 0.0f;
  for (int i = lane; i < C; i += kWarp) {
    const float d = x[i] - m;
    v += d * d;
  }
  const float r = 1.0f / sqrtf(warp_sum(v) / float(C) + eps);
  for (int i = lane; i < C; i += kWarp) o[i] = (x[i] - m) * r * weight[i] + bias[i];
  if (lane == 0) {
    mean[n] = m;
    rstd[n] = r;
  }
}

__global__ void layernorm_backward_dinp_kernel(float* dinp, const float* dout, const float* inp, const float* weight,
                                               const float* mean, const float* rstd, int N, int C) {
  const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (n >= N) return;
  const float* x = inp + int64_t(n) * C;
  const float* dy = dout + int64_t(n) * C;
  float* dx = dinp + int64_t(n) * C;
  const float m = mean[n], r = rstd[n];
  // in the forward pass this was out = norm * w + b with norm = (x - mean) * rstd, so
  // dnorm = dout * w, and through the normalization (mean and rstd depend on x):
  // dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
  float a = 0.0f, b = 0.0f;
  for (int i = lane; i < C; i += kWarp) {
    const float dnorm = dy[i] * weight[i];
    a += dnorm;
    b += dnorm * ((x[i] - m) * r);
  }
  const float dnorm_mean = warp_sum(a) / float(C);
  const float dnorm_norm_mean = warp_sum(b) / float(C);
  for (int i = lane; i < C; i += kWarp) {
    const float norm = (x[i] - m) * r;
    dx[i] += (dy[i] * weight[i] - dnorm_mean - norm * dnorm_norm_mean) * r;
  }
}

// dweight += dout * norm, dbias += dout, summed over rows
struct LayerNormParamTerm {
  const float *dout, *inp, *mean, *rstd;
  int C;
  __device__ void operator()(int n, int c, float (&t)[2]) const {
    const int64_t i = int64_t(n) * C + c;
    t[0] = (inp[i] - mean[n]) * rstd[n] * dout[i];
    t[1] = dout[i];
  }
};

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int N, int C, float eps, cudaStream_t stream) {
  if (N == 0) return;
  layernorm_forward_kernel<<<ceil_div(N, kRowsPerBlock), kRowsPerBlock * kWarp, 0, stream>>>(out, mean, rstd, inp,
                                                                                             weight, bias, N, C, eps);
  CUDA_CHECK_LAUNCH();
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C, cudaStream_t stream) {
  if (N == 0 || C == 0) return;
  layernorm_backward_dinp_kernel<<<ceil_div(N, kRowsPerBlock), kRowsPerBlock * kWarp, 0, stream>>>(
      dinp, dout, inp, weight, mean, rstd, N, C);
  CUDA_CHECK_LAUNCH();
  auto* partial = static_cast<float*>(scratch(stream, column_sums_scratch_floats(2, N, C) * sizeof(float)));
  column_sums_accumulate<2>(ColumnTargets<2>{{dweight, dbias}}, partial, N, C,
                            LayerNormParamTerm{dout, inp, mean, rstd, C}, stream);
}

}  // namespace troupe::cuda
