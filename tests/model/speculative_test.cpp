// Speculative decoding: the acceptance rule keeps the target's distribution exactly
// (checked by chi-square against distributions known in closed form, and end to end on a
// tiny model whose probabilities the test computes), and greedy speculative output is
// identical to target-only greedy decoding for every drafter.

#include "ops/model/speculative.h"

#include <cmath>
#include <map>

#include "core/rng.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::model;

namespace {

// Pearson's chi-square of observed counts against probabilities.
double chi_square(const std::vector<double>& counts, const std::vector<double>& probs) {
  double n = 0, x2 = 0;
  for (double c : counts) n += c;
  for (size_t i = 0; i < counts.size(); i++) {
    double e = n * probs[i];
    if (e > 0) x2 += (counts[i] - e) * (counts[i] - e) / e;
    else CHECK(counts[i] == 0);  // an impossible outcome must never happen
  }
  return x2;
}

ModelConfig tiny(int vocab, int layers = 2) { return ModelConfig::llama(layers, 2, 1, 16, 32, vocab, 64); }

std::vector<int32_t> greedy_reference(Transformer& m, std::vector<int32_t> ctx, int n) {
  KvCache cache(m.config(), 16, 4);
  InferenceEngine eng(m, cache);
  Sequence s;
  s.tokens = ctx;
  std::vector<int32_t> out;
  for (int i = 0; i < n; i++) {
    const float* l = eng.step({&s}).value();
    out.push_back(sample_token(l, m.config().vocab_size, Sampling{}, 0));
    s.tokens.push_back(out.back());
  }
  return out;
}

}  // namespace

TEST_CASE("the acceptance rule emits the target's distribution, whatever the draft's", "[model][speculative]") {
  // Position-dependent, context-independent target p_j and draft q_j over 5 tokens: two
  // generated tokens must follow p_0(t1) p_1(t2) exactly.
  const int V = 5;
  std::vector<std::vector<float>> p = {{0.1f, 0.2f, 0.3f, 0.25f, 0.15f}, {0.5f, 0.0f, 0.1f, 0.2f, 0.2f},
                                       {0.2f, 0.2f, 0.2f, 0.2f, 0.2f}};
  std::vector<std::vector<float>> q = {{0.4f, 0.1f, 0.1f, 0.2f, 0.2f}, {0.05f, 0.6f, 0.05f, 0.1f, 0.2f}};
  for (int k : {1, 2}) {
    std::vector<double> joint(V * V, 0.0);
    const int n = 100000;
    for (int trial = 0; trial < n; trial++) {
      std::vector<int32_t> out;
      uint64_t round = 0;
      while (out.size() < 2) {
        const size_t j = out.size();  // the position this round starts at
        Draft d;
        RngStream pick(uint64_t(trial), {round, 999});
        for (int i = 0; i < k && j + size_t(i) < 2; i++) {  // draw each draft token from q_{j+i}
          const auto& qi = q[j + size_t(i)];
          float u = pick.uniform(uint64_t(i)), acc = 0;
          int32_t x = V - 1;
          for (int t = 0; t < V; t++)
            if ((acc += qi[size_t(t)]) > u) {
              x = t;
              break;
            }
          d.tokens.push_back(x);
          d.q.push_back(qi);
        }
        std::vector<const float*> rows;
        for (size_t i = 0; i <= d.tokens.size(); i++) rows.push_back(p[j + i].data());
        Verdict v = verify_draft(d, rows, V, uint64_t(trial), round++);
        out.insert(out.end(), v.tokens.begin(), v.tokens.end());
      }
      joint[size_t(out[0] * V + out[1])]++;
    }
    std::vector<double> want;
    for (int a = 0; a < V; a++)
      for (int b = 0; b < V; b++) want.push_back(double(p[0][size_t(a)]) * p[1][size_t(b)]);
    // 25 cells, 20 of them possible (p_1(1) = 0): 19 degrees of freedom. P(chi2 > 55) < 1e-5.
    double x2 = chi_square(joint, want);
    WARN("k = " << k << ": chi-square " << x2 << " over 19 degrees of freedom");
    CHECK(x2 < 55);
  }
}

