#include "actors/stage_actor.h"

namespace troupe::actors {

namespace {

using Self = stage_actor::stateful_pointer<StageState>;

void finish(Self self) {
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

// The stage failed: poison what others may wait on, answer with the error, quit.
void fail(Self self, const std::string& why) {
  auto& st = self->state;
  for (auto* ch : {st.links.act_in, st.links.act_out, st.links.grad_in, st.links.grad_out})
    if (ch) ch->close();
  if (st.dp_group) st.dp_group->abort();
  if (st.done.pending()) st.done.deliver(caf::make_error(caf::sec::runtime_error, st.stage_name + ": " + why));
  st.running = false;
  self->quit(caf::exit_reason::user_shutdown);
}

void maybe_fault(StageState& st, int64_t step, const std::string& phase) {
  for (auto& f : st.faults)
    if (f.step == step + 1 && f.phase == phase)  // fault steps count from 1, as progress lines do
      throw std::runtime_error(strformat("injected fault %s@step%d:%s", f.target.c_str(), f.step, f.phase.c_str()));
}

// Runs the plan as far as the inputs allow; when it is done, all-reduces the gradients
// across replicas (if any) and answers the coordinator.
void advance(Self self) {
  auto& st = self->state;
  if (!st.running || st.reducing) return;
  try {
    if (st.exec->advance() != pipeline::StageExecutor::Progress::Done) return;
  } catch (const std::exception& e) {
    fail(self, e.what());
    return;
  }
  if (st.dp_group && st.dp_group->ranks() > 1) {
    st.reducing = true;
    stage_actor me = self;
    st.dp_group->contribute(st.dp_rank, st.model->grad_data(), st.model->num_params(),
                            [me](bool ok) { caf::anon_send(me, reduced_atom::value, ok); });
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
  st.links = spec.links;
  st.faults = spec.faults;
  StageState* state = &st;
  st.exec->set_before_op([state](const pipeline::Instr& in, int64_t step) {
    maybe_fault(*state, step, in.op == pipeline::Op::Forward ? "forward" : "backward");
  });
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
      [self](apply_atom, int64_t step, float lr, float grad_scale) -> caf::result<int64_t> {
        try {
          maybe_fault(self->state, step, "optimizer");
        } catch (const std::exception& e) {
          std::string why = self->state.stage_name + ": " + e.what();
          fail(self, e.what());
          return caf::make_error(caf::sec::runtime_error, why);
        }
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
      [self](reduced_atom, bool ok) {
        if (!self->state.reducing) return;
        if (ok) finish(self);
        else fail(self, "a data-parallel peer failed during the gradient all-reduce");
      },
  };
}

}  // namespace troupe::actors
