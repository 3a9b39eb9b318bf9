#include "actors/stage_executor.h"

#include <chrono>
#include <cmath>
#include <cstring>

namespace troupe::pipeline {

using transport::Envelope;

static int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
using transport::InprocChannel;

StageExecutor::StageExecutor(model::Transformer& model, StageLinks links) : model_(model), links_(links) {}

void StageExecutor::begin_step(int64_t step, const StagePlan& plan, const std::vector<Microbatch>* mbs,
                               float dloss_scale) {
  TROUPE_CHECK(done() || plan_.empty(), "begin_step %lld while step %lld is still running", (long long)step,
               (long long)step_);
  step_ = step;
  plan_ = plan;
  mbs_ = mbs;
  dloss_scale_ = dloss_scale;
  next_ = 0;
  losses_.assign(mbs->size(), NAN);
  spans_.clear();
  early_act_.assign(mbs->size(), std::nullopt);
  early_grad_.assign(mbs->size(), std::nullopt);
}

bool StageExecutor::try_flush() {
  if (!pending_) return true;
  if (pending_to_->closed()) throw PeerFailed("channel " + pending_to_->name() + " closed: a peer stage failed");
  if (!pending_to_->try_send(*pending_)) return false;
  pending_.reset();
  return true;
}

// Takes microbatch mb's envelope from ch, parking any earlier arrivals for later.
static std::optional<Envelope> take(InprocChannel* ch, std::vector<std::optional<Envelope>>& early, int mb,
                                    int64_t step) {
  if (early[size_t(mb)]) {
    auto e = std::move(early[size_t(mb)]);
    early[size_t(mb)].reset();
    return e;
  }
  while (auto e = ch->try_recv()) {
    TROUPE_CHECK(e->step == step, "channel %s: envelope of step %lld during step %lld", ch->name().c_str(),
                 (long long)e->step, (long long)step);
    TROUPE_CHECK(e->microbatch >= 0 && size_t(e->microbatch) < early.size() && !early[size_t(e->microbatch)],
                 "channel %s: unexpected microbatch %d", ch->name().c_str(), e->microbatch);
    if (e->microbatch == mb) return e;
    early[size_t(e->microbatch)] = std::move(e);
  }
  if (ch->closed()) throw PeerFailed("channel " + ch->name() + " closed: a peer stage failed");
  return std::nullopt;
}

StageExecutor::Progress StageExecutor::advance() {
  const auto& stage = model_.stage();
  const int C = model_.config().d_model;
  while (true) {
    if (!try_flush()) return Progress::Blocked;
    if (next_ >= plan_.size()) return Progress::Done;
    const Instr& in = plan_[next_];
    TROUPE_CHECK(in.chunk == 0, "stage executor runs one model chunk per stage (interleaving: not yet)");
    const Microbatch& mb = (*mbs_)[size_t(in.microbatch)];
    const int64_t N = int64_t(mb.B) * mb.T;
    if (before_op_) before_op_(in, step_);
    if (in.op == Op::Forward) {
      std::optional<Envelope> input;
      if (!stage.embedding) {
        input = take(links_.act_in, early_act_, in.microbatch, step_);
        if (!input) return Progress::Blocked;
      }
      const int64_t t0 = now_ns();
      float loss = model_.forward(mb.tokens.data(), input ? input->payload.data<float>() : nullptr,
                                  stage.head ? mb.targets.data() : nullptr, mb.B, mb.T, in.microbatch);
      if (stage.head) {
        losses_[size_t(in.microbatch)] = loss;
      } else {
        Tensor out = Tensor::empty({N, C});
        std::memcpy(out.raw(), model_.output(in.microbatch), out.nbytes());
        pending_ = Envelope{step_, in.microbatch, 0, std::move(out)};
        pending_to_ = links_.act_out;
      }
      spans_.push_back({Op::Forward, in.microbatch, t0, now_ns()});
    } else {
      std::optional<Envelope> grad;
      if (!stage.head) {
        grad = take(links_.grad_in, early_grad_, in.microbatch, step_);
        if (!grad) return Progress::Blocked;
      }
      const int64_t t0 = now_ns();
      model_.backward(grad ? grad->payload.data<float>() : nullptr, dloss_scale_, in.microbatch);
      if (!stage.embedding) {
        Tensor dx = Tensor::empty({N, C});
        std::memcpy(dx.raw(), model_.input_grad(in.microbatch), dx.nbytes());
        pending_ = Envelope{step_, in.microbatch, 0, std::move(dx)};
        pending_to_ = links_.grad_out;
      }
      spans_.push_back({Op::Backward, in.microbatch, t0, now_ns()});
    }
    next_++;
  }
}

}  // namespace troupe::pipeline
