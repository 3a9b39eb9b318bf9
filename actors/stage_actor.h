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
//     (with data parallelism the answer waits for the replicas' gradient all-reduce)
//   coordinator -> stage: (apply, step, lr, scale)   -> step   (AdamW with the global clip scale)
// and, between steps: (snapshot) -> a host copy of parameters and moments; (restore, ...).
//
// Failure: an exception in a kernel, an injected fault, or a peer's failure makes the
// actor close its channels and abort its all-reduce group (so its peers fail the step
// too instead of waiting forever), answer the pending request with an error, and quit.
// The coordinator, as supervisor, restarts the group and restores it from a snapshot.

#include <caf/all.hpp>

#include <map>
#include <memory>
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

struct StepOrder {
  int64_t step = 0;
  std::shared_ptr<const std::vector<pipeline::Microbatch>> microbatches;  // shared, read-only
  pipeline::StagePlan plan;
  float dloss_scale = 1;
};

struct SnapshotMsg {
  std::shared_ptr<const ckpt::StageSnapshot> snapshot;
};
struct RestoreMsg {
  std::shared_ptr<const std::map<std::string, Tensor>> tensors;  // all shards, by name
  int optimizer_steps = 0;
};

struct StepDone {
  int64_t step = 0;
  std::vector<float> losses;  // last stage: per microbatch; others: empty
  double grad_sum_squares = 0;
  std::vector<pipeline::Span> spans;  // compute spans of this step, for traces and the bubble
};

}  // namespace troupe::actors

// Local-only messages (they carry pointers): never serialized, so CAF may skip inspection.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::StepOrder)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::StepDone)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::SnapshotMsg)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::RestoreMsg)

namespace troupe::actors {

using stage_actor = caf::typed_actor<caf::replies_to<run_step_atom, StepOrder>::with<StepDone>,
                                     caf::replies_to<apply_atom, int64_t, float, float>::with<int64_t>,
                                     caf::replies_to<snapshot_atom>::with<SnapshotMsg>,
                                     caf::replies_to<restore_atom, RestoreMsg>::with<bool>,
                                     caf::reacts_to<wake_atom>, caf::reacts_to<reduced_atom, bool>>;

struct StageSpec {
  std::string name;  // "stage0", also the checkpoint shard's name
  model::ModelConfig model;
  model::StageRange range;
  model::OptimConfig optim;
  uint64_t seed = 0;
  pipeline::StageLinks links;
  // Data parallel: the replicas of this stage share a group; gradients are summed in
  // replica order after the plan, before the step answers.
  std::shared_ptr<transport::InprocAllReduce> dp_group;
  int dp_rank = 0;
  // Fault injection (tests, demos): fail on cue at (step, phase); phases forward,
  // backward, optimizer. The coordinator passes only faults that have not fired yet.
  std::vector<FaultSpec> faults;
};

struct StageState {
  std::string stage_name;
  std::unique_ptr<model::Transformer> model;
  std::unique_ptr<model::AdamW> optim;
  std::unique_ptr<pipeline::StageExecutor> exec;
  StepOrder order;
  caf::typed_response_promise<StepDone> done;
  bool running = false;
  bool reducing = false;
  pipeline::StageLinks links;
  std::vector<FaultSpec> faults;
  std::shared_ptr<transport::InprocAllReduce> dp_group;
  int dp_rank = 0;
  static inline const char* name = "stage";
};

stage_actor::behavior_type stage_actor_fn(stage_actor::stateful_pointer<StageState> self, StageSpec spec);

}  // namespace troupe::actors
