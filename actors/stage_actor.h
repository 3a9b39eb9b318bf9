#pragma once
// StageActor: a CAF actor that owns one pipeline stage — its layers (a Transformer
// range), parameters, optimizer state and activation slots — and runs the plan the
// coordinator sends for each step. Tensors move on in-process channels; only small
// control messages go through the mailbox. The actor never blocks: when the next
// instruction's input has not arrived, it returns to its mailbox and a channel callback
// wakes it.
//
// Protocol per step (a few messages per stage, independent of microbatch count):
//   coordinator -> stage: (run_step, StepOrder)      -> StepDone {losses, grad sum of squares}
//     (with data parallelism the answer waits for the replicas' gradient all-reduce,
//     which runs in buckets started during the step's last backward of each chunk)
//   coordinator -> stage: (apply, step, lr, scale)   -> step   (AdamW with the global clip scale)
// and, between steps: (snapshot) -> a host copy of parameters and moments; (restore, ...).
//
// Failure: an exception in a kernel, an injected fault, or a peer's failure makes the
// actor close its channels and abort its all-reduce group (so its peers fail the step
// too instead of waiting forever), answer the pending request with an error, and quit.
// The coordinator, as supervisor, restarts the group and restores it from a snapshot.

#include <caf/all.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/checkpoint.h"
#include "core/job.h"
#include "actors/stage_executor.h"
#include "ops/model/optimizer.h"
#include "transport/inproc_allreduce.h"

namespace troupe::actors {

using run_step_atom = caf::atom_constant<caf::atom("runstep")>;
using apply_atom = caf::atom_constant<caf::atom("apply")>;
using wake_atom = caf::atom_constant<caf::atom("wake")>;
using reduced_atom = caf::atom_constant<caf::atom("reduced")>;
using snapshot_atom = caf::atom_constant<caf::atom("snapshot")>;
using restore_atom = caf::atom_constant<caf::atom("restore")>;
using released_atom = caf::atom_constant<caf::atom("released")>;
using actor_status_atom = caf::atom_constant<caf::atom("astatus")>;

// A planned fault and whether it has fired: shared by the coordinator and every instance
// of the actor it targets, so that a restarted actor does not fail again on the same cue.
struct InjectedFault {
  FaultSpec spec;
  std::shared_ptr<std::atomic<bool>> fired = std::make_shared<std::atomic<bool>>(false);
};

struct StepOrder {
  int64_t step = 0;
  std::shared_ptr<const std::vector<pipeline::Microbatch>> microbatches;  // shared, read-only
  pipeline::StagePlan plan;
  float dloss_scale = 1;
};

// A pin on a stage's live parameters and moments for the checkpoint writer to copy
// while the stage runs its next forward and backward (which only read them). The
// stage's next optimizer step waits until the writer sends released_atom.
struct SnapshotSource {
  std::string name;
  std::vector<std::shared_ptr<model::Transformer>> models;  // one per model chunk
  std::vector<std::shared_ptr<model::AdamW>> optims;
  caf::actor owner;
};

struct Applied {
  int64_t step = 0;
  int64_t stall_ns = 0;  // time the step waited for a checkpoint copy to release the stage
};
// What a stage actor says about itself (a console's `ps` and `metrics`). Answered between
// two instructions of a step, so it costs the step at most one kernel's wait.
struct StageStatus {
  std::string name;
  size_t mailbox = 0;          // messages waiting, this one excluded
  bool running = false;        // in a step
  int64_t step = -1;           // the step running or last run (from 0)
  int64_t steps = 0;           // steps finished by this instance
  int pins = 0;                // checkpoint copies reading its parameters
  int64_t params = 0;          // over its chunks
  int64_t param_bytes = 0;     // parameters and gradients
  int64_t optimizer_bytes = 0; // AdamW moments
  int64_t activation_bytes = 0;
  double busy_seconds = 0;     // compute time in the last finished step
};

struct RestoreMsg {
  std::shared_ptr<const std::map<std::string, Tensor>> tensors;  // all shards, by name
  int optimizer_steps = 0;
};

struct StepDone {
  int64_t step = 0;
  std::vector<float> losses;  // the stage with the head: per microbatch; others: empty
  // Sum of squared gradients per model chunk, by global chunk index (the coordinator
  // adds them in that order, so the norm does not depend on which stage holds a chunk).
  std::vector<std::pair<int, double>> grad_sum_squares;
  std::vector<pipeline::Span> spans;  // compute spans of this step, for traces and the bubble
  // Data parallel: when the gradient all-reduce ran (steady clock; 0 when none).
  int64_t reduce_start_ns = 0, reduce_end_ns = 0;
};

}  // namespace troupe::actors

