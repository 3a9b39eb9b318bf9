#pragma once
// Little helpers for binary formats (GGUF, token files, checksums). Troupe targets
// little-endian hosts (x86-64, arm64), so little-endian fields load with memcpy.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace troupe {

template <class T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class T>
void append_le(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// FNV-1a, 64-bit: a fast checksum for token files and a stable hash of names (unlike
// std::hash, the same on every platform and standard library).
inline uint64_t fnv1a64(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}
inline uint64_t fnv1a64(std::string_view s) { return fnv1a64(s.data(), s.size()); }

}  // namespace troupe
