#include "ops/model/speculative.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/rng.h"

namespace troupe::model {

void sampling_distribution(const float* logits, int V, const Sampling& s, float* p) {
  std::fill(p, p + V, 0.0f);
  if (s.temperature <= 0) {
    p[std::max_element(logits, logits + V) - logits] = 1.0f;
    return;
  }
  // The same candidate set, order and weights as sample_token.
  std::vector<int32_t> ids(static_cast<size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  size_t keep = s.top_k > 0 ? std::min<size_t>(size_t(s.top_k), ids.size()) : ids.size();
  std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(keep), ids.end(), by_logit);
  std::vector<double> w(keep);
  double mx = logits[ids[0]], sum = 0;
  for (size_t i = 0; i < keep; i++) sum += w[i] = std::exp((double(logits[ids[i]]) - mx) / s.temperature);
  if (s.top_p < 1) {
    double acc = 0;
    size_t n = 0;
    while (n < keep && acc < s.top_p * sum) acc += w[n++];
    keep = std::max<size_t>(n, 1);
    sum = 0;
    for (size_t i = 0; i < keep; i++) sum += w[i];
  }
  for (size_t i = 0; i < keep; i++) p[ids[i]] = float(w[i] / sum);
}

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

SpeculativeDecoder::SpeculativeDecoder(InferenceEngine& target, Drafter& drafter, int k_max, int k_start)
    : target_(target), drafter_(drafter), k_max_(k_max), k_(std::clamp(k_start, 1, k_max)) {}

Expected<Verdict> SpeculativeDecoder::round(Sequence& seq, const Sampling& s, uint64_t round_index) {
  const int V = target_.config().vocab_size;
  const int base = int(seq.tokens.size());  // the context; its last token is not yet computed
  int k = std::min(k_, target_.config().max_seq_len - base);
  auto draft = drafter_.propose(seq.tokens, std::max(k, 0), s, round_index);
  if (!draft) return draft.error();
  if (int(draft->tokens.size()) > k) draft->tokens.resize(size_t(k)), draft->q.resize(std::min(draft->q.size(), size_t(k)));
  seq.tokens.insert(seq.tokens.end(), draft->tokens.begin(), draft->tokens.end());
  const int cached_before = seq.cached;
  auto logits = target_.step_all({&seq});
  if (!logits) {
    seq.tokens.resize(size_t(base));
    return logits.error();
  }
  // One row per position computed, [cached_before, base + kd); the verdict needs the last
  // kd + 1: the target's distributions after base - 1, base, ..., base + kd - 1.
  const int kd = int(draft->tokens.size());
  const int n_rows = int(seq.tokens.size()) - cached_before;
  std::vector<std::vector<float>> p(size_t(kd + 1), std::vector<float>(static_cast<size_t>(V)));
  std::vector<const float*> prow;
  for (int i = 0; i <= kd; i++) {
    sampling_distribution(*logits + int64_t(n_rows - (kd + 1) + i) * V, V, s, p[size_t(i)].data());
    prow.push_back(p[size_t(i)].data());
  }
  Verdict v = verify_draft(*draft, prow, V, s.seed, round_index);
  // Keep the context and the accepted drafts (computed, correct), drop the rest, and
  // append the correction or bonus token (not yet computed).
  target_.truncate(seq, base + v.accepted);
  seq.tokens.push_back(v.tokens.back());
  stats_.rounds++;
  stats_.drafted += kd;
  stats_.accepted += v.accepted;
  if (kd > 0) {
    rate_ = 0.8 * rate_ + 0.2 * double(v.accepted) / kd;
    if (rate_ > 0.8 && k_ < k_max_) k_++;
    else if (rate_ < 0.4 && k_ > 1) k_--;
  }
  return v;
}

Expected<std::vector<int32_t>> SpeculativeDecoder::generate(const std::vector<int32_t>& prompt, int max_new,
                                                           const Sampling& s,
                                                           const std::function<bool(int32_t)>& on_token) {
  if (s.repetition_penalty != 1.0f)
    return make_error("speculative decoding: repetition_penalty is not supported (the target's distribution would "
                      "depend on the drafted tokens)");
  if (prompt.empty()) return make_error("speculative decoding: empty prompt");
  Sequence seq;
  seq.tokens = prompt;
  std::vector<int32_t> out;
  bool stop = false;
  for (uint64_t r = 0; !stop && int(out.size()) < max_new; r++) {
    if (int(seq.tokens.size()) >= target_.config().max_seq_len) break;
    auto v = round(seq, s, r);
    if (!v) {
      target_.release(seq);
      return v.error();
    }
    for (int32_t t : v->tokens) {
      if (int(out.size()) >= max_new) break;
      out.push_back(t);
      stats_.generated++;
      if (on_token && !on_token(t)) {
        stop = true;
        break;
      }
    }
  }
  target_.release(seq);
  return out;
}

}  // namespace troupe::model
