#include "ops/model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/rng.h"

namespace troupe::model {

int32_t sample_token(const float* logits, int V, const Sampling& s, uint64_t draw) {
  if (s.temperature <= 0) return int32_t(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> ids(static_cast<size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  // Most likely first; ties by id, so the order (and the draw) is deterministic.
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  size_t keep = s.top_k > 0 ? std::min<size_t>(size_t(s.top_k), ids.size()) : ids.size();
  std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(keep), ids.end(), by_logit);
  ids.resize(keep);
  std::vector<double> p(keep);
  double mx = logits[ids[0]], sum = 0;
  for (size_t i = 0; i < keep; i++) sum += p[i] = std::exp((double(logits[ids[i]]) - mx) / s.temperature);
  if (s.top_p < 1) {
    double acc = 0;
    size_t n = 0;
    while (n < keep && acc < s.top_p * sum) acc += p[n++];
    keep = std::max<size_t>(n, 1);
    sum = 0;
    for (size_t i = 0; i < keep; i++) sum += p[i];
  }
  double u = double(RngStream(s.seed, {draw}).uniform(0)) * sum, acc = 0;
  for (size_t i = 0; i < keep; i++)
    if ((acc += p[i]) > u) return ids[i];
  return ids[keep - 1];
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
