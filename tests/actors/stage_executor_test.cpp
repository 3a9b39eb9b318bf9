// Pipeline-parallel training driven by the stage executors (all stages round-robin on
// one thread, talking through in-process channels) must equal one model trained with
// the same microbatches: bitwise. Each stage (each model chunk, when interleaved) runs
// exactly the single model's kernels on the same shapes, and each chunk's gradients
// accumulate over microbatches in the same order as the single model's: GPipe and 1F1B
// run backwards in microbatch order, and so does interleaved 1F1B for every chunk
// (microbatches go through a chunk in groups of p, groups in order; checked below), so
// nothing may differ. The global gradient norm is summed in a fixed order on both
// sides: chunks in local order within a stage, then stages in order.

#include "actors/stage_executor.h"

#include <cmath>
#include <cstring>
#include <memory>

#include "core/rng.h"
#include "ops/model/optimizer.h"
#include "microbatches.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::model;
using namespace troupe::pipeline;
using transport::InprocChannel;

namespace {

std::vector<pipeline::Microbatch> make_microbatches(int m, int B, int T, int V, int64_t step) {
  return testing::random_microbatches(77, m, B, T, V, step);
}

// Runs every executor until all are done; false when a whole round moves none of them
// (a deadlock: the run is deterministic, so every interleaving of the stages gets stuck).
bool drive(std::vector<std::unique_ptr<StageExecutor>>& ex) {
  for (int round = 0;; round++) {
    bool all_done = true, moved = false;
    for (auto& e : ex) {
      size_t before = e->position();
      bool was_done = e->done();
      e->advance();
      moved |= e->position() != before || (e->done() && !was_done);
      all_done &= e->done();
    }
    if (all_done) return true;
    if (!moved) return false;
    REQUIRE(round < 100000);
  }
}

// One pipeline replica: p stages of v chunks each, chunk g over chunk_layers(g), one
// activation and one gradient channel per edge g -> g + 1 (wired by chunk_links).
struct Pipeline {
  int p = 1, v = 1;
  std::vector<std::unique_ptr<Transformer>> chunks;  // by global chunk
  std::vector<std::unique_ptr<AdamW>> opts;          // by global chunk
  std::vector<std::unique_ptr<InprocChannel>> channels;
  std::vector<std::unique_ptr<StageExecutor>> ex;  // by stage
};

// one_chunk_form: the StageExecutor(model, links) constructor (v must be 1).
Pipeline make_pipeline(const ModelConfig& cfg, int p, int v, int slots, const OptimConfig& oc, bool one_chunk_form) {
  Pipeline pl;
  pl.p = p, pl.v = v;
  const int G = p * v;
  for (int g = 0; g < G; g++) {
    pl.chunks.push_back(std::make_unique<Transformer>(cfg, chunk_layers(cfg.n_layer, p, v, g)));
    pl.chunks.back()->init_weights(5);
    pl.opts.push_back(std::make_unique<AdamW>(pl.chunks.back()->params(), oc));
  }
  std::vector<InprocChannel*> act, grad;
  for (int g = 0; g + 1 < G; g++) {
    pl.channels.push_back(std::make_unique<InprocChannel>(strformat("act%d->%d", g, g + 1), slots));
    act.push_back(pl.channels.back().get());
    pl.channels.push_back(std::make_unique<InprocChannel>(strformat("grad%d<-%d", g, g + 1), slots));
    grad.push_back(pl.channels.back().get());
  }
  for (int s = 0; s < p; s++) {
    if (one_chunk_form) {
      REQUIRE(v == 1);
      pl.ex.push_back(std::make_unique<StageExecutor>(*pl.chunks[size_t(s)], chunk_links(act, grad, s)));
      continue;
    }
    std::vector<StageExecutor::Chunk> mine;
    for (int c = 0; c < v; c++) mine.push_back({pl.chunks[size_t(c * p + s)].get(), chunk_links(act, grad, c * p + s)});
    pl.ex.push_back(std::make_unique<StageExecutor>(std::move(mine), s, p));
  }
  return pl;
}

// Most microbatches of local chunk c that a plan holds between forward and backward.
int peak_in_flight(const StagePlan& plan, int c) {
  int now = 0, peak = 0;
  for (const Instr& in : plan)
    if (in.chunk == c) peak = std::max(peak, now += in.op == Op::Forward ? 1 : -1);
  return peak;
}

// Activation bytes of one slot of a chunk at (B, T).
int64_t one_slot_bytes(const ModelConfig& cfg, StageRange range, int B, int T) {
  Transformer t(cfg, range);
  std::vector<int32_t> tokens(static_cast<size_t>(B * T), 0);
  std::vector<float> input(static_cast<size_t>(B * T * cfg.d_model), 0.0f);
  t.forward(range.embedding ? tokens.data() : nullptr, range.embedding ? nullptr : input.data(),
            range.head ? tokens.data() : nullptr, B, T, 0);
  return t.activation_bytes();
}

void check_pipeline_equals_single(const ModelConfig& cfg, const Schedule& sched, int slots, int steps,
                                  bool one_chunk_form = false) {
  const int p = sched.stages, v = sched.chunks, m = sched.microbatches, B = 2, T = 8;
  INFO(cfg.str() << " " << sched.name << " p=" << p << " v=" << v << " m=" << m << " slots=" << slots);
  const float scale = 1.0f / float(m * B * T);
  OptimConfig oc;
  oc.lr = 3e-3f;

  Transformer ref(cfg);
  ref.init_weights(5);
  AdamW ref_opt(ref.params(), oc);
  Pipeline pl = make_pipeline(cfg, p, v, slots, oc, one_chunk_form);

  for (int step = 0; step < steps; step++) {
    auto mbs = make_microbatches(m, B, T, cfg.vocab_size, step);
    // the single model, microbatch by microbatch
    ref.zero_grad();
    std::vector<float> ref_losses;
    for (auto& mb : mbs) {
      ref_losses.push_back(ref.forward(mb.tokens.data(), nullptr, mb.targets.data(), B, T));
      ref.backward(nullptr, scale);
    }
    // the pipeline
    for (auto& c : pl.chunks) c->zero_grad();
    for (int s = 0; s < p; s++) pl.ex[size_t(s)]->begin_step(step, sched.plans[size_t(s)], &mbs, scale);
    REQUIRE(drive(pl.ex));
    INFO("step " << step);
    // the last stage holds the last chunk, and with it the head and the losses
    for (int s = 0; s < p; s++) CHECK(pl.ex[size_t(s)]->has_head() == (s == p - 1));
    CHECK(pl.ex.back()->microbatch_losses() == ref_losses);
    // spans follow the plan, chunk included
    for (int s = 0; s < p; s++) {
      const auto& spans = pl.ex[size_t(s)]->spans();
      const auto& plan = sched.plans[size_t(s)];
      REQUIRE(spans.size() == plan.size());
      for (size_t i = 0; i < plan.size(); i++)
        CHECK(Instr{spans[i].op, spans[i].microbatch, spans[i].chunk} == plan[i]);
    }
    // gradients, parameter by parameter, bitwise; the squared norm in (stage, chunk) order
    double ref_sq = 0, pipe_sq = 0;
    for (int s = 0; s < p; s++) {
      double stage_ref = 0, stage_pipe = 0;
      for (int c = 0; c < v; c++) {
        const size_t g = size_t(c * p + s);
        double chunk_ref = 0;
        for (auto& q : pl.chunks[g]->params()) {
          const Param* r = ref.find_param(q.name);
          REQUIRE(r);
          INFO(q.name);
          CHECK(std::memcmp(q.grad.raw(), r->grad.raw(), q.grad.nbytes()) == 0);
          chunk_ref += ops::sum_squares(r->grad.data<float>(), r->grad.numel());
        }
        stage_ref += chunk_ref;
        stage_pipe += pl.opts[g]->grad_sum_squares();
      }
      ref_sq += stage_ref;
      pipe_sq += stage_pipe;
    }
    REQUIRE(ref_sq == pipe_sq);
    float lr = oc.lr;
    ref_opt.step(lr, ref_opt.clip_scale(std::sqrt(ref_sq)));
    for (auto& o : pl.opts) o->step(lr, o->clip_scale(std::sqrt(pipe_sq)));
  }
  // parameters after the steps, bitwise
  for (auto& c : pl.chunks)
    for (auto& q : c->params()) {
      INFO(q.name);
      CHECK(std::memcmp(q.value.raw(), ref.find_param(q.name)->value.raw(), q.value.nbytes()) == 0);
    }
  // activation memory: each chunk holds as many slots as it has microbatches in flight
  for (int s = 0; s < p; s++)
    for (int c = 0; c < v; c++) {
      const Transformer& t = *pl.chunks[size_t(c * p + s)];
      INFO("stage " << s << " chunk " << c);
      CHECK(t.activation_bytes() == peak_in_flight(sched.plans[size_t(s)], c) * one_slot_bytes(cfg, t.stage(), B, T));
    }
}

}  // namespace

