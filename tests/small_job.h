#pragma once
// The small job the coordinator and console tests run: a 4-layer Llama (d = 32) as 2
// pipeline stages with 4 microbatches of 2 sequences, 6 steps, a snapshot after every
// step, on a synthetic token file (97 token kinds).

#include <filesystem>
#include <string>
#include <vector>

#include "core/data.h"
#include "core/job.h"
#include "core/rng.h"

namespace troupe::testing {

// DIR/tokens.tok: 20,000 tokens drawn from RngStream(12, {stream}).
inline std::string synthetic_token_file(const std::filesystem::path& dir, uint64_t stream) {
  std::filesystem::create_directories(dir);
  std::string path = (dir / "tokens.tok").string();
  std::vector<int32_t> ids(20000);
  RngStream r(12, {stream});
  for (size_t i = 0; i < ids.size(); i++) ids[i] = int32_t(r.bits(i) % 97);
  data::write_token_file(path, ids, 97).value();
  return path;
}

inline JobConfig small_job(const std::string& tokens) {
  JobConfig job;
  job.model.arch = "llama";
  job.model.n_layer = 4;
  job.model.n_head = 4;
  job.model.n_kv_head = 2;
  job.model.d_model = 32;
  job.model.d_ff = 64;
  job.model.max_seq_len = 16;
  job.data.tokens = tokens;
  job.data.seq_len = 16;
  job.data.batch_size = 8;
  job.parallel.pp = 2;
  job.parallel.microbatches = 4;
  job.train.steps = 6;
  job.checkpoint.snapshot_every = 1;
  job.validate().value();
  return job;
}

}  // namespace troupe::testing
