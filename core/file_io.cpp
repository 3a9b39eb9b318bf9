#include "core/file_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace troupe {

Expected<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error(strformat("%s: cannot open: %s", path.c_str(), std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int e = errno;
    ::close(fd);
    return make_error(strformat("%s: not a regular file%s%s", path.c_str(), e ? ": " : "", e ? std::strerror(e) : ""));
  }
  MappedFile f;
  f.path = path;
  f.size = size_t(st.st_size);
  if (f.size == 0) {
    ::close(fd);
    return f;
  }
  void* m = ::mmap(nullptr, f.size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (m == MAP_FAILED)
    return make_error(strformat("%s: mmap of %zu bytes failed: %s", path.c_str(), f.size, std::strerror(e)));
  size_t size = f.size;
  f.owner = std::shared_ptr<const void>(m, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
  f.data = static_cast<const uint8_t*>(m);
  return f;
}

Expected<void> write_file_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& pieces) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return make_error(strformat("%s: cannot create: %s", tmp.c_str(), std::strerror(errno)));
  auto fail = [&](const char* what) {
    int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return make_error(strformat("%s: %s: %s", tmp.c_str(), what, std::strerror(e)));
  };
  for (auto& [p, n] : pieces) {
    const char* c = static_cast<const char*>(p);
    size_t left = n;
    while (left > 0) {
      ssize_t w = ::write(fd, c, left);
      if (w < 0) {
        if (errno == EINTR) continue;
        return fail("write failed");
      }
      c += w;
      left -= size_t(w);
    }
  }
  if (::fsync(fd) != 0) return fail("fsync failed");
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return make_error(strformat("%s: close failed: %s", tmp.c_str(), std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return make_error(strformat("%s: rename to %s failed: %s", tmp.c_str(), path.c_str(), std::strerror(e)));
  }
  auto slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // make the rename durable
    ::close(dfd);
  }
  return {};
}

}  // namespace troupe