TEST_CASE("pipeline training equals the single model bitwise", "[pipeline][executor]") {
  // Llama: untied head, so every parameter lives on exactly one stage.
  ModelConfig llama = ModelConfig::llama(4, 4, 2, 32, 48, 61, 16);
  for (int p : {1, 2, 4})
    for (const char* s : {"gpipe", "1f1b"})
      check_pipeline_equals_single(llama, make_schedule(s, p, 4, 1).value(), p, 3, /*one_chunk_form=*/true);
  // The multi-chunk constructor with one chunk per stage is the same pipeline.
  check_pipeline_equals_single(llama, one_f_one_b_schedule(4, 8), 4, 2);
}

TEST_CASE("interleaved plans run each chunk's backwards in microbatch order", "[pipeline][interleaved]") {
  // The premise of bitwise equality: gradients of a chunk accumulate in order 0..m-1.
  for (int p : {1, 2, 3, 4, 8})
    for (int v : {2, 3, 4})
      for (int m : {p, 2 * p, 4 * p}) {
        INFO("p=" << p << " v=" << v << " m=" << m);
        auto s = interleaved_schedule(p, m, v);
        REQUIRE(s.ok());
        for (int st = 0; st < p; st++)
          for (int c = 0; c < v; c++) {
            std::vector<int> order;
            for (const Instr& in : s->plans[size_t(st)])
              if (in.op == Op::Backward && in.chunk == c) order.push_back(in.microbatch);
            for (int i = 0; i < m; i++) CHECK(order[size_t(i)] == i);
          }
      }
}

