#pragma once
// The coordinator as a typed CAF actor: the one controller of a job. It owns the
// Coordinator (graph, supervisors, data, schedule, checkpoints) in its state and answers
// typed requests: start, run a step, apply the checkpoint policy, recover after a failed
// step, resume from disk, scale the data-parallel group, describe the graph and trace.
// Clients (`troupe run` now, a console later) talk to it only through these messages.
//
// It is spawned detached (its own thread): a step fans out to the stage actors and
// waits for their answers, and that waiting must not hold one of the scheduler's threads
// that the stages themselves run on.

#include <caf/all.hpp>

#include <memory>
#include <string>
#include <vector>

#include "actors/coordinator.h"

namespace troupe::actors {

using start_atom = caf::atom_constant<caf::atom("start")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using recover_atom = caf::atom_constant<caf::atom("recover")>;
using scale_atom = caf::atom_constant<caf::atom("scale")>;
using resume_atom = caf::atom_constant<caf::atom("resume")>;
using trace_atom = caf::atom_constant<caf::atom("trace")>;
using status_atom = caf::atom_constant<caf::atom("status")>;
using set_atom = caf::atom_constant<caf::atom("set")>;
using weights_atom = caf::atom_constant<caf::atom("weights")>;
using pending_atom = caf::atom_constant<caf::atom("pending")>;

// What a client may want to know about the job and its graph.
struct CoordinatorInfo {
  JobConfig job;  // as running (scale_dp changes parallel.dp and .microbatches)
  model::ModelConfig model;
  std::vector<FaultSpec> faults;
  std::string graph_json, graph_dot;
  size_t actors = 0;
  int restarts = 0;
  double last_restart_seconds = 0;
  // The supervision tree, for consoles: they ask the supervisors (which answer between
  // steps and during them) rather than the coordinator, which is busy while a step runs.
  caf::actor training_supervisor, checkpoint_supervisor;
};

struct ResumeInfo {
  int64_t step = 0;
  std::vector<std::string> warnings;  // damaged checkpoints skipped
};

struct RecoverInfo {
  int64_t step = 0;  // replay from here
  int restarts = 0;
  double restart_seconds = 0;  // supervisor: failure seen -> actors respawned
  std::string failed_child, reason;  // what the supervisor saw fail, and why
};

}  // namespace troupe::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::CoordinatorInfo)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::ResumeInfo)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::RecoverInfo)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::StepMetrics)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::CheckpointReport)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::SnapshotPtr)

namespace troupe::actors {

using coordinator_actor =
    caf::typed_actor<caf::replies_to<start_atom>::with<CoordinatorInfo>,
                     caf::replies_to<run_step_atom, int64_t>::with<StepMetrics>,
                     // steps done, force a snapshot, force a disk write
                     caf::replies_to<checkpoint_atom, int64_t, bool, bool>::with<CheckpointReport>,
                     caf::replies_to<flush_atom>::with<CheckpointReport>,
                     caf::replies_to<recover_atom, int64_t>::with<RecoverInfo>,
                     caf::replies_to<scale_atom, int, int64_t>::with<CoordinatorInfo>,  // replicas, steps done
                     caf::replies_to<resume_atom>::with<ResumeInfo>,
                     // true: start a new trace; false: stop and return it (Chrome trace JSON)
                     caf::replies_to<trace_atom, bool>::with<std::string>,
                     caf::replies_to<status_atom>::with<CoordinatorInfo>,
                     caf::replies_to<set_atom, std::string, std::string>::with<std::string>,  // key, value
                     caf::replies_to<weights_atom, int64_t>::with<SnapshotPtr>,                // steps done
                     // whether the gang was restarted and awaits recover (checked at every step boundary)
                     caf::replies_to<pending_atom>::with<bool>>;

struct CoordinatorState {
  std::unique_ptr<Coordinator> coord;
  static inline const char* name = "coordinator";
};

coordinator_actor::behavior_type coordinator_actor_fn(coordinator_actor::stateful_pointer<CoordinatorState> self,
                                                      JobConfig job);

// Spawns the coordinator actor (detached) for a job.
coordinator_actor spawn_coordinator(caf::actor_system& sys, JobConfig job);

// A blocking client for programs that drive a job from a plain thread (`troupe run`):
// each call is one typed request, its error rendered as the text the actor gave.
class CoordinatorClient {
 public:
  CoordinatorClient(caf::actor_system& sys, coordinator_actor coord) : sys_(sys), self_(sys), coord_(std::move(coord)) {}
  // Stops the coordinator (which stops its supervisors and their actors) and waits.
  ~CoordinatorClient();
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;
  template <class T, class... Ts>
  Expected<T> call(Ts&&... xs) {
    Expected<T> out = make_error("no answer");
    self_->request(coord_, caf::infinite, std::forward<Ts>(xs)...)
        .receive([&](T& v) { out = std::move(v); }, [&](caf::error& e) { out = make_error(render(e)); });
    return out;
  }
  const coordinator_actor& actor() const { return coord_; }

 private:
  std::string render(const caf::error& e) const;
  caf::actor_system& sys_;
  caf::scoped_actor self_;
  coordinator_actor coord_;
};

}  // namespace troupe::actors
