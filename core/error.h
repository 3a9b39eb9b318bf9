#pragma once
// Errors are values at boundaries: a function that can fail on bad input returns
// Expected<T>, whose Error names the file, field or offset at fault.

#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace troupe {

struct Error {
  std::string message;
};

// Formats like printf; used to build messages such as "model.gguf: offset 1234: ...".
std::string strformat(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

inline Error make_error(std::string msg) { return Error{std::move(msg)}; }

template <class T>
class Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}
  Expected(Error err) : v_(std::move(err)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { check(); return std::get<0>(v_); }
  T&& value() && { check(); return std::get<0>(std::move(v_)); }
  const T& value() const& { check(); return std::get<0>(v_); }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  void check() const {
    if (!ok()) throw std::runtime_error(std::get<1>(v_).message);
  }
  std::variant<T, Error> v_;
};

template <>
class Expected<void> {
 public:
  Expected() = default;
  Expected(Error err) : err_(std::move(err)), ok_(false) {}
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return err_; }
  void value() const {
    if (!ok_) throw std::runtime_error(err_.message);
  }

 private:
  Error err_;
  bool ok_ = true;
};

// Inside a layer, invariant violations throw; TROUPE_CHECK names the failed condition.
#define TROUPE_CHECK(cond, ...)                                                       \
  do {                                                                                \
    if (!(cond))                                                                      \
      throw std::runtime_error(::troupe::strformat("%s:%d: check failed: %s: ", __FILE__, \
                                                   __LINE__, #cond) +                 \
                               ::troupe::strformat(__VA_ARGS__));                     \
  } while (0)

}  // namespace troupe
