#include "ops/model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/rng.h"

namespace troupe::model {

namespace {

// The tokens sampling may pick at temperature > 0 and their unnormalized weights: the
// top_k most likely (most likely first; ties by id, so the order and the draw are
// deterministic), weighted exp((logit - max) / T), then cut to the smallest prefix whose
// weight reaches top_p of the total.
struct Candidates {
  std::vector<int32_t> ids;
  std::vector<double> weight;
  double sum = 0;
};

Candidates candidates(const float* logits, int V, const Sampling& s) {
  Candidates c;
  c.ids.resize(static_cast<size_t>(V));
  std::iota(c.ids.begin(), c.ids.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  size_t keep = s.top_k > 0 ? std::min<size_t>(size_t(s.top_k), c.ids.size()) : c.ids.size();
  std::partial_sort(c.ids.begin(), c.ids.begin() + std::ptrdiff_t(keep), c.ids.end(), by_logit);
  c.weight.resize(keep);
  double mx = logits[c.ids[0]];
  for (size_t i = 0; i < keep; i++) c.sum += c.weight[i] = std::exp((double(logits[c.ids[i]]) - mx) / s.temperature);
  if (s.top_p < 1) {
    double acc = 0;
    size_t n = 0;
    while (n < keep && acc < s.top_p * c.sum) acc += c.weight[n++];
    keep = std::max<size_t>(n, 1);
    c.sum = 0;
    for (size_t i = 0; i < keep; i++) c.sum += c.weight[i];
  }
  c.ids.resize(keep);
  c.weight.resize(keep);
  return c;
}

}  // namespace

int32_t sample_token(const float* logits, int V, const Sampling& s, uint64_t draw) {
  if (s.temperature <= 0) return int32_t(std::max_element(logits, logits + V) - logits);
  Candidates c = candidates(logits, V, s);
  double u = double(RngStream(s.seed, {draw}).uniform(0)) * c.sum, acc = 0;
  for (size_t i = 0; i < c.ids.size(); i++)
    if ((acc += c.weight[i]) > u) return c.ids[i];
  return c.ids.back();
}

void sampling_distribution(const float* logits, int V, const Sampling& s, float* p) {
  std::fill(p, p + V, 0.0f);
  if (s.temperature <= 0) {
    p[std::max_element(logits, logits + V) - logits] = 1.0f;
    return;
  }
  Candidates c = candidates(logits, V, s);
  for (size_t i = 0; i < c.ids.size(); i++) p[c.ids[i]] = float(c.weight[i] / c.sum);
}

void apply_repetition_penalty(float* logits, int V, const std::vector<int32_t>& context, float penalty) {
  if (penalty == 1.0f) return;
  std::vector<bool> seen(static_cast<size_t>(V), false);
  for (int32_t t : context) {
    if (t < 0 || t >= V || seen[size_t(t)]) continue;
    seen[size_t(t)] = true;
    float& l = logits[t];
    l = l > 0 ? l / penalty : l * penalty;
  }
}

Expected<std::vector<int32_t>> generate_plain(Transformer& m, const std::vector<int32_t>& prompt, int max_new,
                                              const Sampling& s, const std::function<bool(int32_t)>& on_token) {
  const auto& cfg = m.config();
  const auto& st = m.stage();
  if (st.first_layer != 0 || !st.embedding || !st.head || (st.last_layer != -1 && st.last_layer != cfg.n_layer))
    return make_error("generate: the model must hold every layer and the head");
  if (prompt.empty()) return make_error("generate: empty prompt");
  for (int32_t t : prompt)
    if (t < 0 || t >= cfg.vocab_size) return make_error(strformat("generate: token %d is outside the vocabulary", t));
  std::vector<int32_t> ctx = prompt, out;
  bool was_training = m.training();
  m.set_training(false);
  for (int i = 0; i < max_new; i++) {
    int T = int(std::min<size_t>(ctx.size(), size_t(cfg.max_seq_len)));
    const int32_t* window = ctx.data() + (ctx.size() - size_t(T));
    m.forward(window, nullptr, nullptr, 1, T, 0);
    const float* logits = m.logits(0) + int64_t(T - 1) * cfg.vocab_size;
    std::vector<float> penalized;
    if (s.repetition_penalty != 1.0f) {
      penalized.assign(logits, logits + cfg.vocab_size);
      apply_repetition_penalty(penalized.data(), cfg.vocab_size, ctx, s.repetition_penalty);
      logits = penalized.data();
    }
    int32_t next = sample_token(logits, cfg.vocab_size, s, uint64_t(i));
    ctx.push_back(next);
    out.push_back(next);
    if (on_token && !on_token(next)) break;
  }
  m.set_training(was_training);
  return out;
}

Expected<void> load_params(Transformer& m, const std::map<std::string, Tensor>& tensors) {
  for (auto& p : m.params()) {
    auto it = tensors.find(p.name);
    if (it == tensors.end()) return make_error("no tensor '" + p.name + "'");
    if (!(it->second.shape() == p.value.shape()) || it->second.dtype() != DType::F32)
      return make_error("tensor '" + p.name + "' is " + it->second.str() + ", expected " + p.value.str());
    p.value.copy_from(it->second);
  }
  return {};
}

}  // namespace troupe::model
