// GELU, tanh approximation (GPT-2; torch gelu(approximate='tanh')), on the GPU:
// out = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). inp, out, dout: n floats.

#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/reduce.cuh"

namespace troupe::cuda {

namespace {

constexpr int kThreads = 256;
constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kKappa = 0.044715f;

__global__ void gelu_forward_kernel(float* out, const float* inp, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = inp[i];
    out[i] = 0.5f * x * (1.0f + tanhf(kBeta * (x + kKappa * x * x * x)));
  }
}

__global__ void gelu_backward_kernel(float* dinp, const float* inp, const float* dout, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = inp[i];
    // in the forward pass this was out = 0.5 x (1 + tanh(u)), so
    // dout/dx = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) du/dx, du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    const float th = tanhf(kBeta * (x + kKappa * x * x * x));
    const float left = 0.5f * x * (1.0f - th * th) * kBeta * (1.0f + 3.0f * kKappa * x * x);
    dinp[i] += dout[i] * (0.5f * (1.0f + th) + left);
  }
}

}  // namespace

void gelu_forward(float* out, const float* inp, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_forward_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(out, inp, n);
  CUDA_CHECK_LAUNCH();
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_backward_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(dinp, inp, dout, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace troupe::cuda
