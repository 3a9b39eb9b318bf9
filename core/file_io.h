#pragma once
// File helpers shared by the readers and writers of core/: read-only mappings that
// tensors can view, and atomic publication (write PATH.tmp, fsync, rename), so a crash
// never leaves a half-written file under the final name.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace troupe {

struct MappedFile {
  std::shared_ptr<const void> owner;  // keeps the mapping alive; null for an empty file
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::string path;

  static Expected<MappedFile> open(const std::string& path);
};

// Writes the pieces in order to path + ".tmp", fsyncs, renames over path and fsyncs the
// directory. On failure the temporary is removed and path is untouched.
Expected<void> write_file_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& pieces);

}  // namespace troupe
