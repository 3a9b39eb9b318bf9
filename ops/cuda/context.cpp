// Per-(device, stream) cuBLAS handles and scratch buffers. See context.h.

#include "ops/cuda/context.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <utility>

#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_check.h"

namespace troupe::cuda {

namespace {

struct StreamState {
  cublasHandle_t handle = nullptr;
  bool handle_tf32 = false;
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
};

std::mutex g_mu;
// Leaked on purpose: destroying handles from a static destructor can run after the CUDA
// runtime has shut down. release_context() frees everything explicitly.
auto* g_states = new std::map<std::pair<int, cudaStream_t>, StreamState>();
std::atomic<bool> g_tf32{false};

StreamState& state_for(cudaStream_t stream) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return (*g_states)[{device, stream}];
}

}  // namespace

cublasHandle_t cublas_handle(cudaStream_t stream) {
  std::lock_guard<std::mutex> lk(g_mu);
  StreamState& s = state_for(stream);
  const bool tf32 = g_tf32.load();
  if (!s.handle) {
    CUBLAS_CHECK(cublasCreate(&s.handle));
    CUBLAS_CHECK(cublasSetStream(s.handle, stream));
    CUBLAS_CHECK(cublasSetMathMode(s.handle, CUBLAS_DEFAULT_MATH));
    s.handle_tf32 = false;
  }
  if (s.handle_tf32 != tf32) {
    CUBLAS_CHECK(cublasSetMathMode(s.handle, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    s.handle_tf32 = tf32;
  }
  return s.handle;
}

void* scratch(cudaStream_t stream, size_t bytes) {
  std::lock_guard<std::mutex> lk(g_mu);
  StreamState& s = state_for(stream);
  if (bytes > s.scratch_bytes) {
    // grow by at least a quarter so that slowly rising sizes do not reallocate every call
    const size_t want = std::max(bytes, s.scratch_bytes + s.scratch_bytes / 4);
    if (s.scratch) {
      CUDA_CHECK(cudaStreamSynchronize(stream));  // earlier calls on this stream may still read it
      CUDA_CHECK(cudaFree(s.scratch));
      s.scratch = nullptr;
      s.scratch_bytes = 0;
    }
    CUDA_CHECK(cudaMalloc(&s.scratch, want));
    s.scratch_bytes = want;
  }
  return s.scratch;
}

void set_tf32(bool on) {
  g_tf32.store(on);
}
bool tf32_enabled() {
  return g_tf32.load();
}

void release_context() {
  std::lock_guard<std::mutex> lk(g_mu);
  int current = 0;
  CUDA_CHECK(cudaGetDevice(&current));
  for (auto& [key, s] : *g_states) {
    CUDA_CHECK(cudaSetDevice(key.first));
    CUDA_CHECK(cudaStreamSynchronize(key.second));
    if (s.handle) CUBLAS_CHECK(cublasDestroy(s.handle));
    if (s.scratch) CUDA_CHECK(cudaFree(s.scratch));
  }
  g_states->clear();
  CUDA_CHECK(cudaSetDevice(current));
}

}  // namespace troupe::cuda
