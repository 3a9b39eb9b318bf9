#pragma once
// Checkpoints: one safetensors shard per stage actor plus a manifest (step, layout, data
// position, a checksum per shard), written into DIR/step-NNNNNNNN.tmp and published by
// renaming the folder, so a crash never leaves a half checkpoint that looks whole.
// Tensors are saved by parameter name (with the AdamW moments as "adam_m.NAME" and
// "adam_v.NAME"), so a checkpoint loads into any pipeline / data-parallel layout.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "ops/model/optimizer.h"

namespace troupe::ckpt {

struct StageSnapshot {
  std::string name;  // "stage0", ...
  std::vector<std::pair<std::string, Tensor>> tensors;  // copies in host memory
  int optimizer_steps = 0;
};

// Copies a stage's parameters and optimizer moments (the step goes on meanwhile).
StageSnapshot snapshot_stage(const std::string& name, model::Transformer& m, model::AdamW& opt);
// Loads this stage's parameters and moments from tensors gathered from all shards.
Expected<void> restore_stage(model::Transformer& m, model::AdamW& opt, const std::map<std::string, Tensor>& tensors,
                             int optimizer_steps);

struct Manifest {
  int64_t step = 0;          // steps completed: training resumes at this step
  std::string layout;        // e.g. "pp=2 dp=1", informational
  int64_t data_seed = 0;     // with step, the data position (batches are a function of both)
  int optimizer_steps = 0;
  std::vector<std::pair<std::string, uint64_t>> shards;  // file name, FNV-1a of its bytes
};

// Writes the snapshots as DIR/step-NNNNNNNN/ and keeps the newest `keep` checkpoints.
// after_shard (if set) runs after each shard file is complete; an exception from it
// abandons the write half-way (fault injection tests that this never publishes).
Expected<std::string> write_checkpoint(const std::string& dir, const Manifest& manifest,
                                       const std::vector<StageSnapshot>& stages, int keep,
                                       const std::function<void(const std::string& shard)>& after_shard = {});

struct Loaded {
  std::string path;
  Manifest manifest;
  std::map<std::string, Tensor> tensors;  // the union of all shards
  std::vector<std::string> warnings;      // checkpoints skipped, naming the bad file
};
// The newest checkpoint in dir whose manifest and shards verify; older ones are tried
// when a newer one is damaged. An error when none verifies.
Expected<Loaded> load_latest_checkpoint(const std::string& dir);

}  // namespace troupe::ckpt
