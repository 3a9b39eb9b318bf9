// Rotary position embedding on the GPU, rotate-half form (HF Llama): with h = HS/2, each
// pair (x[i], x[i+h]) at position p = pos0 + t is rotated by p * inv_freq[i],
// inv_freq[i] = theta^(-2i/HS):
//   x[i]   <- x[i] cos - x[i+h] sin
//   x[i+h] <- x[i+h] cos + x[i] sin
// x (B, T, NHx, HS), rotated in place. Angles in f32 as HF (and ops/cpu/rope.cpp) form
// them: inv_freq = 1 / theta^(2i/HS) (computed on the host, as there), angle =
// float(p) * inv_freq; only cos and sin (sincosf, at most 2 ulp) differ from the CPU.

#include <cmath>
#include <stdexcept>
#include <string>

#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/reduce.cuh"

namespace troupe::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxPairs = 256;  // HS <= 512

// inv_freq[i] for i < HS/2, passed by value (1 KiB of kernel parameters).
struct InvFreq {
  float v[kMaxPairs];
};

// One thread per pair (row r of B*T*NHx, i < h); sign = +1 forward, -1 backward.
__global__ void rope_kernel(float* x, int T, int NHx, int HS, InvFreq inv_freq, int pos0, float sign, int64_t total) {
  const int h = HS / 2;
  // kernel parameters are read through the constant cache, which serializes a warp's
  // different addresses: copy the table to shared memory first
  __shared__ float freq[kMaxPairs];
  for (int j = threadIdx.x; j < h; j += blockDim.x) freq[j] = inv_freq.v[j];
  __syncthreads();
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / h;
    const int i = int(k % h);
    const int t = int((r / NHx) % T);
    const float angle = float(pos0 + t) * freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    s *= sign;
    float* x1 = x + r * HS + i;
    float* x2 = x1 + h;
    const float a = *x1, b = *x2;
    *x1 = a * c - b * s;
    *x2 = b * c + a * s;
  }
}

void rotate(float* x, int B, int T, int NHx, int HS, float theta, int pos0, float sign, cudaStream_t stream) {
  if (HS % 2 != 0) throw std::runtime_error("RoPE needs an even head size, got HS=" + std::to_string(HS));
  if (HS / 2 > kMaxPairs)
    throw std::runtime_error("RoPE: head size " + std::to_string(HS) + " above " + std::to_string(2 * kMaxPairs));
  const int64_t total = int64_t(B) * T * NHx * (HS / 2);
  if (total == 0) return;
  // on the host with the CPU kernel's own expression, so that the angles are the same bits
  InvFreq f{};
  for (int i = 0; i < HS / 2; i++) f.v[i] = 1.0f / std::pow(theta, float(2 * i) / float(HS));
  rope_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(x, T, NHx, HS, f, pos0, sign, total);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope_forward(float* x, int B, int T, int NHx, int HS, float theta, int pos0, cudaStream_t stream) {
  rotate(x, B, T, NHx, HS, theta, pos0, 1.0f, stream);
}

// in the forward pass this was x <- R x with R a rotation, so dx <- R^T dx = R(-angle) dx
void rope_backward(float* dx, int B, int T, int NHx, int HS, float theta, int pos0, cudaStream_t stream) {
  rotate(dx, B, T, NHx, HS, theta, pos0, -1.0f, stream);
}

}  // namespace troupe::cuda
