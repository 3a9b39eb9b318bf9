#pragma once
// Pooling allocator: freed blocks are kept in per-size-class free lists and handed out
// again, so a training step that allocates the same shapes every iteration stops
// calling malloc after the first step. Blocks are 64-byte aligned (one cache line,
// one AVX-512 vector).

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/device.h"

namespace troupe {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p, size_t bytes) = 0;
  virtual Device device() const = 0;
};

struct PoolStats {
  size_t bytes_in_use = 0;     // handed out and not yet returned
  size_t bytes_cached = 0;     // held in free lists
  size_t peak_in_use = 0;
  uint64_t system_allocs = 0;  // calls that reached the system allocator
  uint64_t pool_hits = 0;      // requests served from a free list
};

class PoolAllocator final : public Allocator {
 public:
  explicit PoolAllocator(Allocator* upstream);
  ~PoolAllocator() override;
  void* allocate(size_t bytes) override;
  void deallocate(void* p, size_t bytes) override;
  Device device() const override { return upstream_->device(); }
  PoolStats stats() const;
  void release_cached();  // return all cached blocks to the upstream allocator

  // Sizes are rounded up to a size class: multiples of 512 B below 1 MiB, then
  // powers of two split in four steps, so waste stays under 25%.
  static size_t size_class(size_t bytes);

 private:
  Allocator* upstream_;
  mutable std::mutex mu_;  // the pool is shared by the threads of one actor's kernels
  std::unordered_map<size_t, std::vector<void*>> free_;
  PoolStats stats_;
};

Allocator* cpu_system_allocator();
PoolAllocator* cpu_pool_allocator();  // process-wide default for CPU tensors

// Backends register an allocator for their device kind (ops/cuda does for CUDA).
void register_allocator(DeviceKind kind, Allocator* a);
Allocator* allocator_for(Device d);

}  // namespace troupe