TEST_CASE("interleaved pipeline training equals the single model bitwise", "[pipeline][executor][interleaved]") {
  // 8 layers: 2 per chunk at p=2 v=2, 1 per chunk at p=4 v=2, and unequal chunks (1 or
  // 2 layers) at p=2 v=3.
  ModelConfig llama = ModelConfig::llama(8, 4, 2, 32, 48, 61, 16);
  struct Case {
    int p, v, m;
  };
  for (Case k : {Case{2, 2, 4}, Case{2, 2, 8}, Case{2, 3, 4}, Case{2, 3, 6}, Case{4, 2, 4}, Case{4, 2, 8}}) {
    Schedule s = interleaved_schedule(k.p, k.m, k.v).value();
    // The coordinator's p slots per channel, and the fewest that suffice (one).
    REQUIRE(required_slots(s).value() == 1);
    check_pipeline_equals_single(llama, s, k.p, 3);
    check_pipeline_equals_single(llama, s, 1, 1);
  }
}

TEST_CASE("one slot per channel suffices for GPipe, 1F1B and interleaved plans", "[pipeline][interleaved]") {
  for (int p : {1, 2, 3, 4, 8})
    for (int m : {1, 2, 3, 4, 8, 16, 32}) {
      INFO("p=" << p << " m=" << m);
      CHECK(required_slots(gpipe_schedule(p, m)).value() == 1);
      CHECK(required_slots(one_f_one_b_schedule(p, m)).value() == 1);
      for (int v : {2, 3, 4}) {
        if (m % p) continue;
        INFO("v=" << v);
        CHECK(required_slots(interleaved_schedule(p, m, v).value()).value() == 1);
      }
    }
}

TEST_CASE("a plan that needs more slots deadlocks with fewer, as check_slots predicts", "[pipeline][executor]") {
  // Stage 0 runs GPipe, stage 1 1F1B: stage 1 sends the gradients of microbatches 0 and
  // 1 while stage 0 is still sending activations, so each waits for the other's credit
  // unless a channel holds two payloads. Without bounds on the channels the plans are fine.
  Schedule mixed{"mixed", 2, 4, 1, {gpipe_schedule(2, 4).plans[0], one_f_one_b_schedule(2, 4).plans[1]}};
  REQUIRE(validate(mixed).ok());
  auto one = check_slots(mixed, 1);
  REQUIRE_FALSE(one.ok());
  CHECK_THAT(one.error().message,
             Catch::Contains("deadlocks with 1 slot per channel") &&
                 Catch::Contains("stage 0 waits for a credit to send the activation of microbatch 3") &&
                 Catch::Contains("stage 1 waits for a credit to send the gradient of microbatch 1"));
  CHECK(required_slots(mixed).value() == 2);

  ModelConfig cfg = ModelConfig::llama(2, 2, 1, 16, 24, 31, 8);
  auto mbs = make_microbatches(4, 1, 4, cfg.vocab_size, 0);
  for (int slots : {1, 2}) {
    Pipeline pl = make_pipeline(cfg, 2, 1, slots, OptimConfig{}, false);
    for (int s = 0; s < 2; s++) pl.ex[size_t(s)]->begin_step(0, mixed.plans[size_t(s)], &mbs, 0.25f);
    CHECK(drive(pl.ex) == (slots == 2));
  }
  // A plan that deadlocks whatever the slots is an error, not a number.
  // Stage 0 waits for the gradient of microbatch 0 before it sends microbatch 1, which
  // stage 1 wants first.
  Schedule bad{"bad", 2, 2, 1, {}};
  bad.plans.push_back({{Op::Forward, 0, 0}, {Op::Backward, 0, 0}, {Op::Forward, 1, 0}, {Op::Backward, 1, 0}});
  bad.plans.push_back({{Op::Forward, 1, 0}, {Op::Backward, 1, 0}, {Op::Forward, 0, 0}, {Op::Backward, 0, 0}});
  auto r = required_slots(bad);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("deadlocks"));
}

