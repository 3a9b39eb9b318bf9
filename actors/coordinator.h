#pragma once
// Coordinator: turns a job (core/job.h) into a graph of stage actors — dp replicas of a
// pp-stage pipeline, each replica's stages joined by bounded in-process channels, the
// replicas of a stage joined by an all-reduce group — compiles the schedule into
// per-stage plans, and drives steps: a run_step to every stage actor (plans, not
// operations), then an apply with the global gradient-clip scale. Checkpoints,
// supervision and fault injection attach here next (actor-runtime issue).

#include <caf/all.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <future>
#include <optional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/checkpoint_writer.h"
#include "actors/stage_actor.h"
#include "actors/supervisor.h"
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
  // Time this step lost to checkpointing: the pins taken before it started plus the
  // longest wait of a stage's optimizer step for the snapshot copy to release it.
  double checkpoint_stall_seconds = 0;
};

// What the checkpoint policy did after a step.
struct CheckpointReport {
  bool snapshot = false;             // an in-memory snapshot was started
  bool disk = false;                 // a disk write was started
  double stall_seconds = 0;          // time the caller waited (pins, a write still in flight)
  std::vector<std::string> published;  // checkpoints that finished writing meanwhile
  std::vector<std::string> events;     // writer failures and their recovery, for the log
};

struct GraphNode {
  std::string name, role, device;
  std::vector<std::pair<int, int>> layers;  // [first, last) of each model chunk it owns
};
struct GraphEdge {
  std::string from, to, kind;  // kind: activations | gradients
  int slots = 0;
};

// Restart notices and the exit of a supervisor, handed from its thread to the coordinator.
struct SupervisorInbox {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<RestartNotice> notices;
  std::optional<std::string> exited;  // why the supervisor exited (it gave up, or was stopped)
  void push(const RestartNotice& n);
  void exit(std::string why);
  bool pending();  // a notice waits, or the supervisor has exited
  // The next notice, or an error once the supervisor has exited or after `timeout`.
  Expected<RestartNotice> next(std::chrono::seconds timeout);
};

// The data plane of one graph generation: the channels between chunks and the all-reduce
// groups. Rebuilt when the supervisor restarts the gang (the old one is poisoned).
struct Wiring {
  std::vector<std::unique_ptr<transport::InprocChannel>> channels;
  std::vector<std::shared_ptr<transport::InprocAllReduce>> groups;   // per global chunk
  std::vector<std::vector<std::vector<pipeline::StageLinks>>> links;  // [replica][stage][chunk]
  std::vector<std::unique_ptr<transport::InprocChannel>> retired;    // the previous generation
  void build(int p, int v, int dp, const std::function<std::string(int r, int g)>& chunk_name);
  void close_all();
};

// The model a job trains (its [model] section) with a vocabulary of `vocab` tokens; the
// error names the job file and the field.
Expected<model::ModelConfig> model_config_for(const JobConfig& j, int vocab);

