#include "actors/stage_actor.h"

namespace troupe::actors {

namespace {

void finish(stage_actor::stateful_pointer<StageState> self) {
  auto& st = self->state;
  st.running = false;
  st.reducing = false;
  StepDone d;
  d.step = st.order.step;
  if (st.model->stage().head) d.losses = st.exec->microbatch_losses();
  d.grad_sum_squares = st.optim->grad_sum_squares();
  d.spans = st.exec->spans();
  st.done.deliver(std::move(d));
}

// Runs the plan as far as the inputs allow; when it is done, all-reduces the gradients
// across replicas (if any) and answers the coordinator.
void advance(stage_actor::stateful_pointer<StageState> self) {
  auto& st = self->state;
  if (!st.running || st.reducing) return;
  if (st.exec->advance() != pipeline::StageExecutor::Progress::Done) return;
  if (st.dp_group && st.dp_group->ranks() > 1) {
    st.reducing = true;
    stage_actor me = self;
    st.dp_group->contribute(st.dp_rank, st.model->grad_data(), st.model->num_params(),
                            [me] { caf::anon_send(me, reduced_atom::value); });
    return;
  }
  finish(self);
}

}  // namespace

stage_actor::behavior_type stage_actor_fn(stage_actor::stateful_pointer<StageState> self, StageSpec spec) {
  auto& st = self->state;
  st.stage_name = spec.name;
  st.model = std::make_unique<model::Transformer>(spec.model, spec.range);
  st.model->init_weights(spec.seed);
  st.optim = std::make_unique<model::AdamW>(st.model->params(), spec.optim);
  st.exec = std::make_unique<pipeline::StageExecutor>(*st.model, spec.links);
  st.dp_group = spec.dp_group;
  st.dp_rank = spec.dp_rank;
  // Channel callbacks run on the peer's thread: they only post a wake-up message.
  stage_actor me = self;
  auto wake = [me] { caf::anon_send(me, wake_atom::value); };
  for (auto* ch : {spec.links.act_in, spec.links.grad_in})
    if (ch) ch->on_readable(wake);
  for (auto* ch : {spec.links.act_out, spec.links.grad_out})
    if (ch) ch->on_writable(wake);
  return {
      [self](run_step_atom, StepOrder order) -> caf::typed_response_promise<StepDone> {
        auto& s = self->state;
        s.order = std::move(order);
        s.model->zero_grad();
        s.exec->begin_step(s.order.step, s.order.plan, s.order.microbatches.get(), s.order.dloss_scale);
        s.running = true;
        s.done = self->make_response_promise<StepDone>();
        auto promise = s.done;
        advance(self);
        return promise;
      },
      [self](apply_atom, int64_t step, float lr, float grad_scale) -> int64_t {
        self->state.optim->step(lr, grad_scale);
        return step;
      },
      [self](snapshot_atom) -> SnapshotMsg {
        auto& s = self->state;
        return {std::make_shared<const ckpt::StageSnapshot>(ckpt::snapshot_stage(s.stage_name, *s.model, *s.optim))};
      },
      [self](restore_atom, RestoreMsg msg) -> caf::result<bool> {
        auto& s = self->state;
        auto ok = ckpt::restore_stage(*s.model, *s.optim, *msg.tensors, msg.optimizer_steps);
        if (!ok) return caf::make_error(caf::sec::invalid_argument, s.stage_name + ": " + ok.error().message);
        return true;
      },
      [self](wake_atom) { advance(self); },
      [self](reduced_atom) {
        if (self->state.reducing) finish(self);
      },
  };
}

}  // namespace troupe::actors
