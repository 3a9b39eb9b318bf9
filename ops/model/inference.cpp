#include "ops/model/inference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>

#include "ops/ops.h"

namespace troupe::model {

KvCache::KvCache(const ModelConfig& cfg, int num_blocks, int block_tokens)
    : block_tokens_(block_tokens), num_blocks_(num_blocks), n_layer_(cfg.n_layer),
      row_(int64_t(cfg.n_kv_head) * cfg.head_dim()) {
  TROUPE_CHECK(num_blocks > 0 && block_tokens > 0, "KvCache: num_blocks and block_tokens must be positive");
  data_.assign(size_t(int64_t(num_blocks) * n_layer_ * 2 * block_tokens * row_), 0.0f);
  refs_.assign(size_t(num_blocks), 0);
  for (int b = 0; b < num_blocks; b++) free_.push_back(b);
}

Expected<int> KvCache::allocate() {
  if (free_.empty()) return make_error(strformat("KV cache full: all %d blocks of %d positions in use", num_blocks_, block_tokens_));
  // The least recently freed block: freed blocks keep their prefix entry until reused, so
  // a prompt seen a moment ago can still be found.
  int b = free_.front();
  free_.erase(free_.begin());
  if (auto it = block_prefix_.find(b); it != block_prefix_.end()) {
    prefix_.erase(it->second);
    block_prefix_.erase(it);
  }
  refs_[size_t(b)] = 1;
  return b;
}

Expected<int> KvCache::allocate_specific(int block) {
  auto it = std::find(free_.begin(), free_.end(), block);
  if (it == free_.end()) return make_error(strformat("KV cache block %d is not free", block));
  free_.erase(it);
  refs_[size_t(block)] = 1;
  return block;
}

void KvCache::release(int block) {
  TROUPE_CHECK(refs_[size_t(block)] > 0, "KvCache: block released more often than retained");
  if (--refs_[size_t(block)] == 0) free_.push_back(block);
}

std::optional<int> KvCache::lookup(uint64_t prefix_hash) const {
  auto it = prefix_.find(prefix_hash);
  if (it == prefix_.end()) return std::nullopt;
  return it->second;
}

void KvCache::unpublish(int block) {
  if (auto it = block_prefix_.find(block); it != block_prefix_.end()) {
    prefix_.erase(it->second);
    block_prefix_.erase(it);
  }
}

void KvCache::publish(uint64_t prefix_hash, int block) {
  if (prefix_.count(prefix_hash) || block_prefix_.count(block)) return;
  prefix_[prefix_hash] = block;
  block_prefix_[block] = prefix_hash;
}

InferenceEngine::InferenceEngine(const Transformer& weights, KvCache& cache, int layers)
    : w_(weights), cfg_(weights.config()), cache_(cache), n_layers_(layers < 0 ? cfg_.n_layer : layers) {
  TROUPE_CHECK(n_layers_ >= 1 && n_layers_ <= cfg_.n_layer, "InferenceEngine: layers %d outside [1, %d]", n_layers_,
               cfg_.n_layer);
  TROUPE_CHECK(cfg_.arch == Arch::Llama, "InferenceEngine: Llama architecture only");
  const auto& st = weights.stage();
  TROUPE_CHECK(st.first_layer == 0 && st.embedding && st.head && (st.last_layer == -1 || st.last_layer == cfg_.n_layer),
               "InferenceEngine: the Transformer must hold the whole model");
  auto get = [&](const std::string& name) {
    const Param* p = weights.find_param(name);
    TROUPE_CHECK(p, "InferenceEngine: no parameter %s", name.c_str());
    return static_cast<const float*>(p->value.data<float>());
  };
  emb_ = get("embed_tokens.weight");
  lnf_ = get("norm.weight");
  head_ = cfg_.tied_embeddings ? emb_ : get("lm_head.weight");
  for (int l = 0; l < cfg_.n_layer; l++) {
    std::string p = "layers." + std::to_string(l) + ".";
    // q/k/v and gate/up are stored back to back: one fused matrix each.
    layers_.push_back({get(p + "input_layernorm.weight"), get(p + "self_attn.q_proj.weight"),
                       get(p + "self_attn.o_proj.weight"), get(p + "post_attention_layernorm.weight"),
                       get(p + "mlp.gate_proj.weight"), get(p + "mlp.down_proj.weight")});
  }
}

uint64_t InferenceEngine::prefix_hash(const Sequence& s, int upto) const {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < upto; i++) {
    uint32_t t = uint32_t(s.tokens[size_t(i)]);
    for (int b = 0; b < 4; b++) h = (h ^ ((t >> (8 * b)) & 0xff)) * 1099511628211ull;
  }
  return h;
}

