// Device queries for the CUDA backend: how many devices, and a one-line summary of the
// runtime, libraries and devices (printed by `troupe version` and the GPU tests).

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdio>
#include <string>

#include "ops/cuda/cuda_backend.h"

namespace troupe::cuda {

namespace {

std::string version_string(int v) {  // CUDA's 1000 * major + 10 * minor
  return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

}  // namespace

int device_count(std::string* reason) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it, so that later calls do not report it again
    if (reason) *reason = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    return 0;
  }
  if (n == 0 && reason) *reason = "cudaGetDeviceCount found no device";
  return n;
}

std::string device_summary() {
  int runtime = 0, driver = 0, cublas_major = 0, cublas_minor = 0, cublas_patch = 0, nccl = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  cublasGetProperty(MAJOR_VERSION, &cublas_major);
  cublasGetProperty(MINOR_VERSION, &cublas_minor);
  cublasGetProperty(PATCH_LEVEL, &cublas_patch);
  ncclGetVersion(&nccl);
  std::string s = "runtime " + version_string(runtime) + ", driver " + (driver ? version_string(driver) : "none") +
                  ", cuBLAS " + std::to_string(cublas_major) + "." + std::to_string(cublas_minor) + "." +
                  std::to_string(cublas_patch) + ", NCCL " + std::to_string(nccl / 10000) + "." +
                  std::to_string(nccl / 100 % 100) + "." + std::to_string(nccl % 100);
  std::string reason;
  const int n = device_count(&reason);
  if (n == 0) return s + "; no device (" + reason + ")";
  for (int i = 0; i < n; i++) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
      cudaGetLastError();
      s += "; [" + std::to_string(i) + "] unreadable";
      continue;
    }
    char mem[32];
    std::snprintf(mem, sizeof mem, "%.1f GiB", double(p.totalGlobalMem) / double(1ull << 30));
    s += "; [" + std::to_string(i) + "] " + p.name + ", sm_" + std::to_string(p.major) + std::to_string(p.minor) +
         ", " + std::to_string(p.multiProcessorCount) + " SMs, " + mem;
  }
  return s;
}

}  // namespace troupe::cuda
