#pragma once
// Helpers for the CUDA kernel tests: device arrays filled from host vectors, poisoning
// (so that an output the kernel never wrote shows up as NaN), and tolerances scaled to
// the reference's magnitude. Random inputs, bitwise comparison and CHECK_CLOSE_ARRAYS
// come from the CPU kernel tests' helpers.

#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "ops/cuda/cuda_check.h"
#include "ops/ops_test_util.h"

namespace troupe::test {

// A device array of n elements (plain cudaMalloc), freed on scope exit.
template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    p_ = static_cast<T*>(p);
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == n_);
    CUDA_CHECK(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  // Waits for all work on the device, then copies back.
  std::vector<T> download() const {
    std::vector<T> h(n_);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  // All bytes 0xFF: a float NaN, so an element the kernel under test never wrote fails
  // every closeness check.
  void poison() { CUDA_CHECK(cudaMemset(p_, 0xFF, n_ * sizeof(T))); }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// rtol * max(1, max |ref|): an absolute tolerance for values of the reference's size.
inline double scaled_tol(const std::vector<float>& ref, double rtol) {
  return rtol * std::max(1.0, max_abs(ref.data(), ref.size()));
}

// n integers in [0, V) from the stream keyed by (seed, ids).
inline std::vector<int32_t> rand_tokens(size_t n, int V, uint64_t seed, std::initializer_list<uint64_t> ids) {
  std::vector<int32_t> t(n);
  RngStream rng(seed, ids);
  for (size_t i = 0; i < n; i++) t[i] = int32_t(rng.bits(i) % uint32_t(V));
  return t;
}

}  // namespace troupe::test
