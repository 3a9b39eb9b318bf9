#include "apps/console_net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace troupe::console {

Expected<HostPort> parse_host_port(const std::string& s) {
  HostPort hp{"127.0.0.1", 0};
  std::string port = s;
  if (auto colon = s.rfind(':'); colon != std::string::npos) {
    if (colon > 0) hp.host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  char* end = nullptr;
  long p = port.empty() ? -1 : std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end || p < 0 || p > 65535)
    return make_error("'" + s + "': expected HOST:PORT or PORT (a port from 0 to 65535)");
  hp.port = int(p);
  return hp;
}

LineSocket::~LineSocket() { close(); }
LineSocket::LineSocket(LineSocket&& o) noexcept : fd_(o.fd_), buf_(std::move(o.buf_)) { o.fd_ = -1; }
LineSocket& LineSocket::operator=(LineSocket&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_, buf_ = std::move(o.buf_);
    o.fd_ = -1;
  }
  return *this;
}

void LineSocket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void LineSocket::shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

static Expected<addrinfo*> resolve(const HostPort& hp, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(hp.host.c_str(), std::to_string(hp.port).c_str(), &hints, &res);
  if (rc != 0) return make_error(hp.str() + ": " + gai_strerror(rc));
  return res;
}

Expected<LineSocket> LineSocket::connect(const HostPort& to, int timeout_ms) {
  auto res = resolve(to, false);
  if (!res) return res.error();
  std::string last = "no address";
  for (addrinfo* a = *res; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc < 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = ::poll(&p, 1, timeout_ms) == 1 ? 0 : -1;
      int err = 0;
      socklen_t len = sizeof err;
      if (rc == 0) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (rc != 0) errno = ETIMEDOUT;
      else if (err) errno = err, rc = -1;
    }
    if (rc == 0) {
      fcntl(fd, F_SETFL, flags);
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      freeaddrinfo(*res);
      return LineSocket(fd);
    }
    last = std::strerror(errno);
    ::close(fd);
  }
  freeaddrinfo(*res);
  return make_error("cannot connect to " + to.str() + ": " + last);
}

bool LineSocket::readable(int timeout_ms) {
  if (buf_.find('\n') != std::string::npos) return true;
  pollfd p{fd_, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

Expected<std::string> LineSocket::read_line(int timeout_ms, size_t max_line) {
  for (;;) {
    if (auto nl = buf_.find('\n'); nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return line;
    }
    if (buf_.size() > max_line) return make_error(strformat("a line longer than %zu bytes", max_line));
    if (fd_ < 0) return make_error("not connected");
    pollfd p{fd_, POLLIN, 0};
    int rc = ::poll(&p, 1, timeout_ms);
    if (rc == 0) return make_error("timed out");
    if (rc < 0) {
      if (errno == EINTR) return make_error("interrupted");
      return make_error(std::strerror(errno));
    }
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n == 0) return make_error("connection closed");
    if (n < 0) {
      if (errno == EINTR) return make_error("interrupted");
      return make_error(std::strerror(errno));
    }
    buf_.append(tmp, size_t(n));
  }
}

Expected<void> LineSocket::write_line(const std::string& line) {
  std::string s = line + "\n";
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(std::strerror(errno));
    }
    off += size_t(n);
  }
  return {};
}

Expected<int> listen_on(const HostPort& at, HostPort* bound) {
  auto res = resolve(at, true);
  if (!res) return res.error();
  std::string last = "no address";
  for (addrinfo* a = *res; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 16) == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
      int port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                          : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      if (bound) *bound = HostPort{at.host, port};
      freeaddrinfo(*res);
      return fd;
    }
    last = std::strerror(errno);
    ::close(fd);
  }
  freeaddrinfo(*res);
  return make_error("cannot listen on " + at.str() + ": " + last);
}

std::string random_token(size_t bytes) {
  std::ifstream in("/dev/urandom", std::ios::binary);
  std::string raw(bytes, '\0');
  in.read(raw.data(), std::streamsize(bytes));
  if (!in) throw std::runtime_error("cannot read /dev/urandom for a console token");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) out += hex[c >> 4], out += hex[c & 15];
  return out;
}

bool same_token(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); i++) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.size() ? b.size() : 1)]);
  return diff == 0 && !a.empty();
}

}  // namespace troupe::console