// Local-only messages (they carry pointers): never serialized, so CAF may skip inspection.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::StepOrder)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::StepDone)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::SnapshotSource)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::Applied)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::RestoreMsg)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::StageStatus)

namespace troupe::actors {

using stage_actor = caf::typed_actor<caf::replies_to<run_step_atom, StepOrder>::with<StepDone>,
                                     caf::replies_to<apply_atom, int64_t, float, float>::with<Applied>,
                                     caf::replies_to<snapshot_atom>::with<SnapshotSource>,
                                     caf::reacts_to<released_atom>,
                                     caf::replies_to<restore_atom, RestoreMsg>::with<bool>,
                                     caf::reacts_to<wake_atom>, caf::reacts_to<reduced_atom, bool>,
                                     caf::replies_to<actor_status_atom>::with<StageStatus>>;

struct StageSpec {
  std::string name;  // "stage0", also the checkpoint shard's name
  model::ModelConfig model;
  int stage = 0, stages = 1;
  // Model chunks of this stage: one, or v with an interleaved schedule (local chunk c is
  // global chunk c * stages + stage); each with its layers and its channels.
  std::vector<model::StageRange> chunks;
  std::vector<pipeline::StageLinks> links;
  model::OptimConfig optim;
  uint64_t seed = 0;
  // Data parallel: the replicas of a chunk share a group (one per chunk); each bucket of
  // gradients is summed in replica order as soon as every replica has finished it.
  std::vector<std::shared_ptr<transport::InprocAllReduce>> dp_groups;
  int dp_rank = 0;
  int64_t bucket_floats = int64_t(1) << 20;  // gradients per all-reduce bucket (4 MiB)
  // Fault injection (tests, demos): fail on cue at (step, phase); phases forward,
  // backward, optimizer. Each fires once, whichever instance of the actor meets it.
  std::vector<InjectedFault> faults;
};

struct StageState {
  std::string stage_name;
  struct Chunk {
    // Shared only with a checkpoint copy in progress (SnapshotSource), never written by it.
    std::shared_ptr<model::Transformer> model;
    std::shared_ptr<model::AdamW> optim;
    std::shared_ptr<transport::InprocAllReduce> group;
    int global = 0;
    int64_t last_backward = -1;  // plan index of the step's last backward of this chunk
    bool armed = false;          // the running backward is that one
    int64_t bucket_lo = 0, bucket_hi = 0;    // finished gradients not yet offered
    int next_bucket = 0;
  };
  std::vector<Chunk> chunks;
  int64_t bucket_floats = 0;
  int pins = 0;  // checkpoint copies not yet released
  struct DeferredApply {
    int64_t step;
    float lr, scale;
    int64_t since_ns;
    caf::typed_response_promise<Applied> promise;
  };
  std::optional<DeferredApply> deferred;  // an optimizer step waiting for the pins
  std::unique_ptr<pipeline::StageExecutor> exec;
  StepOrder order;
  caf::typed_response_promise<StepDone> done;
  bool running = false;
  bool plan_done = false;
  int buckets_in_flight = 0;
  int64_t reduce_start_ns = 0;
  std::vector<pipeline::StageLinks> links;
  std::vector<InjectedFault> faults;
  int dp_rank = 0;
  int64_t steps_finished = 0;
  double last_busy_seconds = 0;
  static inline const char* name = "stage";
  // Killed outright (exit_reason::kill skips the exit handler) with a request open: the
  // state goes away when the actor exits, and answers first so nobody waits forever.
  ~StageState();
};

stage_actor::behavior_type stage_actor_fn(stage_actor::stateful_pointer<StageState> self, StageSpec spec);

}  // namespace troupe::actors
