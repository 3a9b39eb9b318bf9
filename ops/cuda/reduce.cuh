#pragma once
// Reductions shared by the CUDA kernels (internal to ops/cuda). All of them combine
// values in an order fixed by the shape alone (butterfly within a warp, warps in index
// order, row chunks in index order), never by timing: results are the same bits on
// every run. No atomics.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "ops/cuda/cuda_check.h"

namespace troupe::cuda {

constexpr int kWarp = 32;

inline int ceil_div(int64_t a, int64_t b) {
  return int((a + b - 1) / b);
}

template <class T>
__device__ inline T warp_sum(T v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ inline float warp_max(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `shared` holds 32 values of T. Ends with a barrier, so it can be called again.
template <class T>
__device__ inline T block_sum(T v, T* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, nwarps = blockDim.x / kWarp;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T r = lane < nwarps ? shared[lane] : T(0);
  r = warp_sum(r);
  __syncthreads();
  return r;
}

__device__ inline float block_max(float v, float* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, nwarps = blockDim.x / kWarp;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float r = lane < nwarps ? shared[lane] : -INFINITY;
  r = warp_max(r);
  __syncthreads();
  return r;
}

// ---- column sums: dst_k[c] += sum over rows n of term(n, c)[k], k < K ------------------
// For weight and bias gradients of per-row layers. Pass 1: block (column group of 32,
// chunk of kRowsPerChunk rows); thread (x, y) sums rows y, y + 8, ... of the chunk for
// column x, then the 8 row lanes are added in order. Pass 2: one thread per column adds
// the chunk partials in chunk order into dst. The partials live in scratch memory:
// K * nchunks * C floats.

constexpr int kRowsPerChunk = 256;
constexpr int kRowLanes = 8;

template <int K>
struct ColumnTargets {
  float* dst[K];
};

template <int K, class Term>
__global__ void column_partials_kernel(float* partial, int N, int C, Term term) {
  __shared__ float lanes[K][kRowLanes][kWarp];
  const int c = blockIdx.x * kWarp + threadIdx.x;
  const int chunk = blockIdx.y;
  const int n0 = chunk * kRowsPerChunk, n1 = min(N, n0 + kRowsPerChunk);
  float acc[K];
  for (int k = 0; k < K; k++) acc[k] = 0.0f;
  if (c < C)
    for (int n = n0 + int(threadIdx.y); n < n1; n += kRowLanes) {
      float t[K];
      term(n, c, t);
      for (int k = 0; k < K; k++) acc[k] += t[k];
    }
  for (int k = 0; k < K; k++) lanes[k][threadIdx.y][threadIdx.x] = acc[k];
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    const int nchunks = gridDim.y;
    for (int k = 0; k < K; k++) {
      float s = lanes[k][0][threadIdx.x];
      for (int y = 1; y < kRowLanes; y++) s += lanes[k][y][threadIdx.x];
      partial[(int64_t(k) * nchunks + chunk) * C + c] = s;
    }
  }
}

template <int K>
__global__ void column_finish_kernel(ColumnTargets<K> out, const float* partial, int nchunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int k = 0; k < K; k++) {
    float s = 0.0f;
    for (int j = 0; j < nchunks; j++) s += partial[(int64_t(k) * nchunks + j) * C + c];
    out.dst[k][c] += s;
  }
}

// Scratch floats the column sums need.
inline size_t column_sums_scratch_floats(int K, int N, int C) {
  return size_t(K) * size_t(ceil_div(N, kRowsPerChunk)) * size_t(C);
}

// `partial` is scratch of column_sums_scratch_floats(K, N, C) floats.
template <int K, class Term>
void column_sums_accumulate(ColumnTargets<K> out, float* partial, int N, int C, Term term, cudaStream_t stream) {
  if (N == 0 || C == 0) return;
  const int nchunks = ceil_div(N, kRowsPerChunk);
  column_partials_kernel<K>
      <<<dim3(ceil_div(C, kWarp), nchunks), dim3(kWarp, kRowLanes), 0, stream>>>(partial, N, C, term);
  CUDA_CHECK_LAUNCH();
  column_finish_kernel<K><<<ceil_div(C, 256), 256, 0, stream>>>(out, partial, nchunks, C);
  CUDA_CHECK_LAUNCH();
}

// Grid size for an elementwise kernel over n elements with a grid-stride loop.
inline int elementwise_blocks(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return int(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

}  // namespace troupe::cuda
