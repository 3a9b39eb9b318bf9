#include "actors/stage_executor.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <set>

namespace troupe::pipeline {

using transport::Envelope;
using transport::InprocChannel;

static int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

model::StageRange chunk_layers(int n_layer, int stages, int chunks, int g) {
  const int64_t G = int64_t(stages) * chunks, L = n_layer;
  TROUPE_CHECK(g >= 0 && g < G, "chunk %d of %lld", g, (long long)G);
  return {int(g * L / G), int((g + 1) * L / G), g == 0, g == G - 1};
}

StageLinks chunk_links(const std::vector<InprocChannel*>& act, const std::vector<InprocChannel*>& grad, int g) {
  TROUPE_CHECK(act.size() == grad.size(), "%zu activation channels, %zu gradient channels", act.size(), grad.size());
  const int G = int(act.size()) + 1;
  TROUPE_CHECK(g >= 0 && g < G, "chunk %d of %d", g, G);
  StageLinks l;
  if (g > 0) l.act_in = act[size_t(g - 1)], l.grad_out = grad[size_t(g - 1)];
  if (g + 1 < G) l.act_out = act[size_t(g)], l.grad_in = grad[size_t(g)];
  return l;
}

Expected<void> check_slots(const Schedule& s, int slots) {
  const int p = s.stages, v = s.chunks, m = s.microbatches, G = p * v;
  if (slots < 1) return make_error(strformat("%s: %d slots per channel", s.name.c_str(), slots));
  // Complete plans that finish with unbounded channels (and in range) first.
  if (auto ok = validate(s); !ok) return ok.error();
  // The executor's protocol on abstract channels: FIFOs of microbatch numbers, one per
  // edge e = chunk e -> e + 1 and direction; parked inputs per (global chunk, microbatch).
  std::vector<std::deque<int>> act(static_cast<size_t>(G)), grad(static_cast<size_t>(G));
  std::vector<std::vector<char>> parked_act(static_cast<size_t>(G), std::vector<char>(static_cast<size_t>(m), 0));
  auto parked_grad = parked_act;
  auto take = [](std::deque<int>& q, std::vector<char>& parked, int mb) {
    if (parked[size_t(mb)]) {
      parked[size_t(mb)] = 0;
      return true;
    }
    while (!q.empty()) {
      int x = q.front();
      q.pop_front();
      if (x == mb) return true;
      parked[size_t(x)] = 1;
    }
    return false;
  };
  struct Run {
    size_t next = 0;
    std::deque<int>* pending_to = nullptr;  // output waiting for a credit
    int pending_mb = 0;
    bool pending_grad = false;
  };
  std::vector<Run> run(static_cast<size_t>(p));
  while (true) {
    bool moved = false, all_done = true;
    for (int st = 0; st < p; st++) {
      Run& r = run[size_t(st)];
      const StagePlan& plan = s.plans[size_t(st)];
      while (true) {
        if (r.pending_to) {
          if (int(r.pending_to->size()) >= slots) break;
          r.pending_to->push_back(r.pending_mb);
          r.pending_to = nullptr;
          moved = true;
        }
        if (r.next >= plan.size()) break;
        const Instr& in = plan[r.next];
        const int g = s.global_chunk(st, in.chunk);
        if (in.op == Op::Forward) {
          if (g > 0 && !take(act[size_t(g - 1)], parked_act[size_t(g)], in.microbatch)) break;
          if (g + 1 < G) r.pending_to = &act[size_t(g)], r.pending_mb = in.microbatch, r.pending_grad = false;
        } else {
          if (g + 1 < G && !take(grad[size_t(g)], parked_grad[size_t(g)], in.microbatch)) break;
          if (g > 0) r.pending_to = &grad[size_t(g - 1)], r.pending_mb = in.microbatch, r.pending_grad = true;
        }
        r.next++;
        moved = true;
      }
      all_done &= r.next >= plan.size() && !r.pending_to;
    }
    if (all_done) return {};
    if (!moved) {
      std::string where;
      for (int st = 0; st < p; st++) {
        const Run& r = run[size_t(st)];
        if (r.pending_to) {
          where += strformat(" stage %d waits for a credit to send the %s of microbatch %d;", st,
                             r.pending_grad ? "gradient" : "activation", r.pending_mb);
        } else if (r.next < s.plans[size_t(st)].size()) {
          const Instr& in = s.plans[size_t(st)][r.next];
          where += strformat(" stage %d waits for the input of %s%d.%d;", st, in.op == Op::Forward ? "F" : "B",
                             in.microbatch, in.chunk);
        }
      }
      return make_error(strformat("%s (p=%d m=%d v=%d) deadlocks with %d slot%s per channel:", s.name.c_str(), p, m, v,
                                  slots, slots == 1 ? "" : "s") +
                        where);
    }
  }
}

Expected<int> required_slots(const Schedule& s) {
  // Each channel carries m envelopes per step, so with m slots no send ever waits.
  for (int slots = 1; slots < s.microbatches; slots++)
    if (check_slots(s, slots)) return slots;
  auto last = check_slots(s, std::max(1, s.microbatches));
  if (!last) return last.error();
  return std::max(1, s.microbatches);
}

StageExecutor::StageExecutor(model::Transformer& model, StageLinks links) {
  chunks_.push_back(ChunkState{&model, links, -1, {}, {}, {}, {}, {}});
}

StageExecutor::StageExecutor(std::vector<Chunk> chunks, int stage, int stages) {
  TROUPE_CHECK(!chunks.empty(), "stage %d: no model chunks", stage);
  TROUPE_CHECK(stages >= 1 && stage >= 0 && stage < stages, "stage %d of %d", stage, stages);
  const int G = stages * int(chunks.size());
  std::set<const InprocChannel*> inputs;
  for (size_t c = 0; c < chunks.size(); c++) {
    const Chunk& ch = chunks[c];
    const int g = int(c) * stages + stage;
    TROUPE_CHECK(ch.model, "stage %d chunk %zu: no model", stage, c);
    const model::StageRange& r = ch.model->stage();
    TROUPE_CHECK(r.embedding == (g == 0) && r.head == (g == G - 1),
                 "stage %d chunk %zu (global chunk %d of %d): embedding %d and head %d do not match its place", stage,
                 c, g, G, int(r.embedding), int(r.head));
    TROUPE_CHECK(g == 0 || (ch.links.act_in && ch.links.grad_out),
                 "stage %d chunk %zu (global chunk %d): act_in and grad_out are needed", stage, c, g);
    TROUPE_CHECK(g == G - 1 || (ch.links.act_out && ch.links.grad_in),
                 "stage %d chunk %zu (global chunk %d): act_out and grad_in are needed", stage, c, g);
    // Parking is per chunk: two chunks reading one channel would take each other's inputs.
    for (const InprocChannel* in : {ch.links.act_in, ch.links.grad_in})
      TROUPE_CHECK(!in || inputs.insert(in).second, "stage %d chunk %zu: channel %s is read by another chunk", stage, c,
                   in->name().c_str());
    chunks_.push_back(ChunkState{ch.model, ch.links, g, {}, {}, {}, {}, {}});
  }
}

bool StageExecutor::has_head() const {
  for (auto& c : chunks_)
    if (c.model->stage().head) return true;
  return false;
}

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
  for (auto& c : chunks_) {
    c.early_act.assign(mbs->size(), std::nullopt);
    c.early_grad.assign(mbs->size(), std::nullopt);
    c.slot_of.assign(mbs->size(), -1);
    c.slot_taken.assign(c.slot_taken.size(), 0);
    c.held_input.clear();
  }
}

