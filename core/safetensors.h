#pragma once
// safetensors: an 8-byte little-endian header length, a JSON header mapping each tensor
// name to {dtype, shape, data_offsets} (plus an optional "__metadata__" string map),
// then the raw little-endian data. Every header field is validated before any byte is
// trusted: offsets inside the data section, sizes equal to numel x dtype size, no
// overlaps, a header no larger than the file.

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace troupe {

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  size_t begin = 0, end = 0;  // byte offsets within the data section
};

class SafetensorsFile {
 public:
  static Expected<SafetensorsFile> open(const std::string& path);
  // Parses a buffer the caller keeps alive (tests, in-memory checkpoints).
  static Expected<SafetensorsFile> parse(const uint8_t* data, size_t size, std::string name);

  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsEntry* find(const std::string& name) const;
  // A CPU tensor holding a copy of the named tensor's data.
  Expected<Tensor> tensor(const std::string& name) const;
  const std::string& path() const { return name_; }

 private:
  std::string name_;
  std::shared_ptr<const void> mapping_;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any dtype, contiguous or not) and metadata to path atomically.
Expected<void> write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                 const std::map<std::string, std::string>& metadata = {});
// The same bytes, in memory.
std::string encode_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata = {});

}  // namespace troupe
