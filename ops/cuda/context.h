#pragma once
// Per-(device, stream) state of the CUDA kernels: a cuBLAS handle and a scratch buffer,
// created on first use and kept for the life of the process. Internal to ops/cuda.
//
// Scratch memory of a stream is reused by the next kernel call on that stream: calls on
// one stream run in order, so a buffer is never used by two calls at once.

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>

namespace troupe::cuda {

// The cuBLAS handle of (current device, stream), with the math mode set from set_tf32()
// (cuda_backend.h).
cublasHandle_t cublas_handle(cudaStream_t stream);

// At least `bytes` of device memory for one call on (current device, stream), valid until
// the next scratch() call for that stream. Growing waits for the stream to finish first.
void* scratch(cudaStream_t stream, size_t bytes);

// Destroys every handle and frees every scratch buffer (waits for their streams).
void release_context();

// Carves one scratch allocation into aligned pieces: take<T>(count) in call order.
class ScratchLayout {
 public:
  template <class T>
  size_t add(size_t count) {
    const size_t off = bytes_;
    bytes_ += (count * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    return off;
  }
  size_t bytes() const { return bytes_; }

 private:
  static constexpr size_t kAlign = 256;
  size_t bytes_ = 0;
};

}  // namespace troupe::cuda
