// AdamW (decoupled weight decay, bias-corrected) at step t >= 1 on the GPU, with the two
// helpers around it: a fixed-order sum of squares (gradient norm) and an in-place scale.
//
// The update is ops/cpu/adamw.cpp's, operation for operation (torch's order and
// rounding): every multiply, add, divide, sqrt and fma is an explicit round-to-nearest
// intrinsic, so nvcc cannot contract or reorder anything, and the results are the same
// bits as the CPU kernels'. The scalars are formed in f64 on the host and rounded once,
// as there.

#include <cmath>

#include "ops/cuda/context.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/reduce.cuh"

namespace troupe::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kSumSquaresBlock = 4096;  // as ops/cpu/adamw.cpp
constexpr int kFinishThreads = 1024;

struct AdamWScalars {
  float decay, lerp_weight, one_minus_beta2, beta2, neg_step_size, bias_correction2_sqrt, eps;
};

AdamWScalars make_scalars(const AdamWConfig& cfg, int t) {
  const double bc1 = 1.0 - std::pow(double(cfg.beta1), double(t));
  const double bc2 = 1.0 - std::pow(double(cfg.beta2), double(t));
  AdamWScalars s;
  s.decay = float(1.0 - double(cfg.lr) * double(cfg.weight_decay));
  s.lerp_weight = float(1.0 - double(cfg.beta1));
  s.one_minus_beta2 = float(1.0 - double(cfg.beta2));
  s.beta2 = cfg.beta2;
  s.neg_step_size = float(-(double(cfg.lr) / bc1));
  s.bias_correction2_sqrt = float(std::sqrt(bc2));
  s.eps = cfg.eps;
  return s;
}

// torch's lerp(start, end, w): start + w (end - start) for |w| < 0.5, else
// end - (1 - w)(end - start); both as one fma.
__device__ inline float lerp(float start, float end, float w) {
  const float diff = __fsub_rn(end, start);
  return fabsf(w) < 0.5f ? __fmaf_rn(w, diff, start) : __fmaf_rn(__fsub_rn(w, 1.0f), diff, end);
}

__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, int64_t n, AdamWScalars s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = grads[i];
    const float pd = __fmul_rn(params[i], s.decay);
    const float m1 = lerp(m[i], g, s.lerp_weight);
    const float v1 = __fmaf_rn(__fmul_rn(s.one_minus_beta2, g), g, __fmul_rn(v[i], s.beta2));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v1), s.bias_correction2_sqrt), s.eps);
    params[i] = __fadd_rn(pd, __fdiv_rn(__fmul_rn(s.neg_step_size, m1), denom));
    m[i] = m1;
    v[i] = v1;
  }
}

// partial[b] = sum of x^2 over block b of kSumSquaresBlock elements, in f64
__global__ void sum_squares_blocks_kernel(double* partial, const float* x, int64_t n) {
  __shared__ double shared[kWarp];
  const int64_t b0 = blockIdx.x * kSumSquaresBlock;
  const int64_t len = min(kSumSquaresBlock, n - b0);
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
    const double xi = x[b0 + i];
    s += xi * xi;
  }
  s = block_sum(s, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(double* result, const double* partial, int64_t nblocks) {
  __shared__ double shared[kWarp];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < nblocks; i += blockDim.x) s += partial[i];
  s = block_sum(s, shared);
  if (threadIdx.x == 0) *result = s;
}

__global__ void scale_kernel(float* x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = __fmul_rn(x[i], s);
}

// Writes the sum into result (device), using `partial` (one double per block) as scratch.
void sum_squares_launch(double* result, double* partial, const float* x, int64_t n, cudaStream_t stream) {
  const int64_t nblocks = (n + kSumSquaresBlock - 1) / kSumSquaresBlock;
  if (nblocks > 0) {
    sum_squares_blocks_kernel<<<unsigned(nblocks), kThreads, 0, stream>>>(partial, x, n);
    CUDA_CHECK_LAUNCH();
  }
  sum_partials_kernel<<<1, kFinishThreads, 0, stream>>>(result, partial, nblocks);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, const AdamWConfig& cfg, int t,
                  cudaStream_t stream) {
  if (n == 0) return;
  adamw_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(params, grads, m, v, n, make_scalars(cfg, t));
  CUDA_CHECK_LAUNCH();
}

void sum_squares_async(double* result, const float* x, int64_t n, cudaStream_t stream) {
  const size_t nblocks = size_t((n + kSumSquaresBlock - 1) / kSumSquaresBlock);
  auto* partial = static_cast<double*>(scratch(stream, (nblocks > 0 ? nblocks : 1) * sizeof(double)));
  sum_squares_launch(result, partial, x, n, stream);
}

double sum_squares(const float* x, int64_t n, cudaStream_t stream) {
  const size_t nblocks = size_t((n + kSumSquaresBlock - 1) / kSumSquaresBlock);
  ScratchLayout layout;
  const size_t o_result = layout.add<double>(1);
  const size_t o_partial = layout.add<double>(nblocks);
  char* base = static_cast<char*>(scratch(stream, layout.bytes()));
  auto* result = reinterpret_cast<double*>(base + o_result);
  sum_squares_launch(result, reinterpret_cast<double*>(base + o_partial), x, n, stream);
  double host = 0.0;
  CUDA_CHECK(cudaMemcpyAsync(&host, result, sizeof(double), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

void scale_inplace(float* x, int64_t n, float s, cudaStream_t stream) {
  if (n == 0) return;
  scale_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(x, n, s);
  CUDA_CHECK_LAUNCH();
}

}  // namespace troupe::cuda
