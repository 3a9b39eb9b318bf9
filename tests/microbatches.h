#pragma once
// Random microbatches for the pipeline tests: tokens and targets drawn from the
// counter-based RNG keyed by (seed, step), so every test run sees the same data.

#include <cstdint>
#include <vector>

#include "actors/stage_executor.h"
#include "core/rng.h"

namespace troupe::testing {

inline std::vector<pipeline::Microbatch> random_microbatches(uint64_t seed, int m, int B, int T, int V, int64_t step) {
  std::vector<pipeline::Microbatch> out;
  RngStream r(seed, {uint64_t(step)});
  uint64_t k = 0;
  for (int i = 0; i < m; i++) {
    pipeline::Microbatch mb{B, T, {}, {}};
    for (int j = 0; j < B * T; j++) {
      mb.tokens.push_back(int32_t(r.bits(k++) % uint32_t(V)));
      mb.targets.push_back(int32_t(r.bits(k++) % uint32_t(V)));
    }
    out.push_back(std::move(mb));
  }
  return out;
}

}  // namespace troupe::testing
