#pragma once
// A Troupe job file (TOML): model, data, optimizer, training, parallel layout,
// checkpoint policy, supervision policy and fault injection. Every key is known;
// unknown keys and wrong types are rejected with "file:line: field: what is wrong".
// `--set a.b=value` overrides are applied on top with the same checks.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"

namespace troupe {

struct JobConfig {
  std::string source = "<defaults>";  // file name, for messages
  std::map<std::string, int> lines;   // "section.key" -> line in the file, for messages

  struct Model {
    std::string arch = "gpt2";  // gpt2 | llama
    int n_layer = 4, n_head = 4, n_kv_head = 0;  // 0: = n_head
    int d_model = 128, d_ff = 0;                 // 0: 4 * d_model
    int vocab_size = 0;                          // 0: from the tokenizer
    int max_seq_len = 128;
    double norm_eps = 1e-5, rope_theta = 10000.0;
  } model;

  struct Data {
    std::string tokens = "data/austen.tok";
    std::string tokenizer = "data/SmolLM2-135M-Instruct.Q4_1.gguf";
    int batch_size = 8;  // sequences per optimizer step, over all replicas and microbatches
    int seq_len = 128;
    double val_fraction = 0.05;
    int64_t seed = 1337;
  } data;

  struct Optimizer {
    double lr = 1e-3, min_lr = 1e-4;
    int warmup_steps = 50;
    double weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, grad_clip = 1.0;
  } optimizer;

  struct Train {
    int steps = 100;
    int val_every = 50;
    int val_batches = 4;
    int threads = 0;
  } train;

  struct Parallel {
    int dp = 1, pp = 1, microbatches = 1;
    std::string schedule = "1f1b";  // gpipe | 1f1b | interleaved
    int virtual_stages = 1;         // model chunks per pipeline actor (interleaved)
  } parallel;

  struct Checkpoint {
    std::string dir = "out/checkpoints";
    int snapshot_every = 5;  // in-memory snapshot every N steps (0: off)
    int disk_every = 0;      // written to disk every M steps (0: off)
    int keep = 3;            // disk checkpoints kept
  } checkpoint;

  struct Supervision {
    std::string strategy = "one_for_all";  // one_for_one | one_for_all | rest_for_one
    int max_restarts = 3;
    double within_seconds = 60;
  } supervision;

  struct Fault {
    std::vector<std::string> kill;  // "stage1@step7:backward", ...
    int random_count = 0;           // seeded random plan: this many kills
    int64_t random_seed = 0;
  } fault;

  // Parses a job file; the defaults above fill what it leaves out.
  static Expected<JobConfig> load(const std::string& path);
  static Expected<JobConfig> parse(const std::string& text, const std::string& source);
  // Applies "a.b=value" (value in TOML syntax; a bare word is taken as a string).
  Expected<void> set(const std::string& assignment);
  // Cross-field checks (divisibility of the layout, known enum values, ...).
  Expected<void> validate() const;
  std::string to_toml() const;
};

// A parsed fault.kill entry: kill the actor `target` at `step` in `phase`.
struct FaultSpec {
  std::string target;  // e.g. "stage1", "stage0.replica1"
  int step = 0;
  std::string phase;  // forward | backward | optimizer | checkpoint
};
Expected<FaultSpec> parse_fault_spec(const std::string& s);

}  // namespace troupe
