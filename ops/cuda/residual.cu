// Residual connection on the GPU: out = a + b. Backward sends dout unchanged to both
// branches (accumulating, like every backward).

#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/reduce.cuh"

namespace troupe::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void residual_forward_kernel(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void residual_backward_kernel(float* da, float* db, const float* dout, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float d = dout[i];
    da[i] += d;
    db[i] += d;
  }
}

}  // namespace

void residual_forward(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  residual_forward_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(out, a, b, n);
  CUDA_CHECK_LAUNCH();
}

void residual_backward(float* da, float* db, const float* dout, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  residual_backward_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(da, db, dout, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace troupe::cuda
