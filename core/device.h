#pragma once
// Where a tensor's bytes live. core knows devices by name only; the CUDA allocator is
// registered by ops/cuda when that backend is built.

#include <cstdint>
#include <string>

namespace troupe {

enum class DeviceKind : uint8_t { CPU = 0, CUDA = 1 };

struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {DeviceKind::CUDA, i}; }
  bool is_cpu() const { return kind == DeviceKind::CPU; }
  bool operator==(const Device&) const = default;
  std::string str() const { return kind == DeviceKind::CPU ? "cpu" : "cuda:" + std::to_string(index); }
};

}  // namespace troupe
