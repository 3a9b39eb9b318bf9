// Caching device allocator for DeviceKind::CUDA and host <-> device tensor copies.
//
// cudaMalloc and cudaFree are slow (and cudaFree synchronizes the device), so blocks are
// cached: one core PoolAllocator per device (size classes, free lists) over a plain
// cudaMalloc/cudaFree upstream. Never managed memory. The registered allocator picks the
// pool of the current device and remembers each block's device for its release.

#include <cuda_runtime_api.h>

#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_check.h"

namespace troupe::cuda {

namespace {

// Makes `device` current for a scope, then restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }  // no throw from a destructor
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// Upstream of a pool: cudaMalloc / cudaFree on one device.
class CudaMallocAllocator final : public Allocator {
 public:
  explicit CudaMallocAllocator(int device) : device_(device) {}
  void* allocate(size_t bytes) override {
    DeviceGuard g(device_);
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear it: running out of memory is not a sticky error
      throw std::bad_alloc();
    }
    CUDA_CHECK(err);
    return p;
  }
  void deallocate(void* p, size_t) override {
    DeviceGuard g(device_);
    CUDA_CHECK(cudaFree(p));
  }
  Device device() const override { return Device::cuda(device_); }

 private:
  int device_;
};

class CachingCudaAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    PoolAllocator* pool = pool_for(device);
    void* p = nullptr;
    try {
      p = pool->allocate(bytes);
    } catch (const std::bad_alloc&) {
      // the cache may hold what is missing: give it back and try once more
      pool->release_cached();
      try {
        p = pool->allocate(bytes);
      } catch (const std::bad_alloc&) {
        throw std::runtime_error(strformat("CUDA device %d: out of memory allocating %zu bytes (%zu in use)", device,
                                           bytes, pool->stats().bytes_in_use));
      }
    }
    std::lock_guard<std::mutex> lk(mu_);
    owner_[p] = device;
    return p;
  }

  void deallocate(void* p, size_t bytes) override {
    if (!p) return;
    int device = 0;
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = owner_.find(p);
      TROUPE_CHECK(it != owner_.end(), "CUDA allocator: freeing a block it did not allocate");
      device = it->second;
      owner_.erase(it);
    }
    pool_for(device)->deallocate(p, bytes);
  }

  Device device() const override {
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    return Device::cuda(device);
  }

  PoolAllocator* pool_for(int device) {
    std::lock_guard<std::mutex> lk(mu_);
    TROUPE_CHECK(device >= 0 && device < 1024, "CUDA device index %d", device);
    if (size_t(device) >= pools_.size()) pools_.resize(size_t(device) + 1);
    auto& slot = pools_[size_t(device)];
    if (!slot.pool) {
      slot.upstream = std::make_unique<CudaMallocAllocator>(device);
      slot.pool = std::make_unique<PoolAllocator>(slot.upstream.get());
    }
    return slot.pool.get();
  }

 private:
  struct Slot {
    std::unique_ptr<CudaMallocAllocator> upstream;
    std::unique_ptr<PoolAllocator> pool;
  };
  std::mutex mu_;
  std::vector<Slot> pools_;
  std::unordered_map<void*, int> owner_;
};

CachingCudaAllocator* caching_allocator() {
  // Leaked on purpose: device tensors in static storage may outlive any destructor order,
  // and cudaFree after the runtime shut down would fail.
  static auto* a = new CachingCudaAllocator();
  return a;
}

}  // namespace

int init() {
  register_allocator(DeviceKind::CUDA, caching_allocator());
  return device_count();
}

PoolStats pool_stats(int device) {
  return caching_allocator()->pool_for(device)->stats();
}

void release_cached(int device) {
  caching_allocator()->pool_for(device)->release_cached();
}

Tensor to_device(const Tensor& host, int device, cudaStream_t stream) {
  TROUPE_CHECK(host.device().is_cpu(), "to_device: the source is on %s, not the CPU", host.device().str().c_str());
  const Tensor src = host.contiguous();
  DeviceGuard g(device);
  Tensor dst = Tensor::empty(src.shape(), src.dtype(), Device::cuda(device));
  if (src.nbytes() > 0) {
    CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  return dst;
}

Tensor to_host(const Tensor& dev, cudaStream_t stream) {
  TROUPE_CHECK(dev.device().kind == DeviceKind::CUDA, "to_host: the source is on %s, not a CUDA device",
               dev.device().str().c_str());
  TROUPE_CHECK(dev.is_contiguous(), "to_host: the device tensor %s is a strided view; copy it dense first",
               dev.str().c_str());
  Tensor dst = Tensor::empty(dev.shape(), dev.dtype());
  if (dev.nbytes() > 0) {
    DeviceGuard g(dev.device().index);
    CUDA_CHECK(cudaMemcpyAsync(dst.raw(), dev.raw(), dev.nbytes(), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  return dst;
}

}  // namespace troupe::cuda
