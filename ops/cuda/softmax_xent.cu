// Fused softmax + cross-entropy over the vocabulary, on the GPU.
// logits (N, V), targets (N) (a target < 0 is ignored: zero loss, zero gradient),
// losses (N), dlogits (N, V) or null: OVERWRITTEN with dloss_scale * (softmax - onehot).
//
// One block per row, three passes over it: the max; sum(exp(x - max)) in f64; then
// dlogits = exp(x - max) * dloss_scale / sum. Row losses (f64) go to scratch memory and a
// second kernel adds them in a fixed order (per-thread strided sums, then a fixed tree).

#include <stdexcept>
#include <string>

#include "ops/cuda/context.h"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/reduce.cuh"

namespace troupe::cuda {

namespace {

constexpr int kRowThreads = 512;
constexpr int kSumThreads = 1024;
constexpr unsigned char kNoBadRow = 0x7f;  // memset byte: int 0x7f7f7f7f, above any row index

__global__ void softmax_xent_rows_kernel(double* row_loss, int* bad_row, float* losses, float* dlogits,
                                         const float* logits, const int32_t* targets, int V, float dloss_scale) {
  __shared__ float shared_f[kWarp];
  __shared__ double shared_d[kWarp];
  const int n = blockIdx.x;
  const float* x = logits + int64_t(n) * V;
  float* d = dlogits ? dlogits + int64_t(n) * V : nullptr;
  const int target = targets[n];
  if (target < 0 || target >= V) {
    // ignored row: no loss, zero gradient; a target past the vocabulary poisons the row
    const float fill = target < 0 ? 0.0f : NAN;
    if (threadIdx.x == 0) {
      losses[n] = fill;
      row_loss[n] = fill;
      if (target >= V && bad_row) atomicMin(bad_row, n);  // integer min: the same whatever the order
    }
    if (d)
      for (int i = threadIdx.x; i < V; i += blockDim.x) d[i] = fill;
    return;
  }
  float m = -INFINITY;
  for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, x[i]);
  m = block_max(m, shared_f);
  double s = 0.0;
  for (int i = threadIdx.x; i < V; i += blockDim.x) s += double(expf(x[i] - m));
  const double sum = block_sum(s, shared_d);
  if (threadIdx.x == 0) {
    // -log softmax(x)[target] = log(sum exp(x - m)) + m - x[target]
    const double loss = log(sum) + double(m) - double(x[target]);
    losses[n] = float(loss);
    row_loss[n] = loss;
  }
  if (d) {
    const float k = float(double(dloss_scale) / sum);
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
      const float g = expf(x[i] - m) * k;
      d[i] = i == target ? g - dloss_scale : g;
    }
  }
}

__global__ void sum_rows_kernel(double* result, const double* row_loss, int N) {
  __shared__ double shared[kWarp];
  double s = 0.0;
  for (int i = threadIdx.x; i < N; i += blockDim.x) s += row_loss[i];
  s = block_sum(s, shared);
  if (threadIdx.x == 0) *result = s;
}

void launch(double* loss_sum, int* bad_row, double* row_loss, float* losses, float* dlogits, const float* logits,
            const int32_t* targets, int N, int V, float dloss_scale, cudaStream_t stream) {
  if (N > 0) {
    softmax_xent_rows_kernel<<<N, kRowThreads, 0, stream>>>(row_loss, bad_row, losses, dlogits, logits, targets, V,
                                                            dloss_scale);
    CUDA_CHECK_LAUNCH();
  }
  sum_rows_kernel<<<1, kSumThreads, 0, stream>>>(loss_sum, row_loss, N);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void softmax_xent_forward_backward_async(double* loss_sum, float* losses, float* dlogits, const float* logits,
                                         const int32_t* targets, int N, int V, float dloss_scale, cudaStream_t stream) {
  auto* row_loss = static_cast<double*>(scratch(stream, size_t(N > 0 ? N : 1) * sizeof(double)));
  launch(loss_sum, nullptr, row_loss, losses, dlogits, logits, targets, N, V, dloss_scale, stream);
}

double softmax_xent_forward_backward(float* losses, float* dlogits, const float* logits, const int32_t* targets, int N,
                                     int V, float dloss_scale, cudaStream_t stream) {
  struct Result {
    double sum;
    int bad_row;
  };
  ScratchLayout layout;
  const size_t o_result = layout.add<Result>(1);
  const size_t o_rows = layout.add<double>(size_t(N));
  char* base = static_cast<char*>(scratch(stream, layout.bytes()));
  auto* result = reinterpret_cast<Result*>(base + o_result);
  CUDA_CHECK(cudaMemsetAsync(&result->bad_row, kNoBadRow, sizeof(int), stream));
  launch(&result->sum, &result->bad_row, reinterpret_cast<double*>(base + o_rows), losses, dlogits, logits, targets, N,
         V, dloss_scale, stream);
  Result host{};
  CUDA_CHECK(cudaMemcpyAsync(&host, result, sizeof(Result), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  if (host.bad_row < N)
    throw std::runtime_error("softmax_xent: the target at row " + std::to_string(host.bad_row) +
                             " is outside the vocabulary of " + std::to_string(V));
  return host.sum;
}

}  // namespace troupe::cuda
