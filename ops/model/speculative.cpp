#include "ops/model/speculative.h"

#include <algorithm>
#include <cmath>

#include "core/rng.h"
#include "ops/model/gguf_model.h"

namespace troupe::model {

namespace {

// Draws from weights w (V values, not necessarily normalized) with uniform u in [0, 1).
int32_t draw(const std::vector<double>& w, double u) {
  double sum = 0;
  for (double x : w) sum += x;
  double target = u * sum, acc = 0;
  int32_t last = 0;
  for (size_t i = 0; i < w.size(); i++) {
    if (w[i] <= 0) continue;
    last = int32_t(i);
    if ((acc += w[i]) > target) return int32_t(i);
  }
  return last;
}

}  // namespace

Verdict verify_draft(const Draft& d, const std::vector<const float*>& p, int V, uint64_t seed, uint64_t round) {
  const int k = int(d.tokens.size());
  TROUPE_CHECK(int(p.size()) == k + 1, "verify_draft: %zu target rows for %d draft tokens", p.size(), k);
  RngStream rng(seed, {round});
  Verdict v;
  for (int i = 0; i < k; i++) {
    const int32_t x = d.tokens[size_t(i)];
    const bool onehot = d.q.empty();
    const double px = p[size_t(i)][x], qx = onehot ? 1.0 : double(d.q[size_t(i)][size_t(x)]);
    // Accept with probability min(1, p(x) / q(x)).
    if (qx > 0 && double(rng.uniform(uint64_t(i))) * qx < px) {
      v.tokens.push_back(x);
      v.accepted++;
      continue;
    }
    // Rejected: draw from norm(max(0, p - q)).
    std::vector<double> r(static_cast<size_t>(V));
    double mass = 0;
    for (int t = 0; t < V; t++) {
      double q = onehot ? (t == x ? 1.0 : 0.0) : double(d.q[size_t(i)][size_t(t)]);
      mass += r[size_t(t)] = std::max(0.0, double(p[size_t(i)][t]) - q);
    }
    if (mass <= 0)  // p == q up to rounding: the residual is empty, p itself is exact
      for (int t = 0; t < V; t++) r[size_t(t)] = p[size_t(i)][t];
    v.tokens.push_back(draw(r, double(rng.uniform(uint64_t(k + 1 + i)))));
    return v;
  }
  std::vector<double> bonus(p[size_t(k)], p[size_t(k)] + V);
  v.tokens.push_back(draw(bonus, double(rng.uniform(uint64_t(2 * k + 2)))));
  return v;
}

Expected<Draft> NgramDrafter::propose(const std::vector<int32_t>& ctx, int k, const Sampling&, uint64_t) {
  Draft d;
  const int n_ctx = int(ctx.size());
  for (int n = std::min(max_n_, n_ctx - 1); n >= min_n_; n--) {
    // The latest earlier occurrence of the context's last n tokens.
    for (int start = n_ctx - n - 1; start >= 0; start--) {
      if (!std::equal(ctx.begin() + start, ctx.begin() + start + n, ctx.end() - n)) continue;
      for (int j = start + n; j < n_ctx && int(d.tokens.size()) < k; j++) d.tokens.push_back(ctx[size_t(j)]);
      return d;
    }
  }
  return d;  // no match: nothing to propose
}

ModelDrafter::ModelDrafter(const Transformer& model, int layers, int kv_blocks, std::string name)
    : name_(std::move(name)), cache_cfg_(model.config()) {
  if (layers > 0) cache_cfg_.n_layer = layers;
  cache_ = std::make_unique<KvCache>(cache_cfg_, kv_blocks, 16);
  engine_ = std::make_unique<InferenceEngine>(model, *cache_, layers);
}

ModelDrafter::ModelDrafter(std::shared_ptr<const Transformer> model, int layers, int kv_blocks, std::string name)
    : ModelDrafter(*model, layers, kv_blocks, std::move(name)) {
  owned_ = std::move(model);
}

Expected<std::shared_ptr<Drafter>> make_drafter(const std::string& spec, std::shared_ptr<const Transformer> target,
                                                int max_seq_len) {
  const ModelConfig& tc = target->config();
  const int blocks = (max_seq_len + 15) / 16 + 1;
  if (spec == "ngram") return std::shared_ptr<Drafter>(std::make_shared<NgramDrafter>());
  if (spec.rfind("self:", 0) == 0) {
    char* end = nullptr;
    long n = std::strtol(spec.c_str() + 5, &end, 10);
    if (spec.size() == 5 || *end || n < 1 || n >= tc.n_layer)
      return make_error(strformat("--draft '%s': self:N needs 1 <= N < %d (the model's layers)", spec.c_str(), tc.n_layer));
    return std::shared_ptr<Drafter>(std::make_shared<ModelDrafter>(target, int(n), blocks, spec));
  }
  auto small = load_gguf_llama(spec, max_seq_len);
  if (!small) return make_error("--draft '" + spec + "': " + small.error().message + " (expected ngram, self:N or a GGUF)");
  if (small->config.vocab_size != tc.vocab_size)
    return make_error(strformat("--draft '%s': vocabulary of %d tokens, the model's has %d", spec.c_str(),
                                small->config.vocab_size, tc.vocab_size));
  std::shared_ptr<const Transformer> m(std::move(small->model));
  return std::shared_ptr<Drafter>(std::make_shared<ModelDrafter>(std::move(m), -1, blocks, spec));
}

Expected<Draft> ModelDrafter::propose(const std::vector<int32_t>& ctx, int k, const Sampling& s, uint64_t round) {
  // Keep the common prefix of what was drafted before and the context now.
  size_t common = 0;
  while (common < seq_.tokens.size() && common < ctx.size() && seq_.tokens[common] == ctx[common]) common++;
  if (common == ctx.size() && common > 0) common--;  // the last context token must be computed again
  engine_->truncate(seq_, int(common));
  seq_.tokens.assign(ctx.begin(), ctx.end());
  const int V = engine_->config().vocab_size;
  Draft d;
  const bool greedy = s.temperature <= 0;
  for (int i = 0; i < k; i++) {
    auto logits = engine_->step({&seq_});
    if (!logits) return logits.error();
    std::vector<float> q(static_cast<size_t>(V));
    sampling_distribution(*logits, V, s, q.data());
    int32_t x;
    if (greedy) {
      x = int32_t(std::max_element(q.begin(), q.end()) - q.begin());
    } else {
      std::vector<double> w(q.begin(), q.end());
      x = draw(w, double(RngStream(s.seed ^ 0x5eedd2af7ull, {round, uint64_t(i)}).uniform(0)));
      d.q.push_back(std::move(q));
    }
    d.tokens.push_back(x);
    seq_.tokens.push_back(x);
  }
  return d;
}

void AdaptiveK::update(int accepted, int drafted) {
  if (drafted <= 0) return;
  rate = 0.8 * rate + 0.2 * double(accepted) / drafted;
  if (rate > 0.8 && k < k_max) k++;
  else if (rate < 0.4 && k > 1) k--;
}

Expected<Verdict> verify_on_target(InferenceEngine& target, Sequence& seq, const Draft& d, const Sampling& s,
                                   uint64_t round) {
  const int V = target.config().vocab_size;
  const int base = int(seq.tokens.size());
  if (base == 0) return make_error("speculative decoding: empty sequence");
  seq.tokens.insert(seq.tokens.end(), d.tokens.begin(), d.tokens.end());
  const int cached_before = seq.cached;
  auto logits = target.step_all({&seq});
  if (!logits) {
    seq.tokens.resize(size_t(base));
    return logits.error();
  }
  // One row per position computed, [cached_before, base + kd); the rule needs the last
  // kd + 1: the target's distributions after base - 1, base, ..., base + kd - 1.
  const int kd = int(d.tokens.size());
  const int n_rows = int(seq.tokens.size()) - cached_before;
  std::vector<std::vector<float>> p(size_t(kd + 1), std::vector<float>(static_cast<size_t>(V)));
  std::vector<const float*> prow;
  for (int i = 0; i <= kd; i++) {
    sampling_distribution(*logits + int64_t(n_rows - (kd + 1) + i) * V, V, s, p[size_t(i)].data());
    prow.push_back(p[size_t(i)].data());
  }
  Verdict v = verify_draft(d, prow, V, s.seed, round);
  // Keep the context and the accepted drafts (computed, correct), drop the rest.
  target.truncate(seq, base + v.accepted);
  seq.tokens.push_back(v.tokens.back());
  return v;
}

Expected<void> check_speculative_sampling(const Sampling& s) {
  if (s.repetition_penalty != 1.0f)
    return make_error("speculative decoding: repetition_penalty is not supported (the target's distribution would "
                      "depend on the drafted tokens)");
  return {};
}

SpeculativeDecoder::SpeculativeDecoder(InferenceEngine& target, Drafter& drafter, int k_max, int k_start)
    : target_(target), drafter_(drafter), k_{k_max, std::clamp(k_start, 1, k_max), 0.5} {}

Expected<std::vector<int32_t>> speculative_rounds(const std::vector<int32_t>& prompt, int max_new, int max_context,
                                                  AdaptiveK& k, SpeculativeStats& stats, const ProposeFn& propose,
                                                  const VerifyFn& verify,
                                                  const std::function<bool(int32_t)>& on_token) {
  std::vector<int32_t> context = prompt, out;
  bool stop = false;
  for (uint64_t r = 0; !stop && int(out.size()) < max_new && int(context.size()) < max_context; r++) {
    const int kr = int(std::min<int64_t>(k.k, int64_t(max_context) - int64_t(context.size())));
    auto draft = propose(context, kr, r);
    if (!draft) return draft.error();
    if (int(draft->tokens.size()) > kr)
      draft->tokens.resize(size_t(kr)), draft->q.resize(std::min(draft->q.size(), size_t(kr)));
    auto v = verify(*draft, r);
    if (!v) return v.error();
    stats.rounds++;
    stats.drafted += int(draft->tokens.size());
    stats.accepted += v->accepted;
    k.update(v->accepted, int(draft->tokens.size()));
    context.insert(context.end(), v->tokens.begin(), v->tokens.end());
    for (int32_t t : v->tokens) {
      if (int(out.size()) >= max_new) break;
      out.push_back(t);
      stats.generated++;
      if (on_token && !on_token(t)) {
        stop = true;
        break;
      }
    }
  }
  return out;
}

Expected<std::vector<int32_t>> SpeculativeDecoder::generate(const std::vector<int32_t>& prompt, int max_new,
                                                           const Sampling& s,
                                                           const std::function<bool(int32_t)>& on_token) {
  if (auto ok = check_speculative_sampling(s); !ok) return ok.error();
  if (prompt.empty()) return make_error("speculative decoding: empty prompt");
  Sequence seq;
  seq.tokens = prompt;
  auto out = speculative_rounds(
      prompt, max_new, target_.config().max_seq_len, k_, stats_,
      [&](const std::vector<int32_t>& ctx, int k, uint64_t r) { return drafter_.propose(ctx, k, s, r); },
      [&](const Draft& d, uint64_t r) { return verify_on_target(target_, seq, d, s, r); }, on_token);
  target_.release(seq);
  return out;
}

}  // namespace troupe::model
