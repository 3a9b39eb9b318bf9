// Pipeline training with one CAF actor per stage equals one model fed the same
// microbatches, bitwise (see stage_executor_test.cpp for why bitwise is the right bar).

#include "actors/stage_actor.h"

#include <cmath>
#include <cstring>
#include <map>

#include "core/rng.h"
#include "microbatches.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::actors;
using namespace troupe::model;
using transport::InprocChannel;

namespace {

std::vector<pipeline::Microbatch> microbatches(int m, int B, int T, int V, int64_t step) {
  return testing::random_microbatches(31, m, B, T, V, step);
}


// Runs `steps` training steps of a pipeline of stage actors (p stages x v chunks, dp
// replicas, 1F1B or interleaved), returning per step the losses (replica order) and
// the gradient norm, and at the end every stage's parameters (replica 0) by name.
struct PipelineRun {
  std::vector<std::vector<float>> losses;
  std::vector<double> norms;
  std::map<std::string, std::vector<float>> params;
};

PipelineRun run_pipeline(caf::actor_system& sys, const ModelConfig& cfg, const OptimConfig& oc, int p, int v, int dp,
                         int64_t bucket_floats, int m, int B, int T, int steps, std::string schedule = "") {
  const int G = p * v;
  if (schedule.empty()) schedule = v > 1 ? "interleaved" : "1f1b";
  auto sched = pipeline::make_schedule(schedule, p, m, v).value();
  std::vector<std::unique_ptr<InprocChannel>> channels;
  std::vector<std::shared_ptr<transport::InprocAllReduce>> groups;
  for (int g = 0; g < G; g++) groups.push_back(std::make_shared<transport::InprocAllReduce>("g", dp));
  std::vector<std::vector<stage_actor>> stages(static_cast<size_t>(dp));
  for (int r = 0; r < dp; r++) {
    std::vector<InprocChannel*> act, grad;
    for (int g = 0; g + 1 < G; g++) {
      channels.push_back(std::make_unique<InprocChannel>("act", p));
      act.push_back(channels.back().get());
      channels.push_back(std::make_unique<InprocChannel>("grad", p));
      grad.push_back(channels.back().get());
    }
    for (int s = 0; s < p; s++) {
      StageSpec spec;
      spec.name = "stage" + std::to_string(s);
      spec.model = cfg;
      spec.stage = s;
      spec.stages = p;
      spec.optim = oc;
      spec.seed = 5;
      spec.dp_rank = r;
      spec.bucket_floats = bucket_floats;
      for (int c = 0; c < v; c++) {
        spec.chunks.push_back(pipeline::chunk_layers(cfg.n_layer, p, v, c * p + s));
        spec.links.push_back(pipeline::chunk_links(act, grad, c * p + s));
        spec.dp_groups.push_back(groups[size_t(c * p + s)]);
      }
      stages[size_t(r)].push_back(sys.spawn(stage_actor_fn, spec));
    }
  }
  PipelineRun out;
  caf::scoped_actor self{sys};
  const float scale = 1.0f / float(dp * m * B * T);
  for (int step = 0; step < steps; step++) {
    using handle_t = decltype(self->request(stages[0][0], caf::infinite, run_step_atom::value, StepOrder{}));
    std::vector<handle_t> pending;
    for (int r = 0; r < dp; r++) {
      // Replica r takes microbatches [r m, (r + 1) m) of the step's dp m.
      auto all = microbatches(dp * m, B, T, cfg.vocab_size, step);
      auto mine = std::make_shared<const std::vector<pipeline::Microbatch>>(all.begin() + r * m, all.begin() + (r + 1) * m);
      for (int s = 0; s < p; s++)
        pending.push_back(self->request(stages[size_t(r)][size_t(s)], caf::infinite, run_step_atom::value,
                                        StepOrder{step, mine, sched.plans[size_t(s)], scale}));
    }
    std::vector<float> losses;
    std::vector<double> chunk_sq(static_cast<size_t>(G));
    for (size_t k = 0; k < pending.size(); k++)
      pending[k].receive(
          [&](StepDone& d) {
            losses.insert(losses.end(), d.losses.begin(), d.losses.end());
            if (k < size_t(p))
              for (auto& [g, x] : d.grad_sum_squares) chunk_sq[size_t(g)] = x;
          },
          [&](caf::error& e) { FAIL(sys.render(e)); });
    double sq = 0;
    for (double x : chunk_sq) sq += x;
    out.losses.push_back(losses);
    out.norms.push_back(std::sqrt(sq));
    float clip = clip_scale(oc.grad_clip, std::sqrt(sq));
    for (auto& replica : stages)
      for (auto& a : replica)
        self->request(a, caf::infinite, apply_atom::value, int64_t(step), oc.lr, clip)
            .receive([&](Applied&) {}, [&](caf::error& e) { FAIL(sys.render(e)); });
  }
  for (auto& a : stages[0])
    self->request(a, caf::infinite, snapshot_atom::value).receive(
        [&](SnapshotSource& src) {
          for (auto& mdl : src.models)
            for (auto& q : mdl->params())
              out.params[q.name].assign(q.value.data<float>(), q.value.data<float>() + q.value.numel());
          caf::anon_send(src.owner, released_atom::value);
        },
        [&](caf::error& e) { FAIL(sys.render(e)); });
  for (auto& replica : stages) {
    for (auto& a : replica) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    self->wait_for(replica);
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
  oc.grad_clip = 1.0f;
  const int m = 4, B = 2, T = 8, steps = 3;
  // The reference: one model, the same microbatches, the norm summed per global chunk
  // (chunk_layers of the 4-chunk split; pp = 1 is the single sum, checked apart).
  Transformer ref(cfg);
  ref.init_weights(5);
  AdamW ref_opt(ref.params(), oc);
  PipelineRun want;
  for (int step = 0; step < steps; step++) {
    auto mbs = microbatches(m, B, T, cfg.vocab_size, step);
    ref.zero_grad();
    std::vector<float> losses;
    for (auto& mb : mbs) {
      losses.push_back(ref.forward(mb.tokens.data(), nullptr, mb.targets.data(), B, T));
      ref.backward(nullptr, 1.0f / float(m * B * T));
    }
    std::vector<double> chunk_sq(4, 0.0);
    for (auto& q : ref.params()) {
      int g = q.name == "embed_tokens.weight" ? 0 : 3;  // norm, lm_head: the last chunk
      if (q.name.rfind("layers.", 0) == 0) g = std::stoi(q.name.substr(7));  // one layer per chunk
      chunk_sq[size_t(g)] += ops::sum_squares(q.grad.data<float>(), q.grad.numel());
    }
    double sq = ((chunk_sq[0] + chunk_sq[1]) + chunk_sq[2]) + chunk_sq[3];
    want.losses.push_back(losses);
    want.norms.push_back(std::sqrt(sq));
    ref_opt.step(oc.lr, ref_opt.clip_scale(std::sqrt(sq)));
  }
  for (auto& q : ref.params()) want.params[q.name].assign(q.value.data<float>(), q.value.data<float>() + q.value.numel());
  // Four chunks of one layer each: p = 4 (1F1B), p = 2 x v = 2 (interleaved).
  for (auto [p, v] : {std::pair{4, 1}, std::pair{2, 2}}) {
    INFO("p=" << p << " v=" << v);
    auto got = run_pipeline(sys, cfg, oc, p, v, 1, 1 << 20, m, B, T, steps);
    CHECK(got.losses == want.losses);
    CHECK(got.norms == want.norms);
    CHECK(got.params == want.params);
  }
}

TEST_CASE("data-parallel replicas: bucketed all-reduce during backward changes no bit", "[actors][dp]") {
  // Buckets only change when each piece of the gradient is summed, not how: elementwise
  // r0 + r1 in replica order. So tiny buckets (many per layer group, started during the
  // last backward) must give bitwise what one whole-buffer reduction after the plan gives.
  // Against one model with all microbatches the sums associate differently ((mb0 + mb1)
  // + (mb2 + mb3) vs ((mb0 + mb1) + mb2) + mb3): close, not bitwise.
  caf::actor_system_config cfg_sys;
  caf::actor_system sys{cfg_sys};
  ModelConfig cfg = ModelConfig::llama(4, 4, 2, 32, 48, 61, 16);
  OptimConfig oc;
  oc.lr = 3e-3f;
  oc.grad_clip = 1.0f;
  for (auto [p, v] : {std::pair{2, 1}, std::pair{2, 2}}) {
    INFO("p=" << p << " v=" << v);
    auto whole = run_pipeline(sys, cfg, oc, p, v, 2, int64_t(1) << 40, 4, 2, 8, 3);
    auto buckets = run_pipeline(sys, cfg, oc, p, v, 2, 500, 4, 2, 8, 3);
    auto single = run_pipeline(sys, cfg, oc, p, v, 1, 1 << 20, 8, 2, 8, 3);
    CHECK(whole.losses == buckets.losses);
    CHECK(whole.norms == buckets.norms);
    CHECK(whole.params == buckets.params);
    for (size_t s = 0; s < whole.losses.size(); s++) {
      REQUIRE(whole.losses[s].size() == single.losses[s].size());
      for (size_t i = 0; i < whole.losses[s].size(); i++)
        CHECK(std::abs(whole.losses[s][i] - single.losses[s][i]) <= 1e-6 * std::abs(single.losses[s][i]));
    }
  }
}

TEST_CASE("equivalence matrix: pp 1/2/4 x dp 1/2 x every schedule, 20 steps, against the single model",
          "[actors][equivalence]") {
  // The single model of the foundation issue, trained on the step's dp m microbatches in
  // order. dp = 1: bitwise (each chunk runs the same kernels on the same shapes, and
  // accumulates its microbatches in order under every schedule; the norm is summed per
  // chunk in model order on both sides). dp = 2: within 1e-6 relative, not bitwise: the
  // replicas' sums are added as (replica 0) + (replica 1), another association.
  caf::actor_system_config cfg_sys;
  caf::actor_system sys{cfg_sys};
  ModelConfig cfg = ModelConfig::llama(8, 4, 2, 32, 48, 61, 16);
  OptimConfig oc;
  oc.lr = 3e-3f;
  oc.grad_clip = 1.0f;
  const int m = 4, B = 2, T = 8, steps = 20;
  struct Layout {
    int p, v;
    const char* schedule;
  };
  for (Layout lay : {Layout{1, 1, "gpipe"}, Layout{1, 1, "1f1b"}, Layout{2, 1, "gpipe"}, Layout{2, 1, "1f1b"},
                     Layout{2, 2, "interleaved"}, Layout{4, 1, "gpipe"}, Layout{4, 1, "1f1b"},
                     Layout{4, 2, "interleaved"}}) {
    const int G = lay.p * lay.v;
    for (int dp : {1, 2}) {
      INFO("pp=" << lay.p << " v=" << lay.v << " " << lay.schedule << " dp=" << dp);
      // The reference, with the norm summed per chunk of this layout.
      Transformer ref(cfg);
      ref.init_weights(5);
      AdamW ref_opt(ref.params(), oc);
      PipelineRun want;
      for (int step = 0; step < steps; step++) {
        auto mbs = microbatches(dp * m, B, T, cfg.vocab_size, step);
        ref.zero_grad();
        std::vector<float> losses;
        for (auto& mb : mbs) {
          losses.push_back(ref.forward(mb.tokens.data(), nullptr, mb.targets.data(), B, T));
          ref.backward(nullptr, 1.0f / float(dp * m * B * T));
        }
        std::vector<double> chunk_sq(static_cast<size_t>(G), 0.0);
        for (auto& q : ref.params()) {
          int layer = q.name == "embed_tokens.weight" ? 0 : cfg.n_layer - 1;
          if (q.name.rfind("layers.", 0) == 0) layer = std::stoi(q.name.substr(7));
          int g = 0;
          while (pipeline::chunk_layers(cfg.n_layer, lay.p, lay.v, g).last_layer <= layer) g++;
          chunk_sq[size_t(g)] += ops::sum_squares(q.grad.data<float>(), q.grad.numel());
        }
        double sq = 0;
        for (double x : chunk_sq) sq += x;
        want.losses.push_back(losses);
        want.norms.push_back(std::sqrt(sq));
        ref_opt.step(oc.lr, ref_opt.clip_scale(std::sqrt(sq)));
      }
      auto got = run_pipeline(sys, cfg, oc, lay.p, lay.v, dp, 1 << 20, m, B, T, steps, lay.schedule);
      REQUIRE(got.losses.size() == want.losses.size());
      if (dp == 1) {
        CHECK(got.losses == want.losses);
        CHECK(got.norms == want.norms);
      } else {
        double worst = 0;
        for (size_t s = 0; s < want.losses.size(); s++)
          for (size_t i = 0; i < want.losses[s].size(); i++)
            worst = std::max(worst, std::abs(double(got.losses[s][i]) - want.losses[s][i]) / std::abs(want.losses[s][i]));
        CHECK(worst <= 1e-6);
      }
    }
  }
}
