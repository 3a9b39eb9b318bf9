#pragma once
// CheckpointWriter: the actor that takes snapshots and writes checkpoints in the
// background, so that training does not wait for either.
//
//   1. Between steps the coordinator asks each stage for a SnapshotSource: a pin on its
//      live parameters and AdamW moments (shared ownership, no copy). The stage goes on
//      with the next step's forward and backward, which only read them.
//   2. The writer, on its own thread (spawned detached), copies every pinned stage into
//      host memory and unpins it (released_atom); a stage whose next optimizer step
//      arrives before that waits for it: that wait is the checkpoint's stall, measured.
//   3. The copy is handed to the coordinator (in-memory snapshot, for recovery); if the
//      order says so, the writer then writes it as safetensors shards plus a manifest,
//      published by atomic rename (actors/checkpoint.h), while training goes on.
//
// The coordinator is not an actor, so results come back through futures carried in the
// order: a writer that dies mid-write breaks its promise, which the coordinator sees as
// a failure, restarts the writer and writes the same host copy again.

#include <caf/all.hpp>

#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/checkpoint.h"
#include "actors/stage_actor.h"
#include "core/job.h"

namespace troupe::actors {

using checkpoint_atom = caf::atom_constant<caf::atom("ckpt")>;

// Every stage's parameters and moments after `step` steps, in host memory.
struct Snapshot {
  int64_t step = 0;
  int optimizer_steps = 0;
  std::vector<ckpt::StageSnapshot> stages;
  std::map<std::string, Tensor> tensors;  // the union of the stages, by name (shares storage)
  double copy_seconds = 0;
};
using SnapshotPtr = std::shared_ptr<const Snapshot>;

struct WriteResult {
  bool ok = false;
  std::string path_or_error;
  double seconds = 0;
};

// One order does one or both of: copy pinned stages into a host snapshot, write a
// snapshot to disk. The coordinator runs two writer actors, one copying and one writing,
// so a slow disk write never delays the next snapshot copy (and so the next step).
struct CheckpointOrder {
  int64_t step = 0;
  // Copy: the pinned stages (in stage order) and where the copy goes.
  std::vector<SnapshotSource> sources;
  std::shared_ptr<std::promise<SnapshotPtr>> copied;
  // Write: the snapshot to write (waited for; it may still be being copied).
  std::shared_future<SnapshotPtr> snapshot;
  std::shared_ptr<std::promise<WriteResult>> written;
  ckpt::Manifest manifest;
  std::string dir;
  int keep = 3;
  std::vector<InjectedFault> faults;  // injected: die after writing the named shard
};

}  // namespace troupe::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::CheckpointOrder)

namespace troupe::actors {

using checkpoint_writer = caf::typed_actor<caf::reacts_to<checkpoint_atom, CheckpointOrder>>;

struct CheckpointWriterState {
  std::string role;  // "snapshotter" or "writer", for logs
  int64_t copies = 0, writes = 0;
  static inline const char* name = "checkpoint-writer";
};

// (CAF 0.17 dereferences a null argument tuple when a function-based actor is spawned
// without arguments, which UBSan reports; the role argument also names the actor.)
checkpoint_writer::behavior_type checkpoint_writer_fn(checkpoint_writer::stateful_pointer<CheckpointWriterState> self,
                                                      std::string role);

}  // namespace troupe::actors
