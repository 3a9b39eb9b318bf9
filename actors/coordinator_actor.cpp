#include "actors/coordinator_actor.h"

#include "actors/supervisor.h"

namespace troupe::actors {

namespace {

caf::error failure(const Error& e) { return caf::make_error(caf::sec::runtime_error, e.message); }

CoordinatorInfo info(const Coordinator& c) {
  CoordinatorInfo i;
  i.job = c.job();
  i.model = c.model_config();
  i.faults = c.planned_faults();
  i.graph_json = c.graph_json();
  i.graph_dot = c.graph_dot();
  i.actors = c.nodes().size();
  i.restarts = c.restarts();
  i.last_restart_seconds = c.last_restart_seconds();
  i.training_supervisor = caf::actor_cast<caf::actor>(c.training_supervisor());
  i.checkpoint_supervisor = caf::actor_cast<caf::actor>(c.checkpoint_supervisor());
  return i;
}

}  // namespace

coordinator_actor::behavior_type coordinator_actor_fn(coordinator_actor::stateful_pointer<CoordinatorState> self,
                                                      JobConfig job) {
  self->state.coord = std::make_unique<Coordinator>(self->system(), std::move(job));
  return {
      [self](start_atom) -> caf::result<CoordinatorInfo> {
        if (auto ok = self->state.coord->start(); !ok) return failure(ok.error());
        return info(*self->state.coord);
      },
      [self](run_step_atom, int64_t step) -> caf::result<StepMetrics> {
        auto m = self->state.coord->run_step(step);
        if (!m) return failure(m.error());
        return *m;
      },
      [self](checkpoint_atom, int64_t steps_done, bool force, bool disk) -> caf::result<CheckpointReport> {
        auto r = self->state.coord->after_step(steps_done, force, disk);
        if (!r) return failure(r.error());
        return *r;
      },
      [self](flush_atom) -> caf::result<CheckpointReport> {
        auto r = self->state.coord->flush_checkpoints();
        if (!r) return failure(r.error());
        return *r;
      },
      [self](recover_atom, int64_t failed_step) -> caf::result<RecoverInfo> {
        auto& c = *self->state.coord;
        auto back = c.recover(failed_step);
        if (!back) return failure(back.error());
        return RecoverInfo{*back, c.restarts(), c.last_restart_seconds(), c.last_failed_child(), c.last_failure_reason()};
      },
      [self](scale_atom, int replicas, int64_t steps_done) -> caf::result<CoordinatorInfo> {
        if (auto ok = self->state.coord->scale_dp(replicas, steps_done); !ok) return failure(ok.error());
        return info(*self->state.coord);
      },
      [self](resume_atom) -> caf::result<ResumeInfo> {
        ResumeInfo r;
        auto at = self->state.coord->restore_latest(&r.warnings);
        if (!at) {
          std::string why = at.error().message;
          for (auto& w : r.warnings) why += "\n  " + w;
          return caf::make_error(caf::sec::runtime_error, why);
        }
        r.step = *at;
        return r;
      },
      [self](trace_atom, bool start) -> std::string {
        auto& c = *self->state.coord;
        if (start) c.start_trace();
        else c.stop_trace();
        return c.trace_json();
      },
      [self](status_atom) -> CoordinatorInfo { return info(*self->state.coord); },
      [self](set_atom, const std::string& key, const std::string& value) -> caf::result<std::string> {
        auto r = self->state.coord->set_live(key, value);
        if (!r) return failure(r.error());
        return *r;
      },
      [self](pending_atom) -> bool { return self->state.coord->restart_pending(); },
      [self](weights_atom, int64_t steps_done) -> caf::result<SnapshotPtr> {
        auto r = self->state.coord->weights(steps_done);
        if (!r) return failure(r.error());
        return *r;
      },
  };
}

coordinator_actor spawn_coordinator(caf::actor_system& sys, JobConfig job) {
  return sys.spawn<caf::detached>(coordinator_actor_fn, std::move(job));
}

CoordinatorClient::~CoordinatorClient() {
  self_->send_exit(coord_, caf::exit_reason::user_shutdown);
  self_->wait_for(coord_);
}

std::string CoordinatorClient::render(const caf::error& e) const { return describe_reason(e); }

}  // namespace troupe::actors