int InferenceEngine::reuse_prefix(Sequence& s) {
  TROUPE_CHECK(s.blocks.empty() && s.cached == 0, "reuse_prefix: the sequence must be fresh");
  const int bt = cache_.block_tokens();
  for (int b = 0;; b++) {
    int upto = (b + 1) * bt;
    if (upto >= int(s.tokens.size())) break;  // keep at least one position to compute
    auto hit = cache_.lookup(prefix_hash(s, upto));
    if (!hit) break;
    if (cache_.refs(*hit) == 0) {  // freed but not yet reused: take it back from the free list
      auto r = cache_.allocate_specific(*hit);
      if (!r) break;
    } else {
      cache_.retain(*hit);
    }
    s.blocks.push_back(*hit);
  }
  s.cached = s.reused = int(s.blocks.size()) * bt;
  return s.reused;
}

void InferenceEngine::release(Sequence& s) {
  for (int b : s.blocks) cache_.release(b);
  s.blocks.clear();
  s.cached = 0;
}

namespace {
// Decoding steps have a few rows: a GEMV streams each weight once; prompts go to GEMM.
void project(float* out, const float* inp, const float* w, int N, int C, int OC) {
  if (N <= 16) ops::matvec_forward(out, inp, w, N, C, OC);
  else ops::linear_forward(out, inp, w, nullptr, N, C, OC);
}
}  // namespace

Expected<const float*> InferenceEngine::step(const std::vector<Sequence*>& batch) { return run(batch, false); }

Expected<const float*> InferenceEngine::step_all(const std::vector<Sequence*>& batch) { return run(batch, true); }

void InferenceEngine::truncate(Sequence& s, int n) {
  if (n >= int(s.tokens.size())) return;
  const int bt = cache_.block_tokens();
  const size_t row_floats = size_t(bt) * size_t(cfg_.n_kv_head) * size_t(cfg_.head_dim());
  s.tokens.resize(size_t(n));
  s.cached = std::min(s.cached, n);
  size_t keep = std::min(s.blocks.size(), size_t((n + bt - 1) / bt));
  // The last kept block will be rewritten past n: it no longer holds what its prefix
  // hash says, and another sequence sharing it must not see the rewrite.
  if (n % bt != 0 && keep > 0) {
    int b = s.blocks[keep - 1];
    if (cache_.refs(b) > 1) {
      if (auto fresh = cache_.allocate()) {  // a private copy
        for (int l = 0; l < n_layers_; l++) {
          std::memcpy(cache_.k(*fresh, l), cache_.k(b, l), sizeof(float) * row_floats);
          std::memcpy(cache_.v(*fresh, l), cache_.v(b, l), sizeof(float) * row_floats);
        }
        cache_.release(b);
        s.blocks[keep - 1] = *fresh;
      } else {  // no block to copy into: drop it (released below) and compute its positions again
        keep--;
        s.cached = std::min(s.cached, int(keep) * bt);
      }
    } else {
      cache_.unpublish(b);
    }
  }
  for (size_t i = keep; i < s.blocks.size(); i++) cache_.release(s.blocks[i]);
  s.blocks.resize(keep);
}

