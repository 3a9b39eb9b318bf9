// Pipeline training with one CAF actor per stage equals one model fed the same
// microbatches, bitwise (see stage_executor_test.cpp for why bitwise is the right bar).

#include "actors/stage_actor.h"

#include <cmath>
#include <cstring>

#include "core/rng.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::actors;
using namespace troupe::model;
using transport::InprocChannel;

namespace {

std::vector<pipeline::Microbatch> microbatches(int m, int B, int T, int V, int64_t step) {
  std::vector<pipeline::Microbatch> out;
  RngStream r(31, {uint64_t(step)});
  uint64_t k = 0;
  for (int i = 0; i < m; i++) {
    pipeline::Microbatch mb{B, T, {}, {}};
    for (int j = 0; j < B * T; j++) {
      mb.tokens.push_back(int32_t(r.bits(k++) % uint32_t(V)));
      mb.targets.push_back(int32_t(r.bits(k++) % uint32_t(V)));
    }
    out.push_back(std::move(mb));
  }
  return out;
}

}  // namespace

TEST_CASE("stage actors train a pipeline bitwise equal to the single model", "[actors][pipeline]") {
  caf::actor_system_config cfg_sys;
  caf::actor_system sys{cfg_sys};
  ModelConfig cfg = ModelConfig::llama(4, 4, 2, 32, 48, 61, 16);
  OptimConfig oc;
  oc.lr = 3e-3f;
  for (int p : {2, 4}) {
    INFO("p=" << p);
    const int m = 4, B = 2, T = 8, per = cfg.n_layer / p;
    const float scale = 1.0f / float(m * B * T);
    std::vector<std::unique_ptr<InprocChannel>> acts, grads;
    for (int s = 0; s + 1 < p; s++) {
      acts.push_back(std::make_unique<InprocChannel>("act", p));
      grads.push_back(std::make_unique<InprocChannel>("grad", p));
    }
    std::vector<stage_actor> stages;
    for (int s = 0; s < p; s++) {
      StageSpec spec{"stage" + std::to_string(s), cfg, StageRange{s * per, (s + 1) * per, s == 0, s == p - 1}, oc, 5, {}, nullptr, 0, {}};
      if (s > 0) spec.links.act_in = acts[size_t(s - 1)].get(), spec.links.grad_out = grads[size_t(s - 1)].get();
      if (s + 1 < p) spec.links.act_out = acts[size_t(s)].get(), spec.links.grad_in = grads[size_t(s)].get();
      stages.push_back(sys.spawn(stage_actor_fn, spec));
    }
    Transformer ref(cfg);
    ref.init_weights(5);
    AdamW ref_opt(ref.params(), oc);
    auto plans = pipeline::one_f_one_b_schedule(p, m);
    caf::scoped_actor self{sys};
    for (int step = 0; step < 3; step++) {
      auto mbs = std::make_shared<const std::vector<pipeline::Microbatch>>(microbatches(m, B, T, cfg.vocab_size, step));
      ref.zero_grad();
      std::vector<float> ref_losses;
      double ref_sq = 0;
      for (auto& mb : *mbs) {
        ref_losses.push_back(ref.forward(mb.tokens.data(), nullptr, mb.targets.data(), B, T));
        ref.backward(nullptr, scale);
      }
      // Send every stage its plan, then collect the answers (they overlap in time).
      // Send every stage its plan first (they run concurrently and feed each other),
      // then collect the answers.
      std::vector<StepDone> done(static_cast<size_t>(p));
      using handle_t = decltype(self->request(stages[0], caf::infinite, run_step_atom::value, StepOrder{}));
      std::vector<handle_t> pending;
      for (int s = 0; s < p; s++)
        pending.push_back(self->request(stages[size_t(s)], caf::infinite, run_step_atom::value,
                                        StepOrder{step, mbs, plans.plans[size_t(s)], scale}));
      for (int s = 0; s < p; s++)
        pending[size_t(s)].receive([&](StepDone& d) { done[size_t(s)] = std::move(d); },
                                   [&](caf::error& e) { FAIL(sys.render(e)); });
      // The reference norm, summed per stage in each stage's parameter order, as the
      // coordinator combines the stages' sums.
      std::vector<double> stage_sums(static_cast<size_t>(p), 0.0);
      for (auto& q : ref.params()) {
        int owner = q.name == "embed_tokens.weight" ? 0 : p - 1;  // norm, lm_head: last stage
        if (q.name.rfind("layers.", 0) == 0) owner = std::stoi(q.name.substr(7)) / per;
        stage_sums[size_t(owner)] += ops::sum_squares(q.grad.data<float>(), q.grad.numel());
      }
      double pipe_sq = 0;
      for (int s = 0; s < p; s++) {
        pipe_sq += done[size_t(s)].grad_sum_squares;
        ref_sq += stage_sums[size_t(s)];
      }
      INFO("step " << step);
      CHECK(done.back().losses == ref_losses);
      CHECK(pipe_sq == ref_sq);
      float clip = ref_opt.clip_scale(std::sqrt(ref_sq));
      ref_opt.step(oc.lr, clip);
      for (int s = 0; s < p; s++)
        self->request(stages[size_t(s)], caf::infinite, apply_atom::value, int64_t(step), oc.lr, clip)
            .receive([&](int64_t) {}, [&](caf::error& e) { FAIL(sys.render(e)); });
    }
    for (auto& a : stages) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    self->wait_for(stages);
  }
}
