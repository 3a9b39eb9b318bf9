// Plain generation: greedy decoding is the argmax chain of full forwards, sampling is
// reproducible from its seed and follows top-k, and weights load by name.

#include "ops/model/generate.h"

#include <map>

#include "test_util.h"

using namespace troupe;
using namespace troupe::model;

namespace {
ModelConfig tiny() { return ModelConfig::llama(2, 4, 2, 32, 64, 50, 12); }
}  // namespace

TEST_CASE("greedy generation is the argmax of a full forward at every position", "[model][generate]") {
  Transformer m(tiny());
  m.init_weights(7);
  std::vector<int32_t> prompt = {3, 14, 15, 9};
  auto out = generate_plain(m, prompt, 12, Sampling{}).value();
  REQUIRE(out.size() == 12);
  // Recompute each token by hand; the context slides once it passes max_seq_len (12).
  Transformer ref(tiny());
  ref.init_weights(7);
  std::vector<int32_t> ctx = prompt;
  for (size_t i = 0; i < out.size(); i++) {
    int T = int(std::min<size_t>(ctx.size(), 12));
    std::vector<int32_t> win(ctx.end() - T, ctx.end());
    ref.forward(win.data(), nullptr, nullptr, 1, T, 0);
    const float* last = ref.logits(0) + int64_t(T - 1) * 50;
    int32_t best = 0;
    for (int v = 1; v < 50; v++)
      if (last[v] > last[best]) best = v;
    CHECK(out[i] == best);
    ctx.push_back(best);
  }
  // on_token can stop early.
  int seen = 0;
  auto three = generate_plain(m, prompt, 12, Sampling{}, [&](int32_t) { return ++seen < 3; }).value();
  CHECK(three == std::vector<int32_t>(out.begin(), out.begin() + 3));
}

TEST_CASE("sampling: a seed reproduces, top_k = 1 is greedy, draws follow the probabilities", "[model][generate]") {
  Transformer m(tiny());
  m.init_weights(3);
  std::vector<int32_t> prompt = {1, 2, 3};
  Sampling s{1.0f, 0, 1.0f, 42, 1.0f};
  auto a = generate_plain(m, prompt, 10, s).value(), b = generate_plain(m, prompt, 10, s).value();
  CHECK(a == b);
  Sampling k1{1.0f, 1, 1.0f, 5, 1.0f};
  CHECK(generate_plain(m, prompt, 10, k1).value() == generate_plain(m, prompt, 10, Sampling{}).value());
  // Logits log(0.5), log(0.3), log(0.2): frequencies over 20000 draws within 0.015 (over 5 sigma).
  float logits[3] = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  int count[3] = {0, 0, 0};
  for (uint64_t i = 0; i < 20000; i++) count[sample_token(logits, 3, Sampling{1.0f, 0, 1.0f, 9, 1.0f}, i)]++;
  CHECK(std::fabs(count[0] / 20000.0 - 0.5) < 0.015);
  CHECK(std::fabs(count[1] / 20000.0 - 0.3) < 0.015);
  CHECK(std::fabs(count[2] / 20000.0 - 0.2) < 0.015);
  // top_p = 0.6 keeps {0.5, 0.3} and renormalizes: token 2 never comes.
  int c2 = 0;
  for (uint64_t i = 0; i < 2000; i++) c2 += sample_token(logits, 3, Sampling{1.0f, 0, 0.6f, 9, 1.0f}, i) == 2;
  CHECK(c2 == 0);
}

TEST_CASE("weights load by name, and a missing or mis-shaped tensor is named", "[model][generate]") {
  Transformer a(tiny()), b(tiny());
  a.init_weights(1);
  b.init_weights(2);
  std::map<std::string, Tensor> t;
  for (auto& p : a.params()) t[p.name] = p.value;
  REQUIRE(load_params(b, t));
  std::vector<int32_t> prompt = {4, 5};
  CHECK(generate_plain(a, prompt, 6, Sampling{}).value() == generate_plain(b, prompt, 6, Sampling{}).value());
  auto name = a.params()[0].name;
  t.erase(name);
  CHECK(load_params(b, t).error().message == "no tensor '" + name + "'");
  CHECK(generate_plain(a, {}, 3, Sampling{}).error().message == "generate: empty prompt");
  CHECK(generate_plain(a, {99}, 3, Sampling{}).error().message == "generate: token 99 is outside the vocabulary");
}

TEST_CASE("repetition penalty divides positive and multiplies negative logits of seen tokens once", "[model][generate]") {
  float l[4] = {2.0f, -1.0f, 3.0f, 0.5f};
  apply_repetition_penalty(l, 4, {0, 1, 1, 7, -2}, 2.0f);  // out-of-range ids are ignored
  CHECK(l[0] == 1.0f);
  CHECK(l[1] == -2.0f);
  CHECK(l[2] == 3.0f);
  CHECK(l[3] == 0.5f);
}
