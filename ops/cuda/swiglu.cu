// SwiGLU (Llama MLP) on the GPU: out = silu(gate) * up, silu(g) = g * sigmoid(g).
// inp (N, 2H) holds [gate | up] per row, out (N, H), dinp (N, 2H).

#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/reduce.cuh"

namespace troupe::cuda {

namespace {

constexpr int kThreads = 256;

__device__ inline float sigmoid(float g) {
  return 1.0f / (1.0f + expf(-g));
}

__global__ void swiglu_forward_kernel(float* out, const float* inp, int H, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / H, j = i % H;
    const float g = inp[n * 2 * H + j], u = inp[n * 2 * H + H + j];
    out[i] = g * sigmoid(g) * u;
  }
}

__global__ void swiglu_backward_kernel(float* dinp, const float* inp, const float* dout, int H, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / H, j = i % H;
    const float g = inp[n * 2 * H + j], u = inp[n * 2 * H + H + j];
    const float s = sigmoid(g), dy = dout[i];
    // in the forward pass this was out = g * s(g) * up, so
    // dup = dout * g * s(g), dg = dout * up * s(g) * (1 + g * (1 - s(g)))
    dinp[n * 2 * H + j] += dy * u * (s * (1.0f + g * (1.0f - s)));
    dinp[n * 2 * H + H + j] += dy * (g * s);
  }
}

}  // namespace

void swiglu_forward(float* out, const float* inp, int N, int H, cudaStream_t stream) {
  const int64_t total = int64_t(N) * H;
  if (total == 0) return;
  swiglu_forward_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(out, inp, H, total);
  CUDA_CHECK_LAUNCH();
}

void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H, cudaStream_t stream) {
  const int64_t total = int64_t(N) * H;
  if (total == 0) return;
  swiglu_backward_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(dinp, inp, dout, H, total);
  CUDA_CHECK_LAUNCH();
}

}  // namespace troupe::cuda
