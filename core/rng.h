#pragma once
// Counter-based RNG (Philox4x32-10, Salmon et al. 2011). A stream is keyed by the run's
// seed and a tuple of ids (for example step, microbatch, layer); the i-th number of a
// stream depends only on (seed, ids, i). So any split of the work across actors,
// threads or restarts draws the same numbers: no generator state to carry around
// beyond a position.

#include <array>
#include <cstdint>
#include <initializer_list>

namespace troupe {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

class RngStream {
 public:
  RngStream(uint64_t seed, std::initializer_list<uint64_t> ids = {});
  uint64_t stream_id() const { return stream_; }

  // 32 random bits: the i-th draw of this stream.
  uint32_t bits(uint64_t i) const;
  // Uniform in [0, 1) with 24 bits of mantissa.
  float uniform(uint64_t i) const { return float(bits(i) >> 8) * (1.0f / 16777216.0f); }
  // Standard normal from draws 2i and 2i+1 (Box-Muller).
  float normal(uint64_t i) const;

  // Fill out[k] with draws offset+k; the result does not depend on how callers split ranges.
  void fill_uniform(float* out, int64_t n, float lo, float hi, uint64_t offset = 0) const;
  void fill_normal(float* out, int64_t n, float mean, float stddev, uint64_t offset = 0) const;

 private:
  uint64_t seed_;
  uint64_t stream_;
};

}  // namespace troupe
