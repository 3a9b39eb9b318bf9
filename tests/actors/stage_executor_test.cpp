// Pipeline-parallel training driven by the stage executors (all stages round-robin on
// one thread, talking through in-process channels) must equal one model trained with
// the same microbatches: bitwise. Each stage runs exactly the single model's kernels on
// the same shapes, and gradients accumulate over microbatches in the same order
// (GPipe and 1F1B both run backwards in microbatch order), so nothing may differ. The
// global gradient norm is summed per stage in stage order on both sides.

#include "actors/stage_executor.h"

#include <cmath>
#include <cstring>
#include <memory>

#include "core/rng.h"
#include "ops/model/optimizer.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::model;
using namespace troupe::pipeline;
using transport::InprocChannel;

namespace {

std::vector<Microbatch> make_microbatches(int m, int B, int T, int V, int64_t step) {
  std::vector<Microbatch> out;
  RngStream r(77, {uint64_t(step)});
  uint64_t k = 0;
  for (int i = 0; i < m; i++) {
    Microbatch mb{B, T, {}, {}};
    for (int j = 0; j < B * T; j++) {
      mb.tokens.push_back(int32_t(r.bits(k++) % uint32_t(V)));
      mb.targets.push_back(int32_t(r.bits(k++) % uint32_t(V)));
    }
    out.push_back(std::move(mb));
  }
  return out;
}

// Runs every executor until all are done; fails on a round where none moves.
void drive(std::vector<std::unique_ptr<StageExecutor>>& ex) {
  for (int round = 0;; round++) {
    bool all_done = true, moved = false;
    for (auto& e : ex) {
      size_t before = e->position();
      bool was_done = e->done();
      e->advance();
      moved |= e->position() != before || (e->done() && !was_done);
      all_done &= e->done();
    }
    if (all_done) return;
    REQUIRE(moved);
    REQUIRE(round < 100000);
  }
}

void check_pipeline_equals_single(const ModelConfig& cfg, int p, const std::string& schedule, int steps) {
  INFO(cfg.str() << " p=" << p << " " << schedule);
  const int m = 4, B = 2, T = 8;
  const float scale = 1.0f / float(m * B * T);
  OptimConfig oc;
  oc.lr = 3e-3f;

  Transformer ref(cfg);
  ref.init_weights(5);
  AdamW ref_opt(ref.params(), oc);

  std::vector<std::unique_ptr<Transformer>> stages;
  std::vector<std::unique_ptr<AdamW>> opts;
  const int per = cfg.n_layer / p;
  for (int s = 0; s < p; s++) {
    stages.push_back(std::make_unique<Transformer>(cfg, StageRange{s * per, (s + 1) * per, s == 0, s == p - 1}));
    stages.back()->init_weights(5);
    opts.push_back(std::make_unique<AdamW>(stages.back()->params(), oc));
  }
  std::vector<std::unique_ptr<InprocChannel>> acts, grads;
  for (int s = 0; s + 1 < p; s++) {
    acts.push_back(std::make_unique<InprocChannel>("act" + std::to_string(s), p));
    grads.push_back(std::make_unique<InprocChannel>("grad" + std::to_string(s), p));
  }
  std::vector<std::unique_ptr<StageExecutor>> ex;
  for (int s = 0; s < p; s++) {
    StageLinks l;
    if (s > 0) l.act_in = acts[size_t(s - 1)].get(), l.grad_out = grads[size_t(s - 1)].get();
    if (s + 1 < p) l.act_out = acts[size_t(s)].get(), l.grad_in = grads[size_t(s)].get();
    ex.push_back(std::make_unique<StageExecutor>(*stages[size_t(s)], l));
  }
  Schedule sched = make_schedule(schedule, p, m, 1).value();

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
    for (int s = 0; s < p; s++) {
      stages[size_t(s)]->zero_grad();
      ex[size_t(s)]->begin_step(step, sched.plans[size_t(s)], &mbs, scale);
    }
    drive(ex);
    INFO("step " << step);
    CHECK(ex.back()->microbatch_losses() == ref_losses);
    // gradients, parameter by parameter, bitwise
    double ref_sq = 0, pipe_sq = 0;
    for (int s = 0; s < p; s++) {
      double stage_ref = 0;
      for (auto& q : stages[size_t(s)]->params()) {
        const Param* r = ref.find_param(q.name);
        REQUIRE(r);
        INFO(q.name);
        CHECK(std::memcmp(q.grad.raw(), r->grad.raw(), q.grad.nbytes()) == 0);
        stage_ref += ops::sum_squares(r->grad.data<float>(), r->grad.numel());
      }
      ref_sq += stage_ref;
      pipe_sq += opts[size_t(s)]->grad_sum_squares();
    }
    REQUIRE(ref_sq == pipe_sq);
    float lr = oc.lr;
    ref_opt.step(lr, ref_opt.clip_scale(std::sqrt(ref_sq)));
    for (auto& o : opts) o->step(lr, o->clip_scale(std::sqrt(pipe_sq)));
  }
}

}  // namespace

TEST_CASE("pipeline training equals the single model bitwise", "[pipeline][executor]") {
  // Llama: untied head, so every parameter lives on exactly one stage.
  ModelConfig llama = ModelConfig::llama(4, 4, 2, 32, 48, 61, 16);
  for (int p : {1, 2, 4})
    for (const char* s : {"gpipe", "1f1b"}) check_pipeline_equals_single(llama, p, s, 3);
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
