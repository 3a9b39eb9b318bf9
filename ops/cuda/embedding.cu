// Token (+ learned position) embedding on the GPU.
// tokens (N) with N = B*T, wte (V, C), wpe (maxT, C) or null, out (N, C).
//
// Backward: tokens repeat, so rows cannot simply be added in parallel. The row indices
// are sorted by token with a stable radix sort (cub), which keeps equal tokens in row
// order; then the first row of each run of equal tokens sums the whole run, channel by
// channel, onto dwte. Each dwte element thus receives the same additions in the same
// order as in the CPU reference: the results are the same bits.

#include <cub/device/device_radix_sort.cuh>

#include "ops/cuda/context.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/reduce.cuh"

namespace troupe::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kChannelsPerBlock = 128;

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte, const float* wpe, int T,
                                         int C, int pos0, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / C;
    const int c = int(i % C);
    float x = wte[int64_t(tokens[n]) * C + c];
    if (wpe) x += wpe[int64_t(pos0 + int(n % T)) * C + c];
    out[i] = x;
  }
}

__global__ void iota_kernel(int32_t* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = i;
}

// Block (sorted position i, channel chunk). Only the first position of each run of equal
// tokens does work: it adds the run's dout rows, in row order, onto the token's row.
__global__ void embedding_backward_wte_kernel(float* dwte, const float* dout, const int32_t* sorted_tokens,
                                              const int32_t* sorted_rows, int N, int C) {
  const int i = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  const int32_t tok = sorted_tokens[i];
  if (c >= C || (i > 0 && sorted_tokens[i - 1] == tok)) return;
  float* dst = dwte + int64_t(tok) * C + c;
  float acc = *dst;
  for (int j = i; j < N && sorted_tokens[j] == tok; j++) acc += dout[int64_t(sorted_rows[j]) * C + c];
  *dst = acc;
}

// dwpe[pos0 + t, c] += sum over b, in b order, of dout[b, t, c]
__global__ void embedding_backward_wpe_kernel(float* dwpe, const float* dout, int B, int T, int C, int pos0) {
  const int t = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float* dst = dwpe + int64_t(pos0 + t) * C + c;
  float acc = *dst;
  for (int b = 0; b < B; b++) acc += dout[(int64_t(b) * T + t) * C + c];
  *dst = acc;
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C,
                       int pos0, cudaStream_t stream) {
  const int64_t total = int64_t(B) * T * C;
  if (total == 0) return;
  embedding_forward_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(out, tokens, wte, wpe, T, C,
                                                                                         pos0, total);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C,
                        int pos0, cudaStream_t stream) {
  const int N = B * T;
  if (N == 0 || C == 0) return;
  // in the forward pass this was out[b,t,:] = wte[tok,:] + wpe[t,:], so dout flows to both
  size_t sort_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), N, 0, 32, stream));
  ScratchLayout layout;
  const size_t o_rows = layout.add<int32_t>(size_t(N));
  const size_t o_sorted_tokens = layout.add<int32_t>(size_t(N));
  const size_t o_sorted_rows = layout.add<int32_t>(size_t(N));
  const size_t o_sort = layout.add<char>(sort_bytes);
  char* base = static_cast<char*>(scratch(stream, layout.bytes()));
  auto* rows = reinterpret_cast<int32_t*>(base + o_rows);
  auto* sorted_tokens = reinterpret_cast<int32_t*>(base + o_sorted_tokens);
  auto* sorted_rows = reinterpret_cast<int32_t*>(base + o_sorted_rows);

  iota_kernel<<<ceil_div(N, kThreads), kThreads, 0, stream>>>(rows, N);
  CUDA_CHECK_LAUNCH();
  // radix sort is stable: rows with equal tokens stay in row order
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base + o_sort, sort_bytes, tokens, sorted_tokens, rows, sorted_rows, N, 0,
                                             32, stream));
  embedding_backward_wte_kernel<<<dim3(N, ceil_div(C, kChannelsPerBlock)), kChannelsPerBlock, 0, stream>>>(
      dwte, dout, sorted_tokens, sorted_rows, N, C);
  CUDA_CHECK_LAUNCH();
  if (dwpe) {
    embedding_backward_wpe_kernel<<<dim3(T, ceil_div(C, kChannelsPerBlock)), kChannelsPerBlock, 0, stream>>>(
        dwpe, dout, B, T, C, pos0);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace troupe::cuda
