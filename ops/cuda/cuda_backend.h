#pragma once
// The CUDA backend's runtime side: explicit initialization (registers the caching device
// allocator for DeviceKind::CUDA), device queries, host <-> device copies of Tensors and
// the GEMM precision switch. The kernels themselves are in cuda_ops.h.

#include <cuda_runtime_api.h>

#include <string>

#include "core/allocator.h"
#include "core/tensor.h"

namespace troupe::cuda {

// Registers the caching allocator for DeviceKind::CUDA (core/allocator.h); idempotent,
// nothing happens at static-initialization time. Needs no device: memory is taken on the
// first allocation. Returns the number of usable devices (0 when there is none).
int init();

// Usable CUDA devices; 0 when cudaGetDeviceCount fails (no driver, no device), with the
// runtime's reason in *reason if given.
int device_count(std::string* reason = nullptr);

// One line: runtime, driver, cuBLAS and NCCL versions, and each device (name, compute
// capability, SMs, memory), or why there is none.
std::string device_summary();

// The allocator registered for CUDA takes memory on the CALLING THREAD'S CURRENT device
// (cudaSetDevice): core's Allocator interface carries no device index, so a Tensor made
// with Device::cuda(i) must be made while device i is current (an actor sets its device
// once). Freed blocks stay cached per device and size class (PoolAllocator) and are
// handed out again without synchronization: safe when a device's work runs on one stream
// in order (a block freed while kernels still use it is only reused by work queued after
// them); with several streams, synchronize before dropping a tensor another stream uses.
PoolStats pool_stats(int device);
void release_cached(int device);  // returns the device's cached blocks to cudaFree

// Copies a (CPU) tensor into a new contiguous tensor on CUDA device `device`, and back.
// Both wait for the copy to finish, so the source may be dropped at once.
Tensor to_device(const Tensor& host, int device = 0, cudaStream_t stream = nullptr);
Tensor to_host(const Tensor& dev, cudaStream_t stream = nullptr);

// TF32 tensor cores for f32 GEMMs (linear). Off by default, so that results track the f32
// CPU kernels (TF32 keeps 10 mantissa bits: relative errors near 1e-3 instead of 1e-6).
void set_tf32(bool on);
bool tf32_enabled();

}  // namespace troupe::cuda
