#pragma once
// Helpers shared by the tests: paths to committed fixtures and fetched data, and
// closeness checks that report the worst element.

#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

namespace troupe::test {

inline std::string source_path(const std::string& rel) { return std::string(TROUPE_SOURCE_DIR) + "/" + rel; }
inline std::string fixture_path(const std::string& rel) { return source_path("tests/fixtures/" + rel); }
// Data fetched by scripts/setup.sh (git-ignored). TROUPE_DATA overrides the folder.
inline std::string data_path(const std::string& rel) {
  const char* env = std::getenv("TROUPE_DATA");
  return std::string(env ? env : TROUPE_DATA_DIR) + "/" + rel;
}

// Largest |a - b| over the arrays, and where.
struct MaxDiff {
  double diff = 0;
  size_t index = 0;
};
inline MaxDiff max_abs_diff(const float* a, const float* b, size_t n) {
  MaxDiff m;
  for (size_t i = 0; i < n; i++) {
    double d = std::fabs(double(a[i]) - double(b[i]));
    if (d > m.diff || std::isnan(d)) m = {std::isnan(d) ? INFINITY : d, i};
  }
  return m;
}
inline double max_abs(const float* a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = std::max(m, std::fabs(double(a[i])));
  return m;
}

}  // namespace troupe::test

// CHECK that two float arrays agree within an absolute tolerance, naming the worst index.
#define CHECK_CLOSE_ARRAYS(a, b, n, tol)                                            \
  do {                                                                              \
    auto _md = ::troupe::test::max_abs_diff((a), (b), (n));                         \
    INFO("max |diff| = " << _md.diff << " at index " << _md.index << " (tol " << (tol) << ")"); \
    CHECK(_md.diff <= (tol));                                                       \
  } while (0)
