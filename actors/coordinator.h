#pragma once
// Coordinator: turns a job (core/job.h) into a graph of stage actors — dp replicas of a
// pp-stage pipeline, each replica's stages joined by bounded in-process channels, the
// replicas of a stage joined by an all-reduce group — compiles the schedule into
// per-stage plans, and drives steps: a run_step to every stage actor (plans, not
// operations), then an apply with the global gradient-clip scale. Checkpoints,
// supervision and fault injection attach here next (actor-runtime issue).

#include <caf/all.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/stage_actor.h"
#include "core/data.h"
#include "core/job.h"

namespace troupe::actors {

struct StepMetrics {
  int64_t step = 0;
  double loss = 0;       // mean over the step's microbatches
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double step_seconds = 0;
  double tokens_per_second = 0;
  // Measured: 1 - (compute time of all stage actors) / (actors x span from the first
  // instruction's start to the last one's end). Waiting for inputs counts as idle.
  double bubble_fraction = 0;
};

struct GraphNode {
  std::string name, role, device;
  int first_layer = 0, last_layer = 0;
};
struct GraphEdge {
  std::string from, to, kind;  // kind: activations | gradients
  int slots = 0;
};

class Coordinator {
 public:
  Coordinator(caf::actor_system& sys, JobConfig job);
  ~Coordinator();
  // Opens the data, spawns the stages and wires their channels.
  Expected<void> start();
  // One training step; an error when a stage failed (the graph must then be recovered).
  Expected<StepMetrics> run_step(int64_t step);
  // Keeps a host-memory copy of every stage's parameters and moments (steps_done steps).
  Expected<void> snapshot(int64_t steps_done);
  // Supervisor: restarts the stage actors (one_for_all) within the restart intensity,
  // restores the latest snapshot and returns the step to replay from.
  Expected<int64_t> recover(int64_t failed_step);
  int restarts() const { return restarts_; }
  // Writes checkpoint.dir/step-N (N = steps completed); returns its path.
  Expected<std::string> checkpoint(int64_t steps_done);
  // Loads the newest good checkpoint into every stage (any pp/dp layout); returns the
  // step to resume at. Damaged newer checkpoints are skipped with a warning naming the file.
  Expected<int64_t> restore_latest(std::vector<std::string>* warnings);
  const std::vector<GraphNode>& nodes() const { return nodes_; }
  const std::vector<GraphEdge>& edges() const { return edges_; }
  std::string graph_json() const;
  // Chrome trace (chrome://tracing, Perfetto): one track per stage actor, a span per
  // forward/backward. Collected only after enable_trace().
  void enable_trace() { tracing_ = true; }
  std::string trace_json() const;
  std::string graph_dot() const;
  const model::ModelConfig& model_config() const { return model_cfg_; }

 private:
  caf::actor_system& sys_;
  JobConfig job_;
  model::ModelConfig model_cfg_;
  std::unique_ptr<data::TokenDataset> dataset_;
  std::unique_ptr<data::BatchSampler> train_;
  std::vector<std::unique_ptr<transport::InprocChannel>> channels_;
  std::vector<std::vector<stage_actor>> stages_;  // [replica][stage]
  pipeline::Schedule schedule_;
  std::vector<GraphNode> nodes_;
  std::vector<GraphEdge> edges_;
  void spawn_graph();
  void stop_graph();
  std::vector<int> cut_;  // layer boundaries of the stages
  model::OptimConfig oc_;
  std::vector<std::pair<FaultSpec, bool>> faults_;  // injected faults, fired?
  std::shared_ptr<const std::map<std::string, Tensor>> snapshot_;
  int64_t snapshot_step_ = 0;
  int snapshot_opt_steps_ = 0;
  int restarts_ = 0;
  std::vector<std::chrono::steady_clock::time_point> restart_times_;
  bool tracing_ = false;
  int64_t trace_epoch_ns_ = -1;
  std::vector<std::string> trace_events_;  // JSON objects
};

}  // namespace troupe::actors
