// The paged-KV-cache engine against the plain full forward (the reference): the same
// logits at every decoded position, alone or in a batch with other sequences, with or
// without a reused prompt prefix; and the cache's bookkeeping (exhaustion, release).

#include "ops/model/inference.h"

#include "ops/model/generate.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::model;

namespace {

ModelConfig tiny(bool tied) {
  auto c = ModelConfig::llama(3, 4, 2, 32, 64, 61, 64);
  c.tied_embeddings = tied;
  c.rope_theta = 100000.0f;
  return c;
}

// Logits of the last position by a full forward over `tokens` (no cache).
std::vector<float> full_logits(Transformer& m, const std::vector<int32_t>& tokens) {
  int T = int(tokens.size());
  m.forward(tokens.data(), nullptr, nullptr, 1, T, 0);
  const float* l = m.logits(0) + int64_t(T - 1) * m.config().vocab_size;
  return {l, l + m.config().vocab_size};
}

std::vector<int32_t> prompt_of(int n, int seed) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; i++) p.push_back(int32_t((i * 7 + seed * 13 + i * i) % 61));
  return p;
}

}  // namespace

TEST_CASE("cached decoding gives the full forward's logits at every position", "[model][inference]") {
  for (bool tied : {true, false}) {
    Transformer m(tiny(tied));
    m.init_weights(11);
    m.set_training(false);
    KvCache cache(m.config(), 8, 4);  // 4 positions per block: prompts cross block edges
    InferenceEngine eng(m, cache);
    Sequence s;
    s.tokens = prompt_of(9, 1);
    for (int i = 0; i < 20; i++) {
      const float* got = eng.step({&s}).value();
      auto want = full_logits(m, s.tokens);
      auto d = test::max_abs_diff(got, want.data(), want.size());
      INFO("tied " << tied << ", position " << s.tokens.size() - 1 << ", worst at " << d.index);
      // f32 with a different summation order in attention: agreement to ~1e-6 of the
      // logits' scale; 1e-4 leaves room without hiding a wrong position or block.
      CHECK(d.diff < 1e-4 * std::max(1.0, test::max_abs(want.data(), want.size())));
      s.tokens.push_back(sample_token(got, m.config().vocab_size, Sampling{}, 0));
    }
    CHECK(s.blocks.size() == 7);  // 28 positions computed (the last token is not yet), 4 per block
    eng.release(s);
    CHECK(cache.free_blocks() == 8);
  }
}

TEST_CASE("a batch of sequences of different lengths equals each run alone", "[model][inference]") {
  Transformer m(tiny(true));
  m.init_weights(5);
  m.set_training(false);
  KvCache cache(m.config(), 32, 4);
  InferenceEngine eng(m, cache);
  std::vector<Sequence> seqs(3);
  seqs[0].tokens = prompt_of(3, 1);
  seqs[1].tokens = prompt_of(11, 2);
  seqs[2].tokens = prompt_of(6, 3);
  const int V = m.config().vocab_size;
  for (int round = 0; round < 6; round++) {
    std::vector<Sequence*> batch;
    for (auto& s : seqs) batch.push_back(&s);
    const float* got = eng.step(batch).value();
    for (size_t i = 0; i < seqs.size(); i++) {
      auto want = full_logits(m, seqs[i].tokens);
      CHECK(test::max_abs_diff(got + int64_t(i) * V, want.data(), size_t(V)).diff < 1e-4);
    }
    std::vector<int32_t> next;
    for (size_t i = 0; i < seqs.size(); i++) next.push_back(sample_token(got + int64_t(i) * V, V, Sampling{}, 0));
    for (size_t i = 0; i < seqs.size(); i++) seqs[i].tokens.push_back(next[i]);
  }
}

TEST_CASE("a shared prompt prefix is computed once and reused", "[model][inference]") {
  Transformer m(tiny(true));
  m.init_weights(9);
  m.set_training(false);
  KvCache cache(m.config(), 16, 4);
  InferenceEngine eng(m, cache);
  Sequence a;
  a.tokens = prompt_of(10, 4);
  const float* la = eng.step({&a}).value();
  std::vector<float> first(la, la + m.config().vocab_size);
  // Same first 9 tokens, a different 10th: blocks [0,4) and [4,8) are shared.
  Sequence b;
  b.tokens = a.tokens;
  b.tokens[9] = (b.tokens[9] + 1) % 61;
  CHECK(eng.reuse_prefix(b) == 8);
  CHECK(b.blocks[0] == a.blocks[0]);
  CHECK(cache.refs(a.blocks[0]) == 2);
  const float* lb = eng.step({&b}).value();
  auto want = full_logits(m, b.tokens);
  CHECK(test::max_abs_diff(lb, want.data(), want.size()).diff < 1e-4);
  // A prompt equal to a's: everything but the last position is reused, same logits.
  Sequence c;
  c.tokens = a.tokens;
  CHECK(eng.reuse_prefix(c) == 8);
  const float* lc = eng.step({&c}).value();
  CHECK(test::max_abs_diff(lc, first.data(), first.size()).diff < 1e-5);
  // Freed blocks keep their prefix until reused: a later identical prompt still hits.
  eng.release(a);
  eng.release(b);
  eng.release(c);
  CHECK(cache.free_blocks() == 16);
  Sequence d;
  d.tokens = a.tokens;
  CHECK(eng.reuse_prefix(d) == 8);
  CHECK(test::max_abs_diff(eng.step({&d}).value(), first.data(), first.size()).diff < 1e-5);
}

TEST_CASE("an exhausted cache is an error that leaves the sequences as they were", "[model][inference]") {
  Transformer m(tiny(true));
  m.init_weights(2);
  KvCache cache(m.config(), 3, 4);
  InferenceEngine eng(m, cache);
  Sequence a, b;
  a.tokens = prompt_of(8, 1);  // 2 blocks
  b.tokens = prompt_of(8, 2);  // 2 more: only 1 left
  auto r = eng.step({&a, &b});
  REQUIRE(!r);
  CHECK(r.error().message == "KV cache full: all 3 blocks of 4 positions in use");
  CHECK(a.blocks.empty());
  CHECK(b.blocks.empty());
  CHECK(a.cached == 0);
  CHECK(cache.free_blocks() == 3);
  REQUIRE(eng.step({&a}));
  Sequence toolong;
  toolong.tokens = prompt_of(65, 3);
  CHECK(eng.step({&toolong}).error().message == "a sequence of 65 tokens exceeds the model's context of 64");
}