bool StageExecutor::try_flush() {
  if (!pending_) return true;
  if (pending_to_->closed()) throw PeerFailed("channel " + pending_to_->name() + " closed: a peer stage failed");
  if (!pending_to_->try_send(*pending_)) return false;
  pending_.reset();
  return true;
}

// Takes microbatch mb's envelope from ch, parking any earlier arrivals for later. The
// envelope must come from global chunk `from` (unchecked when negative).
static std::optional<Envelope> take(InprocChannel* ch, std::vector<std::optional<Envelope>>& early, int mb,
                                    int64_t step, int from) {
  if (early[size_t(mb)]) {
    auto e = std::move(early[size_t(mb)]);
    early[size_t(mb)].reset();
    return e;
  }
  while (auto e = ch->try_recv()) {
    TROUPE_CHECK(e->step == step, "channel %s: envelope of step %lld during step %lld", ch->name().c_str(),
                 (long long)e->step, (long long)step);
    TROUPE_CHECK(from < 0 || e->chunk == from, "channel %s: envelope of chunk %d, expected chunk %d",
                 ch->name().c_str(), e->chunk, from);
    TROUPE_CHECK(e->microbatch >= 0 && size_t(e->microbatch) < early.size() && !early[size_t(e->microbatch)],
                 "channel %s: unexpected microbatch %d", ch->name().c_str(), e->microbatch);
    if (e->microbatch == mb) return e;
    early[size_t(e->microbatch)] = std::move(e);
  }
  if (ch->closed()) throw PeerFailed("channel " + ch->name() + " closed: a peer stage failed");
  return std::nullopt;
}

