#include "core/allocator.h"

#include <cstdlib>
#include <new>

#include "core/error.h"

namespace troupe {

namespace {

class CpuSystemAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    size_t n = (bytes + 63) & ~size_t(63);
    void* p = std::aligned_alloc(64, n ? n : 64);
    if (!p) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* p, size_t) override { std::free(p); }
  Device device() const override { return Device::cpu(); }
};

Allocator* g_allocators[2] = {nullptr, nullptr};

}  // namespace

size_t PoolAllocator::size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= (1u << 20)) return (bytes + 511) & ~size_t(511);
  size_t p = size_t(1) << (63 - __builtin_clzll(bytes - 1));  // largest power of two < bytes
  size_t step = p / 4;
  return (bytes + step - 1) / step * step;
}

PoolAllocator::PoolAllocator(Allocator* upstream) : upstream_(upstream) {}
PoolAllocator::~PoolAllocator() { release_cached(); }

void* PoolAllocator::allocate(size_t bytes) {
  size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lk(mu_);
  auto it = free_.find(cls);
  void* p = nullptr;
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    stats_.bytes_cached -= cls;
    stats_.pool_hits++;
  } else {
    p = upstream_->allocate(cls);
    stats_.system_allocs++;
  }
  stats_.bytes_in_use += cls;
  if (stats_.bytes_in_use > stats_.peak_in_use) stats_.peak_in_use = stats_.bytes_in_use;
  return p;
}

void PoolAllocator::deallocate(void* p, size_t bytes) {
  if (!p) return;
  size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lk(mu_);
  free_[cls].push_back(p);
  stats_.bytes_in_use -= cls;
  stats_.bytes_cached += cls;
}

PoolStats PoolAllocator::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void PoolAllocator::release_cached() {
  std::lock_guard<std::mutex> lk(mu_);
  for (auto& [cls, list] : free_)
    for (void* p : list) upstream_->deallocate(p, cls);
  free_.clear();
  stats_.bytes_cached = 0;
}

Allocator* cpu_system_allocator() {
  static CpuSystemAllocator a;
  return &a;
}

PoolAllocator* cpu_pool_allocator() {
  // Leaked on purpose: tensors in static storage may outlive any destructor order.
  static PoolAllocator* pool = new PoolAllocator(cpu_system_allocator());
  return pool;
}

void register_allocator(DeviceKind kind, Allocator* a) { g_allocators[int(kind)] = a; }

Allocator* allocator_for(Device d) {
  if (d.kind == DeviceKind::CPU) return g_allocators[0] ? g_allocators[0] : cpu_pool_allocator();
  Allocator* a = g_allocators[int(d.kind)];
  TROUPE_CHECK(a != nullptr, "no allocator registered for device %s (built without that backend?)",
               d.str().c_str());
  return a;
}

}  // namespace troupe