class Coordinator {
 public:
  Coordinator(caf::actor_system& sys, JobConfig job);
  ~Coordinator();
  // Opens the data, spawns the stages and wires their channels.
  Expected<void> start();
  // One training step; an error when a stage failed (the graph must then be recovered).
  Expected<StepMetrics> run_step(int64_t step);
  // The checkpoint policy after `steps_done` steps (checkpoint.snapshot_every, .disk_every;
  // force: snapshot regardless): pins the stages and hands them to the snapshot writer,
  // which copies them while the next step runs; a disk checkpoint is then written in the
  // background. Finished writes are collected here, a crashed writer restarted and its
  // checkpoint written again from the same host copy.
  // force_disk (`checkpoint now`): also write that snapshot to disk.
  Expected<CheckpointReport> after_step(int64_t steps_done, bool force_snapshot = false, bool force_disk = false);
  // Waits for the disk write in flight, if any (end of run, `checkpoint now`).
  Expected<CheckpointReport> flush_checkpoints();
  // After a failed step: waits for the training supervisor to restart the gang (or to
  // give up: restart intensity exceeded), restores the latest snapshot into the new
  // actors and returns the step to replay from.
  Expected<int64_t> recover(int64_t failed_step);
  int restarts() const { return restarts_; }
  // The training supervisor restarted the gang (or gave up) and recover() has not yet
  // restored it: a step or a graph change would fail until it has.
  bool restart_pending() const { return training_inbox_ && training_inbox_->pending(); }
  // The failure behind the last restart: the child the supervisor saw fail, and why.
  const std::string& last_failed_child() const { return last_failed_child_; }
  const std::string& last_failure_reason() const { return last_failure_reason_; }
  // Changes a knob of the running job (console `set`), from the next step on. Live keys:
  // optimizer.lr (alias lr; a constant rate replacing the schedule; "schedule" restores
  // it), optimizer.grad_clip, checkpoint.snapshot_every, checkpoint.disk_every. Returns
  // what changed, in words; an error names the key or the bad value.
  Expected<std::string> set_live(const std::string& key, const std::string& value);
  static const std::vector<std::string>& live_keys();
  // Wall time of the last gang restart (failure seen by the supervisor -> actors respawned).
  double last_restart_seconds() const { return last_restart_seconds_; }
  // The job's supervisors, for consoles and tests (kill_child, which_children).
  const supervisor_actor& training_supervisor() const { return training_sup_; }
  const supervisor_actor& checkpoint_supervisor() const { return checkpoint_sup_; }
  // The injected faults (fault.kill and the seeded random plan), for the log.
  std::vector<FaultSpec> planned_faults() const {
    std::vector<FaultSpec> out;
    for (auto& f : faults_) out.push_back(f.spec);
    return out;
  }
  // Changes the number of data-parallel replicas between steps (`steps_done` completed):
  // snapshots the stages, rebuilds the graph with n replicas and restores the snapshot
  // into every one. Microbatch size and global batch stay; each replica runs
  // batch_size / (n B) microbatches, so the step sees the same sequences.
  Expected<void> scale_dp(int n, int64_t steps_done);
  const JobConfig& job() const { return job_; }
  // Loads the newest good checkpoint into every stage (any pp/dp layout); returns the
  // step to resume at. Damaged newer checkpoints are skipped with a warning naming the file.
  Expected<int64_t> restore_latest(std::vector<std::string>* warnings);
  const std::vector<GraphNode>& nodes() const { return nodes_; }
  const std::vector<GraphEdge>& edges() const { return edges_; }
  std::string graph_json() const;
  // Chrome trace (chrome://tracing, Perfetto): one track per stage actor with a span per
  // forward/backward, idle gaps between them (waiting for inputs or credit) and the
  // gradient all-reduce (communication). Collected between start_trace() and stop_trace().
  void start_trace() {
    tracing_ = true;
    trace_events_.clear();
    trace_epoch_ns_ = -1;
  }
  void stop_trace() { tracing_ = false; }
  bool tracing() const { return tracing_; }
  std::string trace_json() const;
  // A copy of the weights as they are after `steps_done` steps (console `generate`): a
  // fresh snapshot, or the latest one if it was taken at that step.
  Expected<SnapshotPtr> weights(int64_t steps_done);
  std::string graph_dot() const;
  const model::ModelConfig& model_config() const { return model_cfg_; }

 private:
  caf::actor_system& sys_;
  JobConfig job_;
  model::ModelConfig model_cfg_;
  std::unique_ptr<data::TokenDataset> dataset_;
  std::unique_ptr<data::BatchSampler> train_;
  // Supervision tree: the training gang (every stage actor of every replica, one_for_all:
  // a failure poisons the channels and the all-reduce the others wait on) and the
  // checkpoint writers (one_for_one: nothing depends on them).
  supervisor_actor training_sup_, checkpoint_sup_;
  std::shared_ptr<SupervisorInbox> training_inbox_, checkpoint_inbox_;
  std::shared_ptr<Wiring> wiring_;
  std::vector<std::vector<stage_actor>> stages_;  // [replica][stage], the current instances
  std::string node_name(int r, int s) const;
  stage_actor spawn_stage(int r, int s);
  Expected<void> start_writers();
  Expected<void> refresh_writers();
  pipeline::Schedule schedule_;
  std::vector<GraphNode> nodes_;
  std::vector<GraphEdge> edges_;
  Expected<void> spawn_graph();
  void stop_graph();
  model::OptimConfig oc_;
  std::vector<InjectedFault> faults_;
  // Checkpointing: one writer copies snapshots, the other writes them to disk.
  checkpoint_writer snapshotter_, writer_;
  std::shared_future<SnapshotPtr> snapshot_;  // the latest in-memory snapshot (may be copying)
  int64_t snapshot_step_ = -1;
  struct PendingWrite {
    int64_t step = 0;
    std::shared_future<SnapshotPtr> snapshot;
    std::future<WriteResult> result;
    int attempts = 0;
  };
  std::optional<PendingWrite> write_;
  double pin_stall_seconds_ = 0;  // charged to the next step's metrics
  void start_write(PendingWrite& w);
  // Loads parameters and moments by name into every stage actor of the graph.
  Expected<void> restore_all(std::shared_ptr<const std::map<std::string, Tensor>> tensors, int optimizer_steps);
  Expected<void> restore_all(const SnapshotPtr& snap);
  // The latest in-memory snapshot, waiting for its copy to finish if need be.
  Expected<SnapshotPtr> latest_snapshot();
  Expected<void> collect_write(CheckpointReport& report, bool wait);
  int restarts_ = 0;
  double last_restart_seconds_ = 0;
  std::string last_failed_child_, last_failure_reason_;
  std::optional<float> lr_override_;  // console `set lr`: a constant rate
  bool tracing_ = false;
  int64_t trace_epoch_ns_ = -1;
  std::vector<std::string> trace_events_;  // JSON objects
  void trace_step(int64_t step, int actor, const StepDone& d);
};

}  // namespace troupe::actors