// The lowest free activation slot, marked taken (a new one when all are taken).
static int take_slot(std::vector<char>& taken) {
  size_t i = 0;
  while (i < taken.size() && taken[i]) i++;
  if (i == taken.size()) taken.push_back(0);
  taken[i] = 1;
  return int(i);
}

StageExecutor::Progress StageExecutor::advance(int max_ops) {
  for (int ops = 0;; ops++) {
    if (!try_flush()) return Progress::Blocked;
    if (next_ >= plan_.size()) return Progress::Done;
    if (ops == max_ops) return Progress::Yielded;
    const Instr& in = plan_[next_];
    TROUPE_CHECK(in.chunk >= 0 && in.chunk < chunks(), "instruction for chunk %d on a stage of %d chunks", in.chunk,
                 chunks());
    ChunkState& ch = chunks_[size_t(in.chunk)];
    model::Transformer& model = *ch.model;
    const auto& range = model.stage();
    const int C = model.config().d_model;
    // Envelopes name the global chunk that sent them (0 when the stage is not known).
    const int sender = std::max(ch.global, 0);
    const Microbatch& mb = (*mbs_)[size_t(in.microbatch)];
    const int64_t N = int64_t(mb.B) * mb.T;
    if (before_op_) before_op_(in, step_);
    if (in.op == Op::Forward) {
      std::optional<Envelope> input;
      if (!range.embedding) {
        input = take(ch.links.act_in, ch.early_act, in.microbatch, step_, ch.global < 0 ? -1 : ch.global - 1);
        if (!input) return Progress::Blocked;
      }
      TROUPE_CHECK(ch.slot_of[size_t(in.microbatch)] < 0, "chunk %d: microbatch %d forwarded twice", in.chunk,
                   in.microbatch);
      const int slot = take_slot(ch.slot_taken);
      ch.slot_of[size_t(in.microbatch)] = slot;
      // No copies: the model reads the received activations in place and writes its
      // output straight into the tensor that is then handed to the next stage.
      if (size_t(slot) >= ch.held_input.size()) ch.held_input.resize(size_t(slot) + 1);
      if (input) ch.held_input[size_t(slot)] = std::move(input->payload);
      Tensor out;
      if (!range.head) out = Tensor::empty({N, C});
      const int64_t t0 = now_ns();
      float loss = model.forward(mb.tokens.data(), input ? ch.held_input[size_t(slot)].data<float>() : nullptr,
                                 range.head ? mb.targets.data() : nullptr, mb.B, mb.T, slot, /*borrow_input=*/true,
                                 range.head ? nullptr : out.data<float>());
      if (range.head) {
        losses_[size_t(in.microbatch)] = loss;
      } else {
        pending_ = Envelope{step_, in.microbatch, sender, std::move(out)};
        pending_to_ = ch.links.act_out;
      }
      spans_.push_back({Op::Forward, in.microbatch, t0, now_ns(), in.chunk});
    } else {
      std::optional<Envelope> grad;
      if (!range.head) {
        grad = take(ch.links.grad_in, ch.early_grad, in.microbatch, step_, ch.global < 0 ? -1 : ch.global + 1);
        if (!grad) return Progress::Blocked;
      }
      const int slot = ch.slot_of[size_t(in.microbatch)];
      TROUPE_CHECK(slot >= 0, "chunk %d: backward of microbatch %d before its forward", in.chunk, in.microbatch);
      Tensor dx;
      if (!range.embedding) dx = Tensor::empty({N, C});
      const int64_t t0 = now_ns();
      model.backward(grad ? grad->payload.data<float>() : nullptr, dloss_scale_, slot,
                     range.embedding ? nullptr : dx.data<float>());
      if (size_t(slot) < ch.held_input.size()) ch.held_input[size_t(slot)] = Tensor();  // its backward is done
      if (!range.embedding) {
        pending_ = Envelope{step_, in.microbatch, sender, std::move(dx)};
        pending_to_ = ch.links.grad_out;
      }
      ch.slot_of[size_t(in.microbatch)] = -1;
      ch.slot_taken[size_t(slot)] = 0;
      spans_.push_back({Op::Backward, in.microbatch, t0, now_ns(), in.chunk});
    }
    next_++;
  }
}

}  // namespace troupe::pipeline
