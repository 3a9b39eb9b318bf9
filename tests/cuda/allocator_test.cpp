// The CUDA backend's runtime side: init() registers the caching allocator, tensors live
// on the device and come back unchanged, freed blocks are reused, errors name the call.

#include <cstring>

#include "core/tensor.h"
#include "cuda_test_util.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("cuda init registers the device allocator", "[cuda][allocator]") {
  CHECK(cuda::init() > 0);
  CHECK(cuda::init() > 0);  // idempotent
  Allocator* a = allocator_for(Device::cuda(0));
  REQUIRE(a != nullptr);
  CHECK(a->device() == Device::cuda(0));
  cudaPointerAttributes attr{};
  void* p = a->allocate(1000);
  CUDA_CHECK(cudaPointerGetAttributes(&attr, p));
  CHECK(attr.type == cudaMemoryTypeDevice);  // plain device memory, never managed
  a->deallocate(p, 1000);
}

TEST_CASE("cuda to_device and to_host round-trip a tensor", "[cuda][allocator]") {
  cuda::init();
  Tensor h = Tensor::from_vector(randn(6 * 7, 130, {1}), {6, 7});
  Tensor d = cuda::to_device(h);
  CHECK(d.device() == Device::cuda(0));
  CHECK(d.shape() == h.shape());
  Tensor back = cuda::to_host(d);
  CHECK(back.device().is_cpu());
  CHECK(std::memcmp(back.raw(), h.raw(), h.nbytes()) == 0);

  // a kernel on tensor memory: out = h + h
  Tensor out = Tensor::empty({6, 7}, DType::F32, Device::cuda(0));
  cuda::residual_forward(out.data<float>(), d.data<float>(), d.data<float>(), d.numel());
  const auto sum = cuda::to_host(out).to_vector(), x = h.to_vector();
  for (size_t i = 0; i < x.size(); i++) REQUIRE(sum[i] == x[i] + x[i]);

  // a strided view of the host tensor is made dense on the way
  Tensor col = cuda::to_host(cuda::to_device(h.transpose(0, 1)));
  CHECK(col.shape() == Shape({7, 6}));
  CHECK(col.to_vector() == h.transpose(0, 1).contiguous().to_vector());

  CHECK_THROWS_WITH(cuda::to_host(h), Catch::Contains("not a CUDA device"));
  CHECK_THROWS_WITH(cuda::to_device(d), Catch::Contains("not the CPU"));
}

TEST_CASE("cuda allocator caches freed blocks", "[cuda][allocator]") {
  cuda::init();
  cuda::release_cached(0);
  const PoolStats before = cuda::pool_stats(0);
  { Tensor t = Tensor::empty({1 << 20}, DType::F32, Device::cuda(0)); }
  const PoolStats mid = cuda::pool_stats(0);
  CHECK(mid.system_allocs == before.system_allocs + 1);
  CHECK(mid.bytes_cached >= (size_t(4) << 20));
  { Tensor t = Tensor::empty({1 << 20}, DType::F32, Device::cuda(0)); }
  const PoolStats after = cuda::pool_stats(0);
  CHECK(after.system_allocs == mid.system_allocs);  // served from the cache
  CHECK(after.pool_hits == mid.pool_hits + 1);
  CHECK(after.bytes_in_use == before.bytes_in_use);
  cuda::release_cached(0);
  CHECK(cuda::pool_stats(0).bytes_cached == 0);
}

TEST_CASE("cuda out of memory is an exception, not a crash", "[cuda][allocator]") {
  cuda::init();
  size_t free_bytes = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  CHECK_THROWS_WITH(Tensor::empty({int64_t(total)}, DType::F32, Device::cuda(0)), Catch::Contains("out of memory"));
  // and the device still works
  Tensor t = cuda::to_device(Tensor::from_vector({1.0f, 2.0f}, {2}));
  CHECK(cuda::to_host(t).to_vector() == std::vector<float>{1.0f, 2.0f});
}

TEST_CASE("CUDA_CHECK names the failed call, file and line", "[cuda][allocator]") {
  try {
    CUDA_CHECK(cudaSetDevice(1 << 20));
    FAIL("no exception");
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("cudaSetDevice(1 << 20)") && Catch::Contains("allocator_test.cpp:") &&
                        Catch::Contains("cudaErrorInvalidDevice"));
  }
  cudaGetLastError();
  CHECK_FALSE(cuda::device_summary().empty());
}
