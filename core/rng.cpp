#include "core/rng.h"

#include <cmath>

namespace troupe {

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = uint64_t(a) * b;
  *hi = uint32_t(p >> 32);
  return uint32_t(p);
}

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; round++) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo(M0, c[0], &hi0);
    uint32_t lo1 = mulhilo(M1, c[2], &hi1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    k[0] += W0;
    k[1] += W1;
  }
  return c;
}

// splitmix64 finalizer: folds the stream ids into one well-mixed 64-bit stream number.
static uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

RngStream::RngStream(uint64_t seed, std::initializer_list<uint64_t> ids) : seed_(seed), stream_(0x5452u) {
  for (uint64_t id : ids) stream_ = mix64(stream_ ^ mix64(id));
}

uint32_t RngStream::bits(uint64_t i) const {
  uint64_t block = i >> 2;
  auto r = philox4x32_10({uint32_t(block), uint32_t(block >> 32), uint32_t(stream_), uint32_t(stream_ >> 32)},
                         {uint32_t(seed_), uint32_t(seed_ >> 32)});
  return r[i & 3];
}

float RngStream::normal(uint64_t i) const {
  // u1 in (0, 1] so that log is finite.
  float u1 = float((bits(2 * i) >> 8) + 1) * (1.0f / 16777216.0f);
  float u2 = uniform(2 * i + 1);
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853071795864f * u2);
}

void RngStream::fill_uniform(float* out, int64_t n, float lo, float hi, uint64_t offset) const {
  for (int64_t k = 0; k < n; k++) out[k] = lo + (hi - lo) * uniform(offset + uint64_t(k));
}

void RngStream::fill_normal(float* out, int64_t n, float mean, float stddev, uint64_t offset) const {
  for (int64_t k = 0; k < n; k++) out[k] = mean + stddev * normal(offset + uint64_t(k));
}

}  // namespace troupe
