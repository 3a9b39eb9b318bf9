#pragma once
// Error checks for CUDA runtime and cuBLAS calls. A failed call throws
// std::runtime_error naming the call, the error and file:line; inside ops only (actors
// turn it into an error value at their boundary).

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace troupe::cuda {

[[noreturn]] inline void throw_cuda_error(const char* call, cudaError_t err, const char* file, int line) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call +
                           " failed: " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

[[noreturn]] inline void throw_cublas_error(const char* call, cublasStatus_t st, const char* file, int line) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call +
                           " failed: " + cublasGetStatusName(st) + ": " + cublasGetStatusString(st));
}

}  // namespace troupe::cuda

#define CUDA_CHECK(call)                                                                                      \
  do {                                                                                                        \
    const cudaError_t _troupe_err = (call);                                                                   \
    if (_troupe_err != cudaSuccess) ::troupe::cuda::throw_cuda_error(#call, _troupe_err, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(call)                                                       \
  do {                                                                           \
    const cublasStatus_t _troupe_st = (call);                                    \
    if (_troupe_st != CUBLAS_STATUS_SUCCESS)                                     \
      ::troupe::cuda::throw_cublas_error(#call, _troupe_st, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: a bad configuration surfaces here, not at the next unrelated call.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
