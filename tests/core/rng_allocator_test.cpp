#include <cmath>
#include <vector>

#include "core/allocator.h"
#include "core/rng.h"
#include "test_util.h"

using namespace troupe;

TEST_CASE("philox matches the Random123 known-answer vectors", "[rng]") {
  // Known-answer tests from Random123's kat_vectors for philox4x32_10.
  auto r0 = philox4x32_10({0, 0, 0, 0}, {0, 0});
  CHECK(r0 == std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  auto r1 = philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu});
  CHECK(r1 == std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  auto r2 = philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u});
  CHECK(r2 == std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
}

TEST_CASE("rng streams are independent of how the work is split", "[rng]") {
  RngStream s(1234, {7, 3, 2});  // step 7, microbatch 3, layer 2
  std::vector<float> whole(1000), parts(1000);
  s.fill_normal(whole.data(), 1000, 0.0f, 1.0f);
  s.fill_normal(parts.data(), 333, 0.0f, 1.0f, 0);
  s.fill_normal(parts.data() + 333, 667, 0.0f, 1.0f, 333);
  CHECK(whole == parts);
  RngStream other(1234, {7, 3, 3});
  CHECK(other.stream_id() != s.stream_id());
  CHECK(other.normal(0) != s.normal(0));
  double mean = 0, var = 0;
  const int n = 200000;
  for (int i = 0; i < n; i++) mean += s.normal(uint64_t(i));
  mean /= n;
  for (int i = 0; i < n; i++) var += (s.normal(uint64_t(i)) - mean) * (s.normal(uint64_t(i)) - mean);
  var /= n;
  CHECK(std::fabs(mean) < 0.01);      // 4.5 sigma of the sample mean
  CHECK(std::fabs(var - 1.0) < 0.02);
}

TEST_CASE("pool allocator reuses freed blocks by size class", "[allocator]") {
  PoolAllocator pool(cpu_system_allocator());
  void* a = pool.allocate(1000);
  CHECK(reinterpret_cast<uintptr_t>(a) % 64 == 0);
  pool.deallocate(a, 1000);
  void* b = pool.allocate(900);  // same 1024-byte class
  CHECK(b == a);
  auto st = pool.stats();
  CHECK(st.system_allocs == 1);
  CHECK(st.pool_hits == 1);
  CHECK(st.bytes_in_use == 1024);
  pool.deallocate(b, 900);
  CHECK(PoolAllocator::size_class(3u << 20) == (3u << 20));
  CHECK(PoolAllocator::size_class((4u << 20) + 1) == (5u << 20));
  pool.release_cached();
  CHECK(pool.stats().bytes_cached == 0);
}