TEST_CASE("deterministic proposals (one-hot q) keep the distribution too", "[model][speculative]") {
  const int V = 4;
  std::vector<float> p0 = {0.4f, 0.3f, 0.2f, 0.1f}, p1 = {0.25f, 0.25f, 0.25f, 0.25f};
  std::vector<double> first(V, 0.0);
  for (int trial = 0; trial < 60000; trial++) {
    Draft d;
    d.tokens = {2};  // always proposes token 2
    Verdict v = verify_draft(d, {p0.data(), p1.data()}, V, 7, uint64_t(trial));
    first[size_t(v.tokens[0])]++;
  }
  CHECK(chi_square(first, {0.4, 0.3, 0.2, 0.1}) < 30);  // 3 dof; P(> 30) < 1e-6
}

TEST_CASE("greedy speculative decoding equals target-only greedy for every drafter", "[model][speculative]") {
  const int V = 23;
  Transformer target(tiny(V, 3)), small(tiny(V, 1));
  target.init_weights(3);
  small.init_weights(4);
  target.set_training(false);
  // A prompt with repeats, so prompt lookup has matches to propose.
  std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 1, 2, 3, 4, 6, 7, 1, 2, 3};
  auto want = greedy_reference(target, prompt, 30);
  NgramDrafter ngram;
  ModelDrafter self(target, 1, 16, "self-1-layer"), distilled(small, -1, 16, "small");
  for (Drafter* d : std::vector<Drafter*>{&ngram, &self, &distilled}) {
    KvCache cache(target.config(), 16, 4);
    InferenceEngine eng(target, cache);
    SpeculativeDecoder dec(eng, *d, 6, 3);
    auto got = dec.generate(prompt, 30, Sampling{}).value();
    INFO("drafter " << d->name() << ": acceptance " << dec.stats().acceptance());
    CHECK(got == want);
    CHECK(dec.stats().generated == 30);
    CHECK(cache.free_blocks() == 16);  // everything released
  }
}

TEST_CASE("sampled speculative decoding has the target's distribution (tiny model, exact probabilities)",
          "[model][speculative]") {
  const int V = 6;
  Transformer target(tiny(V, 2)), small(tiny(V, 1));
  target.init_weights(21);
  small.init_weights(22);
  target.set_training(false);
  Sampling s{1.0f, 0, 1.0f, 0, 1.0f};
  std::vector<int32_t> prompt = {1, 4, 2};
  // The exact joint distribution of the next two tokens, from full forwards.
  std::vector<double> want(V * V);
  {
    std::vector<float> p1(V), p2(V);
    target.forward(prompt.data(), nullptr, nullptr, 1, 3, 0);
    sampling_distribution(target.logits(0) + 2 * V, V, s, p1.data());
    for (int a = 0; a < V; a++) {
      std::vector<int32_t> ctx = prompt;
      ctx.push_back(a);
      target.forward(ctx.data(), nullptr, nullptr, 1, 4, 0);
      sampling_distribution(target.logits(0) + 3 * V, V, s, p2.data());
      for (int b = 0; b < V; b++) want[size_t(a * V + b)] = double(p1[size_t(a)]) * p2[size_t(b)];
    }
  }
  KvCache cache(target.config(), 16, 4);
  InferenceEngine eng(target, cache);
  ModelDrafter drafter(small, -1, 16, "small");
  std::vector<double> counts(V * V, 0.0);
  double accepted = 0, drafted = 0;
  for (int trial = 0; trial < 12000; trial++) {
    SpeculativeDecoder dec(eng, drafter, 3, 2);
    Sampling st = s;
    st.seed = uint64_t(trial);
    auto out = dec.generate(prompt, 2, st).value();
    REQUIRE(out.size() == 2);
    counts[size_t(out[0] * V + out[1])]++;
    accepted += dec.stats().accepted, drafted += dec.stats().drafted;
  }
  // 36 cells, 35 dof: P(chi2 > 85) < 1e-5.
  double x2 = chi_square(counts, want);
  WARN("tiny model, temperature 1: chi-square " << x2 << " over 35 degrees of freedom, acceptance " << accepted / drafted);
  CHECK(x2 < 85);
  CHECK(drafted > 0);
}