Expected<const float*> InferenceEngine::run(const std::vector<Sequence*>& batch, bool every_position) {
  const int C = cfg_.d_model, H = cfg_.d_ff, HS = cfg_.head_dim(), NH = cfg_.n_head, NKV = cfg_.n_kv_head;
  const int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, V = cfg_.vocab_size;
  const int bt = cache_.block_tokens();
  // Rows: every uncached position of every sequence, in batch order.
  struct Row {
    Sequence* s;
    int pos;
  };
  std::vector<Row> rows;
  for (Sequence* s : batch) {
    int n = int(s->tokens.size());
    if (n > cfg_.max_seq_len)
      return make_error(strformat("a sequence of %d tokens exceeds the model's context of %d", n, cfg_.max_seq_len));
    if (s->cached >= n) return make_error("a sequence has no new token to compute");
    for (int32_t t : s->tokens)
      if (t < 0 || t >= V) return make_error(strformat("token %d is outside the vocabulary (%d)", t, V));
    for (int p = s->cached; p < n; p++) rows.push_back({s, p});
  }
  // Blocks for the new positions; on failure give back what this call took.
  std::vector<std::pair<Sequence*, size_t>> grown;
  for (Sequence* s : batch) {
    size_t need = (s->tokens.size() + size_t(bt) - 1) / size_t(bt);
    size_t had = s->blocks.size();
    while (s->blocks.size() < need) {
      auto b = cache_.allocate();
      if (!b) {
        for (auto& [q, h] : grown) {
          for (size_t i = h; i < q->blocks.size(); i++) cache_.release(q->blocks[i]);
          q->blocks.resize(h);
        }
        for (size_t i = had; i < s->blocks.size(); i++) cache_.release(s->blocks[i]);
        s->blocks.resize(had);
        return b.error();
      }
      s->blocks.push_back(*b);
    }
    grown.push_back({s, had});
  }
  const int N = int(rows.size());
  auto grow = [](std::vector<float>& v, int64_t n) {
    if (int64_t(v.size()) < n) v.resize(size_t(n));
    return v.data();
  };
  float* x = grow(x_, int64_t(N) * C);
  float* h = grow(h_, int64_t(N) * C);
  float* qkv = grow(qkv_, int64_t(N) * QKV);
  float* att = grow(att_, int64_t(N) * QD);
  float* tmp = grow(tmp_, int64_t(N) * C);
  float* fc = grow(fc_, int64_t(N) * 2 * H);
  float* act = grow(act_, int64_t(N) * H);
  float* rstd = grow(rstd_, N);
  int max_pos = 0;
  for (auto& r : rows) max_pos = std::max(max_pos, r.pos);
  float* scores = grow(scores_, int64_t(N) * NH * (max_pos + 1));
  for (int r = 0; r < N; r++)
    std::memcpy(x + int64_t(r) * C, emb_ + int64_t(rows[size_t(r)].s->tokens[size_t(rows[size_t(r)].pos)]) * C,
                sizeof(float) * size_t(C));
  const float scale = 1.0f / std::sqrt(float(HS));
  for (int l = 0; l < n_layers_; l++) {
    const LayerW& W = layers_[size_t(l)];
    ops::rmsnorm_forward(h, rstd, x, W.ln1, N, C, cfg_.norm_eps);
    project(qkv, h, W.qkv, N, C, QKV);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
      float* row = qkv + int64_t(r) * QKV;
      const Row& rw = rows[size_t(r)];
      ops::rope_forward_ref(row, 1, 1, NH, HS, cfg_.rope_theta, rw.pos);
      ops::rope_forward_ref(row + QD, 1, 1, NKV, HS, cfg_.rope_theta, rw.pos);
      int blk = rw.s->blocks[size_t(rw.pos / bt)], slot = rw.pos % bt;
      std::memcpy(cache_.k(blk, l) + int64_t(slot) * KD, row + QD, sizeof(float) * size_t(KD));
      std::memcpy(cache_.v(blk, l) + int64_t(slot) * KD, row + QD + KD, sizeof(float) * size_t(KD));
    }
    // Attention of each new position over positions [0, pos] of its own sequence.
#pragma omp parallel for collapse(2) schedule(dynamic, 4)
    for (int r = 0; r < N; r++) {
      for (int hd = 0; hd < NH; hd++) {
        const Row& rw = rows[size_t(r)];
        const int kvh = hd / (NH / NKV);
        const float* q = qkv + int64_t(r) * QKV + int64_t(hd) * HS;
        float* sc = scores + (int64_t(r) * NH + hd) * (max_pos + 1);
        float mx = -INFINITY;
        for (int p = 0; p <= rw.pos; p++) {
          const float* k = cache_.k(rw.s->blocks[size_t(p / bt)], l) + int64_t(p % bt) * KD + int64_t(kvh) * HS;
          float d = 0;
          for (int i = 0; i < HS; i++) d += q[i] * k[i];
          sc[p] = d * scale;
          mx = std::max(mx, sc[p]);
        }
        float sum = 0;
        for (int p = 0; p <= rw.pos; p++) sum += sc[p] = std::exp(sc[p] - mx);
        float inv = 1.0f / sum;
        float* o = att + int64_t(r) * QD + int64_t(hd) * HS;
        std::fill(o, o + HS, 0.0f);
        for (int p = 0; p <= rw.pos; p++) {
          const float* v = cache_.v(rw.s->blocks[size_t(p / bt)], l) + int64_t(p % bt) * KD + int64_t(kvh) * HS;
          float wgt = sc[p] * inv;
          for (int i = 0; i < HS; i++) o[i] += wgt * v[i];
        }
      }
    }
    project(tmp, att, W.o, N, QD, C);
    ops::residual_forward(x, x, tmp, int64_t(N) * C);
    ops::rmsnorm_forward(h, rstd, x, W.ln2, N, C, cfg_.norm_eps);
    project(fc, h, W.fc, N, C, 2 * H);
    ops::swiglu_forward(act, fc, N, H);
    project(tmp, act, W.down, N, H, C);
    ops::residual_forward(x, x, tmp, int64_t(N) * C);
  }
  // The head: on each sequence's last row, or on every row.
  const int S = every_position ? N : int(batch.size());
  float* last = grow(last_, int64_t(S) * C);
  float* logits = grow(logits_, int64_t(S) * V);
  if (every_position) {
    std::memcpy(last, x, sizeof(float) * size_t(N) * size_t(C));
  } else {
    int r = -1;
    for (int i = 0; i < S; i++) {
      r += int(batch[size_t(i)]->tokens.size()) - batch[size_t(i)]->cached;
      std::memcpy(last + int64_t(i) * C, x + int64_t(r) * C, sizeof(float) * size_t(C));
    }
  }
  ops::rmsnorm_forward(last, rstd, last, lnf_, S, C, cfg_.norm_eps);
  project(logits, last, head_, S, C, V);
  for (Sequence* s : batch) {
    int n = int(s->tokens.size());
    for (int b = s->cached / bt; (b + 1) * bt <= n; b++) cache_.publish(prefix_hash(*s, (b + 1) * bt), s->blocks[size_t(b)]);
    s->cached = n;
  }
  return static_cast<const float*>(logits);
}

}  // namespace troupe::model
