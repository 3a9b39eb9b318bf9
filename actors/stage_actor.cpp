#include "actors/stage_actor.h"

#include "actors/supervisor.h"

#include <chrono>

namespace troupe::actors {

namespace {

using Self = stage_actor::stateful_pointer<StageState>;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void finish(Self self) {
  auto& st = self->state;
  st.running = false;
  StepDone d;
  d.step = st.order.step;
  if (st.exec->has_head()) d.losses = st.exec->microbatch_losses();
  for (auto& c : st.chunks) d.grad_sum_squares.push_back({c.global, c.optim->grad_sum_squares()});
  d.spans = st.exec->spans();
  int64_t busy_ns = 0;
  for (auto& sp : d.spans) busy_ns += sp.end_ns - sp.start_ns;
  st.last_busy_seconds = double(busy_ns) * 1e-9;
  st.steps_finished++;
  if (st.reduce_start_ns) d.reduce_start_ns = st.reduce_start_ns, d.reduce_end_ns = now_ns();
  st.reduce_start_ns = 0;
  st.done.deliver(std::move(d));
}

// The stage failed: poison what others may wait on, answer with the error, quit.
void fail(Self self, const std::string& why) {
  auto& st = self->state;
  for (auto& l : st.links)
    for (auto* ch : {l.act_in, l.act_out, l.grad_in, l.grad_out})
      if (ch) ch->close();
  for (auto& c : st.chunks)
    if (c.group) c.group->abort();
  auto err = caf::make_error(caf::sec::runtime_error, st.stage_name + ": " + why);
  if (st.done.pending()) st.done.deliver(err);
  st.running = false;
  self->quit(err);  // the exit reason tells the supervisor why
}

void maybe_fault(StageState& st, int64_t step, const std::string& phase) {
  for (auto& inj : st.faults) {
    const FaultSpec& f = inj.spec;
    // Fault steps count from 1, as progress lines do.
    if (f.step == step + 1 && f.phase == phase && !inj.fired->exchange(true))
      throw std::runtime_error(strformat("injected fault %s@step%d:%s", f.target.c_str(), f.step, f.phase.c_str()));
  }
}

// Offers the chunk's finished gradients [bucket_lo, bucket_hi) to its all-reduce group.
void offer_bucket(Self self, StageState::Chunk& c) {
  auto& st = self->state;
  if (c.bucket_hi <= c.bucket_lo) return;
  if (!st.reduce_start_ns) st.reduce_start_ns = now_ns();
  st.buckets_in_flight++;
  stage_actor me = self;
  c.group->contribute(st.dp_rank, c.next_bucket++, c.model->grad_data() + c.bucket_lo, c.bucket_hi - c.bucket_lo,
                      [me](bool ok) { caf::anon_send(me, reduced_atom::value, ok); });
  c.bucket_hi = c.bucket_lo;
}

// Runs the plan as far as the inputs allow; when it is done and every gradient bucket
// is reduced across the replicas (if any), answers the coordinator.
void advance(Self self) {
  auto& st = self->state;
  if (!st.running) return;
  if (!st.plan_done) {
    try {
      // One instruction at a time: between two, the mailbox is served (a console's status
      // query, an exit), then a wake-up message to itself goes on with the plan.
      auto p = st.exec->advance(1);
      if (p == pipeline::StageExecutor::Progress::Yielded) {
        self->send(self, wake_atom::value);
        return;
      }
      if (p != pipeline::StageExecutor::Progress::Done) return;
    } catch (const std::exception& e) {
      fail(self, e.what());
      return;
    }
    st.plan_done = true;
    for (auto& c : st.chunks)  // the last bucket of each chunk (its embedding end)
      if (c.group) offer_bucket(self, c);
  }
  if (st.buckets_in_flight == 0) finish(self);
}

}  // namespace

StageState::~StageState() {
  auto why = caf::make_error(caf::sec::runtime_error, stage_name + ": stopped (killed)");
  if (done.pending()) done.deliver(why);
  if (deferred && deferred->promise.pending()) deferred->promise.deliver(why);
}

stage_actor::behavior_type stage_actor_fn(stage_actor::stateful_pointer<StageState> self, StageSpec spec) {
  auto& st = self->state;
  st.stage_name = spec.name;
  st.bucket_floats = spec.bucket_floats;
  std::vector<pipeline::StageExecutor::Chunk> exec_chunks;
  for (size_t c = 0; c < spec.chunks.size(); c++) {
    StageState::Chunk ch;
    ch.model = std::make_shared<model::Transformer>(spec.model, spec.chunks[c]);
    ch.model->init_weights(spec.seed);
    ch.optim = std::make_shared<model::AdamW>(ch.model->params(), spec.optim);
    ch.global = int(c) * spec.stages + spec.stage;
    if (c < spec.dp_groups.size() && spec.dp_groups[c] && spec.dp_groups[c]->ranks() > 1) ch.group = spec.dp_groups[c];
    exec_chunks.push_back({ch.model.get(), spec.links[c]});
    st.chunks.push_back(std::move(ch));
  }
  st.exec = std::make_unique<pipeline::StageExecutor>(std::move(exec_chunks), spec.stage, spec.stages);
  st.dp_rank = spec.dp_rank;
  st.links = spec.links;
  st.faults = spec.faults;
  // Gradient buckets: during a chunk's last backward of the step, each finished layer's
  // gradients join the open bucket, offered once it holds bucket_floats.
  for (auto& c : st.chunks) {
    if (!c.group) continue;
    StageState::Chunk* cp = &c;
    c.model->set_grad_ready_hook([self, cp](int64_t off, int64_t n) {
      if (!cp->armed) return;
      if (cp->bucket_hi == cp->bucket_lo) cp->bucket_hi = off + n;
      cp->bucket_lo = off;  // groups arrive from the end of the buffer to its start
      if (cp->bucket_hi - cp->bucket_lo >= self->state.bucket_floats) offer_bucket(self, *cp);
    });
  }
  StageState* state = &st;
  // Called before each instruction (again when it was blocked on its input before).
  st.exec->set_before_op([state](const pipeline::Instr& in, int64_t step) {
    maybe_fault(*state, step, in.op == pipeline::Op::Forward ? "forward" : "backward");
    if (in.op == pipeline::Op::Backward) {
      auto& c = state->chunks[size_t(in.chunk)];
      c.armed = int64_t(state->exec->position()) == c.last_backward;
    }
  });
  // Stopped (by its supervisor, when a peer failed) with a request still open: answer it,
  // so that nobody waits for a step this actor will never finish.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& s = self->state;
    auto why = caf::make_error(caf::sec::runtime_error, s.stage_name + ": stopped (" + describe_reason(msg.reason) + ")");
    if (s.done.pending()) s.done.deliver(why);
    if (s.deferred) s.deferred->promise.deliver(why), s.deferred.reset();
    self->quit(msg.reason);
  });
  // Channel callbacks run on the peer's thread: they only post a wake-up message.
  stage_actor me = self;
  auto wake = [me] { caf::anon_send(me, wake_atom::value); };
  for (auto& l : spec.links) {
    for (auto* ch : {l.act_in, l.grad_in})
      if (ch) ch->on_readable(wake);
    for (auto* ch : {l.act_out, l.grad_out})
      if (ch) ch->on_writable(wake);
  }
  return {
      [self](run_step_atom, StepOrder order) -> caf::typed_response_promise<StepDone> {
        auto& s = self->state;
        s.order = std::move(order);
        for (auto& c : s.chunks) {
          c.model->zero_grad();
          c.last_backward = -1;
          c.next_bucket = 0;
          c.armed = false;
          c.bucket_lo = c.bucket_hi = 0;
        }
        for (size_t i = 0; i < s.order.plan.size(); i++)
          if (s.order.plan[i].op == pipeline::Op::Backward) s.chunks[size_t(s.order.plan[i].chunk)].last_backward = int64_t(i);
        s.exec->begin_step(s.order.step, s.order.plan, s.order.microbatches.get(), s.order.dloss_scale);
        s.running = true;
        s.plan_done = false;
        s.buckets_in_flight = 0;
        s.done = self->make_response_promise<StepDone>();
        auto promise = s.done;
        advance(self);
        return promise;
      },
      [self](apply_atom, int64_t step, float lr, float grad_scale) -> caf::result<Applied> {
        try {
          maybe_fault(self->state, step, "optimizer");
        } catch (const std::exception& e) {
          std::string why = self->state.stage_name + ": " + e.what();
          fail(self, e.what());
          return caf::make_error(caf::sec::runtime_error, why);
        }
        auto& s = self->state;
        if (s.pins > 0) {  // a checkpoint copy still reads the parameters: wait for it
          s.deferred = StageState::DeferredApply{step, lr, grad_scale, now_ns(), self->make_response_promise<Applied>()};
          return s.deferred->promise;
        }
        for (auto& c : s.chunks) c.optim->step(lr, grad_scale);
        return Applied{step, 0};
      },
      [self](snapshot_atom) -> SnapshotSource {
        auto& s = self->state;
        s.pins++;
        SnapshotSource src{s.stage_name, {}, {}, caf::actor_cast<caf::actor>(self)};
        for (auto& c : s.chunks) src.models.push_back(c.model), src.optims.push_back(c.optim);
        return src;
      },
      [self](released_atom) {
        auto& s = self->state;
        if (s.pins > 0 && --s.pins == 0 && s.deferred) {
          auto d = std::move(*s.deferred);
          s.deferred.reset();
          for (auto& c : s.chunks) c.optim->step(d.lr, d.scale);
          d.promise.deliver(Applied{d.step, now_ns() - d.since_ns});
        }
      },
      [self](restore_atom, RestoreMsg msg) -> caf::result<bool> {
        auto& s = self->state;
        for (auto& c : s.chunks) {
          auto ok = ckpt::restore_stage(*c.model, *c.optim, *msg.tensors, msg.optimizer_steps);
          if (!ok) return caf::make_error(caf::sec::invalid_argument, s.stage_name + ": " + ok.error().message);
        }
        return true;
      },
      [self](wake_atom) { advance(self); },
      [self](actor_status_atom) -> StageStatus {
        auto& s = self->state;
        StageStatus st;
        st.name = s.stage_name;
        st.mailbox = self->mailbox().size();
        st.running = s.running;
        st.step = s.order.step;
        st.steps = s.steps_finished;
        st.pins = s.pins;
        for (auto& c : s.chunks) {
          st.params += c.model->num_params();
          st.param_bytes += 2 * c.model->num_params() * int64_t(sizeof(float));
          st.optimizer_bytes += int64_t(c.optim->m().nbytes() + c.optim->v().nbytes());
          st.activation_bytes += c.model->activation_bytes();
        }
        st.busy_seconds = s.last_busy_seconds;
        return st;
      },
      [self](reduced_atom, bool ok) {
        auto& s = self->state;
        if (!s.running) return;
        s.buckets_in_flight--;
        if (!ok) fail(self, "a data-parallel peer failed during the gradient all-reduce");
        else advance(self);
      },
  };
}

}  // namespace troupe::actors
