#include "actors/checkpoint_writer.h"

#include <chrono>

namespace troupe::actors {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Copies the pinned stages and unpins each as soon as its copy is done.
SnapshotPtr copy_stages(int64_t step, const std::vector<SnapshotSource>& sources) {
  auto t0 = std::chrono::steady_clock::now();
  auto snap = std::make_shared<Snapshot>();
  snap->step = step;
  for (auto& src : sources) {
    // One shard per stage actor: its chunks' tensors together (names are global).
    ckpt::StageSnapshot stage;
    for (size_t c = 0; c < src.models.size(); c++) {
      auto part = ckpt::snapshot_stage(src.name, *src.models[c], *src.optims[c]);
      stage.name = part.name;
      stage.optimizer_steps = part.optimizer_steps;
      for (auto& t : part.tensors) stage.tensors.push_back(std::move(t));
    }
    snap->stages.push_back(std::move(stage));
    caf::anon_send(src.owner, released_atom::value);
  }
  for (auto& st : snap->stages)
    for (auto& [name, t] : st.tensors) snap->tensors[name] = t;
  snap->optimizer_steps = snap->stages.empty() ? 0 : snap->stages[0].optimizer_steps;
  snap->copy_seconds = seconds_since(t0);
  return snap;
}

}  // namespace

checkpoint_writer::behavior_type checkpoint_writer_fn(checkpoint_writer::stateful_pointer<CheckpointWriterState> self,
                                                      std::string role) {
  self->state.role = std::move(role);
  return {
      [self](checkpoint_atom, CheckpointOrder& order) {
        SnapshotPtr snap;
        if (!order.sources.empty()) {
          try {
            snap = copy_stages(order.step, order.sources);
          } catch (const std::exception& e) {
            for (auto& src : order.sources) caf::anon_send(src.owner, released_atom::value);
            if (order.copied) order.copied->set_exception(std::current_exception());
            if (order.written) order.written->set_value({false, std::string("snapshot copy failed: ") + e.what(), 0});
            self->quit(caf::make_error(caf::sec::runtime_error, e.what()));
            return;
          }
          self->state.copies++;
          if (order.copied) order.copied->set_value(snap);
        }
        if (!order.written) return;
        if (!snap) {
          try {
            snap = order.snapshot.get();  // this actor runs detached: waiting blocks only it
          } catch (const std::exception& e) {
            order.written->set_value({false, std::string("no snapshot to write: ") + e.what(), 0});
            return;
          }
        }
        order.manifest.optimizer_steps = snap->optimizer_steps;  // known once copied
        auto t0 = std::chrono::steady_clock::now();
        std::string crash;
        auto fault = [&](const std::string& shard) {
          for (auto& inj : order.faults) {
            const FaultSpec& f = inj.spec;
            if (f.phase == "checkpoint" && f.step == order.manifest.step &&
                (f.target == shard || f.target == "checkpoint") && !inj.fired->exchange(true))
              throw std::runtime_error(strformat("injected fault %s@step%d:checkpoint (after writing shard %s)",
                                                 f.target.c_str(), f.step, shard.c_str()));
          }
        };
        WriteResult r;
        try {
          auto path = ckpt::write_checkpoint(order.dir, order.manifest, snap->stages, order.keep, fault);
          r.ok = bool(path);
          r.path_or_error = path ? *path : path.error().message;
        } catch (const std::exception& e) {
          crash = e.what();
        }
        r.seconds = seconds_since(t0);
        if (!crash.empty()) {
          // A crash mid-write: the half-written folder stays unpublished (*.tmp); the
          // actor dies like any failed actor and its supervisor decides what follows.
          order.written->set_value({false, "checkpoint writer died: " + crash, r.seconds});
          self->quit(caf::make_error(caf::sec::runtime_error, crash));
          return;
        }
        self->state.writes++;
        order.written->set_value(std::move(r));
      },
  };
}

}  // namespace troupe::actors