TEST_CASE("a stage whose input has not arrived reports Blocked and resumes", "[pipeline][executor]") {
  ModelConfig cfg = ModelConfig::llama(2, 2, 1, 16, 24, 31, 8);
  Transformer s1(cfg, StageRange{1, 2, false, true});
  s1.init_weights(1);
  InprocChannel act("act", 2), grad("grad", 2);
  StageExecutor ex(s1, StageLinks{&act, nullptr, nullptr, &grad});
  auto mbs = make_microbatches(1, 1, 4, cfg.vocab_size, 0);
  ex.begin_step(0, one_f_one_b_schedule(2, 1).plans[1], &mbs, 0.25f);
  CHECK(ex.advance() == StageExecutor::Progress::Blocked);
  CHECK(ex.position() == 0);
  Tensor x = Tensor::zeros({4, 16});
  transport::Envelope e{0, 0, 0, x};
  REQUIRE(act.try_send(e));
  CHECK(ex.advance() == StageExecutor::Progress::Done);
  CHECK(grad.depth() == 1);  // the input gradient went upstream
  transport::Envelope wrong{5, 0, 0, Tensor::zeros({4, 16})};
  ex.begin_step(1, one_f_one_b_schedule(2, 1).plans[1], &mbs, 0.25f);
  REQUIRE(act.try_send(wrong));
  CHECK_THROWS_WITH(ex.advance(), Catch::Contains("envelope of step 5 during step 1"));
}

TEST_CASE("interleaved stages check chunks: envelopes, embedding and head, channels",
          "[pipeline][executor][interleaved]") {
  // p = 2, v = 2: stage 0 holds global chunks 0 and 2, stage 1 chunks 1 and 3.
  ModelConfig cfg = ModelConfig::llama(4, 2, 1, 16, 24, 31, 8);
  std::vector<std::unique_ptr<Transformer>> t;
  for (int g = 0; g < 4; g++) t.push_back(std::make_unique<Transformer>(cfg, chunk_layers(4, 2, 2, g)));
  CHECK(t[0]->stage().embedding);
  CHECK(t[3]->stage().head);
  CHECK(t[2]->stage().first_layer == 2);
  std::vector<std::unique_ptr<InprocChannel>> owned;
  std::vector<InprocChannel*> act, grad;
  for (int g = 0; g < 3; g++) {
    owned.push_back(std::make_unique<InprocChannel>(strformat("act%d", g), 4));
    act.push_back(owned.back().get());
    owned.push_back(std::make_unique<InprocChannel>(strformat("grad%d", g), 4));
    grad.push_back(owned.back().get());
  }
  auto L = [&](int g) { return chunk_links(act, grad, g); };

  SECTION("a chunk in the wrong place") {
    CHECK_THROWS_WITH(StageExecutor({{t[0].get(), L(0)}, {t[2].get(), L(2)}}, 1, 2),
                      Catch::Contains("embedding 1 and head 0 do not match its place"));
  }
  SECTION("two chunks reading one channel") {
    StageLinks shared = L(2);
    shared.act_in = act[0];
    CHECK_THROWS_WITH(StageExecutor({{t[1].get(), L(1)}, {t[3].get(), shared}}, 1, 2),
                      Catch::Contains("channel act0 is read by another chunk"));
  }
  SECTION("an envelope from the wrong chunk") {
    StageExecutor ex({{t[0].get(), L(0)}, {t[2].get(), L(2)}}, 0, 2);
    CHECK(!ex.has_head());
    auto mbs = make_microbatches(2, 1, 4, cfg.vocab_size, 0);
    Schedule s = interleaved_schedule(2, 2, 2).value();
    ex.begin_step(0, s.plans[0], &mbs, 0.125f);
    // F0 F1 on chunk 0 send to act0; F0.1 (global chunk 2) then waits on act1.
    CHECK(ex.advance() == StageExecutor::Progress::Blocked);
    CHECK(ex.position() == 2);
    CHECK(act[0]->depth() == 2);
    transport::Envelope e0 = act[0]->try_recv().value();
    CHECK(e0.chunk == 0);
    transport::Envelope wrong{0, 0, 0, Tensor::zeros({4, 16})};  // chunk 0 is not chunk 2's input
    REQUIRE(act[1]->try_send(wrong));
    CHECK_THROWS_WITH(ex.advance(), Catch::Contains("channel act1: envelope of chunk 0, expected chunk 1"));
  }
}
