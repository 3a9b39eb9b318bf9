#pragma once
// The console's wire: one TCP connection per console, carrying one JSON object per line
// in each direction (docs/ARCHITECTURE.md, "Console"). Plain POSIX sockets: the
// messages are small and few, and the console must not depend on the data plane.

#include <string>

#include "core/error.h"

namespace troupe::console {

struct HostPort {
  std::string host;
  int port = 0;
  std::string str() const { return host + ":" + std::to_string(port); }
};
// "HOST:PORT", "PORT" (host 127.0.0.1) or ":PORT"; the error quotes the text.
Expected<HostPort> parse_host_port(const std::string& s);

class LineSocket {
 public:
  LineSocket() = default;
  explicit LineSocket(int fd) : fd_(fd) {}
  ~LineSocket();
  LineSocket(LineSocket&& o) noexcept;
  LineSocket& operator=(LineSocket&& o) noexcept;
  LineSocket(const LineSocket&) = delete;
  LineSocket& operator=(const LineSocket&) = delete;

  static Expected<LineSocket> connect(const HostPort& to, int timeout_ms);
  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  // The next line (without '\\n'); an error when the peer closed or after timeout_ms
  // (-1: wait forever). Lines longer than max_line are an error.
  Expected<std::string> read_line(int timeout_ms = -1, size_t max_line = size_t(1) << 24);
  // True when a whole line is buffered or the socket is readable now.
  bool readable(int timeout_ms);
  Expected<void> write_line(const std::string& line);
  void shutdown();  // wakes a reader blocked on this socket (another thread)
  void close();

 private:
  int fd_ = -1;
  std::string buf_;
};

// Listens on `at` (port 0: any free one); the bound address, with the real port, is
// written to *bound.
Expected<int> listen_on(const HostPort& at, HostPort* bound);

// Bytes from the system's random source as hex (a console token).
std::string random_token(size_t bytes = 16);
// Compares in time independent of where they differ.
bool same_token(const std::string& a, const std::string& b);

}  // namespace troupe::console
