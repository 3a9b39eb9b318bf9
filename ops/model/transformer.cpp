// The decoder-only transformer: parameter layout, forward and backward of a stage.
// Backward mirrors forward step by step; each step names what it undoes.

#include "ops/model/transformer.h"

#include <cmath>
#include <cstring>

#include "core/bytes.h"
#include "core/rng.h"
#include "ops/ops.h"

namespace troupe::model {

// ---------------------------------------------------------------------------------------
// config

ModelConfig ModelConfig::gpt2(int n_layer, int n_head, int d_model, int vocab, int max_seq) {
  ModelConfig c;
  c.arch = Arch::GPT2;
  c.n_layer = n_layer;
  c.n_head = c.n_kv_head = n_head;
  c.d_model = d_model;
  c.d_ff = 4 * d_model;
  c.vocab_size = vocab;
  c.max_seq_len = max_seq;
  c.norm_eps = 1e-5f;
  c.tied_embeddings = true;
  return c;
}

ModelConfig ModelConfig::llama(int n_layer, int n_head, int n_kv_head, int d_model, int d_ff, int vocab,
                               int max_seq) {
  ModelConfig c;
  c.arch = Arch::Llama;
  c.n_layer = n_layer;
  c.n_head = n_head;
  c.n_kv_head = n_kv_head;
  c.d_model = d_model;
  c.d_ff = d_ff;
  c.vocab_size = vocab;
  c.max_seq_len = max_seq;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.tied_embeddings = false;
  return c;
}

Expected<void> ModelConfig::validate() const {
  auto bad = [](const char* field, const std::string& why) { return make_error(std::string(field) + ": " + why); };
  if (vocab_size <= 0) return bad("vocab_size", "must be positive");
  if (max_seq_len <= 0) return bad("max_seq_len", "must be positive");
  if (n_layer <= 0) return bad("n_layer", "must be positive");
  if (n_head <= 0) return bad("n_head", "must be positive");
  if (d_model <= 0 || d_model % n_head != 0)
    return bad("d_model", strformat("%d must be a positive multiple of n_head (%d)", d_model, n_head));
  if (n_kv_head <= 0 || n_head % n_kv_head != 0)
    return bad("n_kv_head", strformat("%d must divide n_head (%d)", n_kv_head, n_head));
  if (arch == Arch::GPT2 && n_kv_head != n_head) return bad("n_kv_head", "GPT-2 has no grouped-query attention");
  if (arch == Arch::Llama && head_dim() % 2 != 0)
    return bad("d_model", strformat("head size %d must be even for RoPE", head_dim()));
  if (d_ff <= 0) return bad("d_ff", "must be positive");
  if (!(norm_eps > 0)) return bad("norm_eps", "must be positive");
  return {};
}

std::string ModelConfig::str() const {
  return strformat("%s L=%d NH=%d NKV=%d C=%d H=%d V=%d maxT=%d%s", arch == Arch::GPT2 ? "gpt2" : "llama", n_layer,
                   n_head, n_kv_head, d_model, d_ff, vocab_size, max_seq_len, tied_embeddings ? " tied" : "");
}

double Transformer::train_flops_per_token(const ModelConfig& c, int T) {
  double C = c.d_model, H = c.d_ff;
  double per_layer = C * c.qkv_dim() + c.n_head * c.head_dim() * C +
                     (c.arch == Arch::GPT2 ? 2 * C * H : 3 * C * H);
  double matmul_params = c.n_layer * per_layer + C * c.vocab_size;  // + the head
  return 6.0 * matmul_params + 6.0 * c.n_layer * double(T) * C;
}

float lr_schedule(int step, float lr, float min_lr, int warmup, int total_steps) {
  if (step < warmup) return lr * float(step + 1) / float(warmup);
  if (total_steps <= warmup) return lr;
  float progress = std::min(1.0f, float(step - warmup) / float(total_steps - warmup));
  return min_lr + 0.5f * (lr - min_lr) * (1.0f + std::cos(3.14159265358979f * progress));
}

// ---------------------------------------------------------------------------------------
// parameters

struct Transformer::Weights {
  struct Layer {
    float *ln1_w = nullptr, *ln1_b = nullptr;    // (C)
    float *qkv_w = nullptr, *qkv_b = nullptr;    // (QKV, C): q, k, v rows stacked
    float *o_w = nullptr, *o_b = nullptr;        // (C, NH*HS)
    float *ln2_w = nullptr, *ln2_b = nullptr;    // (C)
    float *fc_w = nullptr, *fc_b = nullptr;      // (FC, C): GPT-2 FC=4C; Llama FC=2H, gate rows then up rows
    float *proj_w = nullptr, *proj_b = nullptr;  // (C, H)
  };
  float* wte = nullptr;   // (V, C)
  float* wpe = nullptr;   // (maxT, C), GPT-2
  float *lnf_w = nullptr, *lnf_b = nullptr;
  float* head = nullptr;  // (V, C): wte when tied
  std::vector<Layer> layers;
};

namespace {

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  bool decay;
  float** slot_w;  // where to store the pointer in the weight and grad tables
  float** slot_g;
};

}  // namespace

Transformer::Transformer(const ModelConfig& cfg, StageRange stage)
    : cfg_(cfg), stage_(stage), w_(std::make_unique<Weights>()), g_(std::make_unique<Weights>()) {
  cfg_.validate().value();
  if (stage_.last_layer < 0) stage_.last_layer = cfg_.n_layer;
  TROUPE_CHECK(0 <= stage_.first_layer && stage_.first_layer <= stage_.last_layer &&
                   stage_.last_layer <= cfg_.n_layer,
               "stage layers [%d, %d) of %d", stage_.first_layer, stage_.last_layer, cfg_.n_layer);

  const int64_t C = cfg_.d_model, V = cfg_.vocab_size, H = cfg_.d_ff, HS = cfg_.head_dim();
  const int64_t QD = cfg_.n_head * HS, KD = cfg_.n_kv_head * HS;
  const bool gpt2 = cfg_.arch == Arch::GPT2;
  std::vector<Spec> specs;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay, float** w, float** g) {
    specs.push_back({std::move(name), std::move(shape), decay, w, g});
  };
  // Sub-tensors that must be adjacent (q/k/v, gate/up) get slot pointers only on the first.
  float* unused_w = nullptr;
  float* unused_g = nullptr;

  if (stage_.embedding) {
    add(gpt2 ? "wte.weight" : "embed_tokens.weight", {V, C}, true, &w_->wte, &g_->wte);
    if (gpt2) add("wpe.weight", {cfg_.max_seq_len, C}, true, &w_->wpe, &g_->wpe);
  }
  w_->layers.resize(size_t(n_stage_layers()));
  g_->layers.resize(size_t(n_stage_layers()));
  std::vector<size_t> group_spec;  // index of each layer's first spec, then the head's
  for (int i = 0; i < n_stage_layers(); i++) {
    group_spec.push_back(specs.size());
    int l = stage_.first_layer + i;
    auto& W = w_->layers[size_t(i)];
    auto& G = g_->layers[size_t(i)];
    if (gpt2) {
      std::string p = "h." + std::to_string(l) + ".";
      add(p + "ln_1.weight", {C}, false, &W.ln1_w, &G.ln1_w);
      add(p + "ln_1.bias", {C}, false, &W.ln1_b, &G.ln1_b);
      add(p + "attn.qkv.weight", {QD + 2 * KD, C}, true, &W.qkv_w, &G.qkv_w);
      add(p + "attn.qkv.bias", {QD + 2 * KD}, false, &W.qkv_b, &G.qkv_b);
      add(p + "attn.proj.weight", {C, QD}, true, &W.o_w, &G.o_w);
      add(p + "attn.proj.bias", {C}, false, &W.o_b, &G.o_b);
      add(p + "ln_2.weight", {C}, false, &W.ln2_w, &G.ln2_w);
      add(p + "ln_2.bias", {C}, false, &W.ln2_b, &G.ln2_b);
      add(p + "mlp.fc.weight", {H, C}, true, &W.fc_w, &G.fc_w);
      add(p + "mlp.fc.bias", {H}, false, &W.fc_b, &G.fc_b);
      add(p + "mlp.proj.weight", {C, H}, true, &W.proj_w, &G.proj_w);
      add(p + "mlp.proj.bias", {C}, false, &W.proj_b, &G.proj_b);
    } else {
      // HF Llama names; q/k/v and gate/up are laid out back to back so that each group
      // is one fused (rows, C) matrix for a single GEMM.
      std::string p = "layers." + std::to_string(l) + ".";
      add(p + "input_layernorm.weight", {C}, false, &W.ln1_w, &G.ln1_w);
      add(p + "self_attn.q_proj.weight", {QD, C}, true, &W.qkv_w, &G.qkv_w);
      add(p + "self_attn.k_proj.weight", {KD, C}, true, &unused_w, &unused_g);
      add(p + "self_attn.v_proj.weight", {KD, C}, true, &unused_w, &unused_g);
      add(p + "self_attn.o_proj.weight", {C, QD}, true, &W.o_w, &G.o_w);
      add(p + "post_attention_layernorm.weight", {C}, false, &W.ln2_w, &G.ln2_w);
      add(p + "mlp.gate_proj.weight", {H, C}, true, &W.fc_w, &G.fc_w);
      add(p + "mlp.up_proj.weight", {H, C}, true, &unused_w, &unused_g);
      add(p + "mlp.down_proj.weight", {C, H}, true, &W.proj_w, &G.proj_w);
    }
  }
  group_spec.push_back(specs.size());
  if (stage_.head) {
    add(gpt2 ? "ln_f.weight" : "norm.weight", {C}, false, &w_->lnf_w, &g_->lnf_w);
    if (gpt2) add("ln_f.bias", {C}, false, &w_->lnf_b, &g_->lnf_b);
    if (!cfg_.tied_embeddings) {
      add("lm_head.weight", {V, C}, true, &w_->head, &g_->head);
    } else if (!stage_.embedding) {
      // A last stage without the embedding keeps its own copy of the tied matrix; the
      // runtime keeps the two copies equal (same init, summed gradients).
      add(gpt2 ? "wte.weight" : "embed_tokens.weight", {V, C}, true, &w_->head, &g_->head);
    }
  }

  int64_t total = 0;
  for (auto& s : specs) total += Shape(s.shape).numel();
  param_buf_ = Tensor::zeros({total});
  grad_buf_ = Tensor::zeros({total});
  int64_t off = 0;
  std::vector<int64_t> spec_off{0};  // where spec k starts
  for (auto& s : specs) spec_off.push_back(spec_off.back() + Shape(s.shape).numel());
  for (size_t g : group_spec) layer_off_.push_back(spec_off[g]);
  for (auto& s : specs) {
    int64_t n = Shape(s.shape).numel();
    Tensor pv = param_buf_.slice(0, off, off + n).view(Shape(s.shape));
    Tensor gv = grad_buf_.slice(0, off, off + n).view(Shape(s.shape));
    *s.slot_w = pv.data<float>();
    *s.slot_g = gv.data<float>();
    params_.push_back({s.name, pv, gv, s.decay});
    off += n;
  }
  if (stage_.head && cfg_.tied_embeddings && stage_.embedding) {
    w_->head = w_->wte;
    g_->head = g_->wte;
  }
}

Transformer::~Transformer() = default;
Transformer::Transformer(Transformer&&) noexcept = default;
Transformer& Transformer::operator=(Transformer&&) noexcept = default;

const Param* Transformer::find_param(const std::string& name) const {
  for (auto& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

void Transformer::zero_grad() { std::memset(grad_buf_.raw(), 0, grad_buf_.nbytes()); }

void Transformer::init_weights(uint64_t seed) {
  const float resid_std = 0.02f / std::sqrt(2.0f * float(cfg_.n_layer));
  for (auto& p : params_) {
    float* x = p.value.data<float>();
    int64_t n = p.value.numel();
    const std::string& nm = p.name;
    auto ends_with = [&](const char* suf) {
      size_t k = std::strlen(suf);
      return nm.size() >= k && nm.compare(nm.size() - k, k, suf) == 0;
    };
    if (p.value.rank() == 1) {
      // Norm gains start at 1, biases at 0.
      bool gain = nm.find("ln_") != std::string::npos || nm.find("layernorm") != std::string::npos ||
                  nm == "norm.weight";
      float v = (gain && ends_with(".weight")) ? 1.0f : 0.0f;
      for (int64_t i = 0; i < n; i++) x[i] = v;
      continue;
    }
    bool resid = ends_with("attn.proj.weight") || ends_with("mlp.proj.weight") || ends_with("o_proj.weight") ||
                 ends_with("down_proj.weight");
    // Keyed by the name, so stages and the whole model agree (a tied copy too).
    RngStream rng(seed, {fnv1a64(nm)});
    rng.fill_normal(x, n, 0.0f, resid ? resid_std : 0.02f);
  }
}

// ---------------------------------------------------------------------------------------
// activations

struct Transformer::LayerActs {
  float *ln1, *ln1_mean, *ln1_rstd;  // (N, C), (N), (N)
  float* qkv;                        // (N, QKV)
  float *q, *k, *v;                  // (N, NH*HS), (N, NKV*HS) x2; q and k after RoPE
  float *att, *lse;                  // (N, NH*HS), (B, NH, T)
  float* x_mid;                      // (N, C) residual stream after attention
  float *ln2, *ln2_mean, *ln2_rstd;  // (N, C), (N), (N)
  float* fc;                         // (N, FC) before the activation
  float* act;                        // (N, H) after it
};

struct Transformer::Activations {
  int B = 0, T = 0;
  Tensor buf;
  std::vector<float*> xs;            // residual stream: xs[0] stage input, xs[i+1] after layer i
  std::vector<float*> xs_owned;      // xs as allocated (a forward may point xs[0] / xs[L] elsewhere)
  std::vector<LayerActs> layers;     // one per layer, or one shared when recomputing
  float *lnf, *lnf_mean, *lnf_rstd;  // head
  float *logits, *dlogits, *losses;  // (N, V), (N, V), (N)
  std::vector<int32_t> tokens, targets;
  bool have_targets = false;
  // backward scratch
  float *dx_a, *dx_b, *dln, *dqkv, *dq, *dk, *dv, *datt, *dx_mid, *dfc, *dact, *dinput;
  bool recompute = false;
};

void Transformer::ensure_activations(int slot, int B, int T) {
  TROUPE_CHECK(slot >= 0, "activation slot %d", slot);
  if (size_t(slot) >= slots_.size()) slots_.resize(size_t(slot) + 1);
  auto& cur = slots_[size_t(slot)];
  if (cur && cur->B == B && cur->T == T && cur->recompute == recompute_) {
    acts_ = cur.get();
    return;
  }
  const int64_t N = int64_t(B) * T, C = cfg_.d_model, V = cfg_.vocab_size, H = cfg_.d_ff;
  const int64_t QD = int64_t(cfg_.n_head) * cfg_.head_dim(), KD = int64_t(cfg_.n_kv_head) * cfg_.head_dim();
  const int64_t QKV = QD + 2 * KD;
  const int64_t FC = cfg_.arch == Arch::GPT2 ? H : 2 * H;
  const int L = n_stage_layers();
  const int n_layer_sets = recompute_ ? (L > 0 ? 1 : 0) : L;

  auto a = std::make_unique<Activations>();
  a->B = B;
  a->T = T;
  a->recompute = recompute_;
  a->xs.resize(size_t(L + 1));
  a->layers.resize(size_t(n_layer_sets));
  // Lays every buffer out back to back in one allocation: a first pass with a null base
  // counts the floats, the second assigns the pointers.
  auto layout = [&](float* base) {
    int64_t used = 0;
    auto take = [&](int64_t n) {
      float* r = base ? base + used : nullptr;
      used += n;
      return r;
    };
    for (auto& x : a->xs) x = take(N * C);
    a->xs_owned = a->xs;
    for (auto& la : a->layers) {
      la.ln1 = take(N * C);
      la.ln1_mean = take(N);
      la.ln1_rstd = take(N);
      la.qkv = take(N * QKV);
      la.q = take(N * QD);
      la.k = take(N * KD);
      la.v = take(N * KD);
      la.att = take(N * QD);
      la.lse = take(int64_t(B) * cfg_.n_head * T);
      la.x_mid = take(N * C);
      la.ln2 = take(N * C);
      la.ln2_mean = take(N);
      la.ln2_rstd = take(N);
      la.fc = take(N * FC);
      la.act = take(N * H);
    }
    if (stage_.head) {
      a->lnf = take(N * C);
      a->lnf_mean = take(N);
      a->lnf_rstd = take(N);
      a->logits = take(N * V);
      a->dlogits = take(N * V);
      a->losses = take(N);
    }
    a->dx_a = take(N * C);
    a->dx_b = take(N * C);
    a->dln = take(N * C);
    a->dqkv = take(N * QKV);
    a->dq = take(N * QD);
    a->dk = take(N * KD);
    a->dv = take(N * KD);
    a->datt = take(N * QD);
    a->dx_mid = take(N * C);
    a->dfc = take(N * FC);
    a->dact = take(N * H);
    a->dinput = take(N * C);
    return used;
  };
  a->buf = Tensor::empty({layout(nullptr)});
  layout(a->buf.data<float>());
  cur = std::move(a);
  acts_ = cur.get();
}

const Transformer::Activations* Transformer::slot_acts(int slot) const {
  return slot >= 0 && size_t(slot) < slots_.size() ? slots_[size_t(slot)].get() : nullptr;
}

Transformer::LayerActs& Transformer::layer_acts(int i) {
  return acts_->recompute ? acts_->layers[0] : acts_->layers[size_t(i)];
}

int64_t Transformer::activation_bytes() const {
  int64_t n = 0;
  for (auto& a : slots_)
    if (a) n += int64_t(a->buf.nbytes());
  return n;
}

// ---------------------------------------------------------------------------------------
// forward

void Transformer::layer_forward(int i, const float* x_in, float* x_out, LayerActs& a, int B, int T) {
  const auto& W = w_->layers[size_t(i)];
  const int N = B * T, C = cfg_.d_model, H = cfg_.d_ff, HS = cfg_.head_dim();
  const int NH = cfg_.n_head, NKV = cfg_.n_kv_head;
  const int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD;
  const bool gpt2 = cfg_.arch == Arch::GPT2;

  if (gpt2)
    ops::layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x_in, W.ln1_w, W.ln1_b, N, C, cfg_.norm_eps);
  else
    ops::rmsnorm_forward(a.ln1, a.ln1_rstd, x_in, W.ln1_w, N, C, cfg_.norm_eps);
  ops::linear_forward(a.qkv, a.ln1, W.qkv_w, W.qkv_b, N, C, QKV);
  // Split each row [q | k | v] into head-major buffers for the attention kernel.
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* row = a.qkv + int64_t(n) * QKV;
    std::memcpy(a.q + int64_t(n) * QD, row, size_t(QD) * 4);
    std::memcpy(a.k + int64_t(n) * KD, row + QD, size_t(KD) * 4);
    std::memcpy(a.v + int64_t(n) * KD, row + QD + KD, size_t(KD) * 4);
  }
  if (!gpt2) {
    ops::rope_forward(a.q, B, T, NH, HS, cfg_.rope_theta);
    ops::rope_forward(a.k, B, T, NKV, HS, cfg_.rope_theta);
  }
  ops::attention_forward(a.att, a.lse, a.q, a.k, a.v, B, T, NH, NKV, HS);
  ops::linear_forward(a.x_mid, a.att, W.o_w, W.o_b, N, QD, C);
  ops::residual_forward(a.x_mid, x_in, a.x_mid, int64_t(N) * C);

  if (gpt2)
    ops::layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.x_mid, W.ln2_w, W.ln2_b, N, C, cfg_.norm_eps);
  else
    ops::rmsnorm_forward(a.ln2, a.ln2_rstd, a.x_mid, W.ln2_w, N, C, cfg_.norm_eps);
  if (gpt2) {
    ops::linear_forward(a.fc, a.ln2, W.fc_w, W.fc_b, N, C, H);
    ops::gelu_forward(a.act, a.fc, int64_t(N) * H);
  } else {
    ops::linear_forward(a.fc, a.ln2, W.fc_w, nullptr, N, C, 2 * H);
    ops::swiglu_forward(a.act, a.fc, N, H);
  }
  ops::linear_forward(x_out, a.act, W.proj_w, W.proj_b, N, H, C);
  ops::residual_forward(x_out, a.x_mid, x_out, int64_t(N) * C);
}

float Transformer::forward(const int32_t* tokens, const float* input, const int32_t* targets, int B, int T,
                           int slot) {
  return forward(tokens, input, targets, B, T, slot, false, nullptr);
}

float Transformer::forward(const int32_t* tokens, const float* input, const int32_t* targets, int B, int T,
                           int slot, bool borrow_input, float* output_into) {
  TROUPE_CHECK(B > 0 && T > 0, "forward with B=%d T=%d", B, T);
  TROUPE_CHECK(T <= cfg_.max_seq_len, "sequence length %d exceeds max_seq_len %d", T, cfg_.max_seq_len);
  ensure_activations(slot, B, T);
  Activations& A = *acts_;
  const int N = B * T, C = cfg_.d_model, V = cfg_.vocab_size;
  const int L = n_stage_layers();
  A.xs = A.xs_owned;
  // Borrowed input and caller-owned output: only where they are distinct buffers of a
  // stage with layers (a zero-layer chunk copies its input to its output).
  const bool borrow = borrow_input && !stage_.embedding && L > 0;
  if (borrow) A.xs[0] = const_cast<float*>(input);  // read only, until this slot's backward
  if (output_into && !stage_.head && L > 0) A.xs[size_t(L)] = output_into;

  if (stage_.embedding) {
    TROUPE_CHECK(tokens != nullptr, "first stage needs tokens");
    A.tokens.assign(tokens, tokens + N);
    for (int n = 0; n < N; n++)
      TROUPE_CHECK(tokens[n] >= 0 && tokens[n] < V, "token %d at position %d outside vocabulary of %d", tokens[n],
                   n, V);
    ops::embedding_forward(A.xs[0], A.tokens.data(), w_->wte, w_->wpe, B, T, C);
  } else {
    TROUPE_CHECK(input != nullptr, "stage starting at layer %d needs input activations", stage_.first_layer);
    if (!borrow) std::memcpy(A.xs[0], input, size_t(N) * C * 4);
  }
  for (int i = 0; i < n_stage_layers(); i++) layer_forward(i, A.xs[size_t(i)], A.xs[size_t(i) + 1], layer_acts(i), B, T);

  A.have_targets = false;
  if (!stage_.head) {
    if (output_into && L == 0) std::memcpy(output_into, A.xs[0], size_t(N) * C * 4);
    return NAN;
  }
  const float* x = A.xs[size_t(n_stage_layers())];
  if (cfg_.arch == Arch::GPT2)
    ops::layernorm_forward(A.lnf, A.lnf_mean, A.lnf_rstd, x, w_->lnf_w, w_->lnf_b, N, C, cfg_.norm_eps);
  else
    ops::rmsnorm_forward(A.lnf, A.lnf_rstd, x, w_->lnf_w, N, C, cfg_.norm_eps);
  ops::linear_forward(A.logits, A.lnf, w_->head, nullptr, N, C, V);
  if (!targets) return NAN;
  A.targets.assign(targets, targets + N);
  int valid = 0;
  for (int n = 0; n < N; n++) {
    TROUPE_CHECK(targets[n] < V, "target %d at position %d outside vocabulary of %d", targets[n], n, V);
    valid += targets[n] >= 0;
  }
  // d(loss)/d(logits) for a unit weight per token; backward scales it.
  double sum = ops::softmax_xent_forward_backward(A.losses, training_ ? A.dlogits : nullptr, A.logits,
                                                  A.targets.data(), N, V, 1.0f);
  A.have_targets = true;
  return valid ? float(sum / valid) : 0.0f;
}

const float* Transformer::output(int slot) const {
  auto* a = slot_acts(slot);
  return a ? a->xs.back() : nullptr;
}
const float* Transformer::logits(int slot) const {
  auto* a = slot_acts(slot);
  return a && stage_.head ? a->logits : nullptr;
}
const float* Transformer::losses(int slot) const {
  auto* a = slot_acts(slot);
  return a && stage_.head ? a->losses : nullptr;
}
const float* Transformer::input_grad(int slot) const {
  auto* a = slot_acts(slot);
  return a ? a->dinput : nullptr;
}

// ---------------------------------------------------------------------------------------
// backward

void Transformer::layer_backward(int i, const float* x_in, const float* dx_out, float* dx_in, LayerActs& a, int B,
                                 int T) {
  const auto& W = w_->layers[size_t(i)];
  const auto& G = g_->layers[size_t(i)];
  Activations& A = *acts_;
  const int N = B * T, C = cfg_.d_model, H = cfg_.d_ff, HS = cfg_.head_dim();
  const int NH = cfg_.n_head, NKV = cfg_.n_kv_head;
  const int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD;
  const bool gpt2 = cfg_.arch == Arch::GPT2;
  const int FC = gpt2 ? H : 2 * H;
  auto zero = [](float* p, int64_t n) { std::memset(p, 0, size_t(n) * 4); };

  // forward: x_out = x_mid + proj(act(fc(norm2(x_mid))))
  zero(A.dact, int64_t(N) * H);
  ops::linear_backward(A.dact, G.proj_w, G.proj_b, dx_out, a.act, W.proj_w, N, H, C);
  zero(A.dfc, int64_t(N) * FC);
  if (gpt2)
    ops::gelu_backward(A.dfc, a.fc, A.dact, int64_t(N) * H);
  else
    ops::swiglu_backward(A.dfc, a.fc, A.dact, N, H);
  zero(A.dln, int64_t(N) * C);
  ops::linear_backward(A.dln, G.fc_w, G.fc_b, A.dfc, a.ln2, W.fc_w, N, C, FC);
  std::memcpy(A.dx_mid, dx_out, size_t(N) * C * 4);  // the residual path
  if (gpt2)
    ops::layernorm_backward(A.dx_mid, G.ln2_w, G.ln2_b, A.dln, a.x_mid, W.ln2_w, a.ln2_mean, a.ln2_rstd, N, C);
  else
    ops::rmsnorm_backward(A.dx_mid, G.ln2_w, A.dln, a.x_mid, W.ln2_w, a.ln2_rstd, N, C);

  // forward: x_mid = x_in + o_proj(attention(rope(q), rope(k), v)), [q|k|v] = qkv(norm1(x_in))
  zero(A.datt, int64_t(N) * QD);
  ops::linear_backward(A.datt, G.o_w, G.o_b, A.dx_mid, a.att, W.o_w, N, QD, C);
  zero(A.dq, int64_t(N) * QD);
  zero(A.dk, int64_t(N) * KD);
  zero(A.dv, int64_t(N) * KD);
  ops::attention_backward(A.dq, A.dk, A.dv, A.datt, a.q, a.k, a.v, a.att, a.lse, B, T, NH, NKV, HS);
  if (!gpt2) {
    ops::rope_backward(A.dq, B, T, NH, HS, cfg_.rope_theta);
    ops::rope_backward(A.dk, B, T, NKV, HS, cfg_.rope_theta);
  }
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float* row = A.dqkv + int64_t(n) * QKV;
    std::memcpy(row, A.dq + int64_t(n) * QD, size_t(QD) * 4);
    std::memcpy(row + QD, A.dk + int64_t(n) * KD, size_t(KD) * 4);
    std::memcpy(row + QD + KD, A.dv + int64_t(n) * KD, size_t(KD) * 4);
  }
  zero(A.dln, int64_t(N) * C);
  ops::linear_backward(A.dln, G.qkv_w, G.qkv_b, A.dqkv, a.ln1, W.qkv_w, N, C, QKV);
  std::memcpy(dx_in, A.dx_mid, size_t(N) * C * 4);  // the residual path
  if (gpt2)
    ops::layernorm_backward(dx_in, G.ln1_w, G.ln1_b, A.dln, x_in, W.ln1_w, a.ln1_mean, a.ln1_rstd, N, C);
  else
    ops::rmsnorm_backward(dx_in, G.ln1_w, A.dln, x_in, W.ln1_w, a.ln1_rstd, N, C);
}

void Transformer::backward(const float* d_output, float dloss_scale, int slot) {
  backward(d_output, dloss_scale, slot, nullptr);
}

void Transformer::backward(const float* d_output, float dloss_scale, int slot, float* input_grad_into) {
  TROUPE_CHECK(slot >= 0 && size_t(slot) < slots_.size() && slots_[size_t(slot)],
               "backward of activation slot %d before its forward", slot);
  acts_ = slots_[size_t(slot)].get();
  Activations& A = *acts_;
  const int B = A.B, T = A.T, N = B * T, C = cfg_.d_model, V = cfg_.vocab_size;
  const int L = n_stage_layers();
  float* dx = A.dx_a;  // gradient w.r.t. the residual stream at the current depth
  float* dx_next = A.dx_b;

  if (stage_.head) {
    TROUPE_CHECK(A.have_targets && training_, "backward of the last stage needs a training forward with targets");
    // forward: logits = head(normf(x)); losses = xent(softmax(logits), targets)
    ops::scale_inplace(A.dlogits, int64_t(N) * V, dloss_scale);
    std::memset(A.dln, 0, size_t(N) * C * 4);
    ops::linear_backward(A.dln, g_->head, nullptr, A.dlogits, A.lnf, w_->head, N, C, V);
    std::memset(dx, 0, size_t(N) * C * 4);
    const float* x = A.xs[size_t(L)];
    if (cfg_.arch == Arch::GPT2)
      ops::layernorm_backward(dx, g_->lnf_w, g_->lnf_b, A.dln, x, w_->lnf_w, A.lnf_mean, A.lnf_rstd, N, C);
    else
      ops::rmsnorm_backward(dx, g_->lnf_w, A.dln, x, w_->lnf_w, A.lnf_rstd, N, C);
  } else {
    TROUPE_CHECK(d_output != nullptr, "stage ending at layer %d needs the output gradient", stage_.last_layer);
    std::memcpy(dx, d_output, size_t(N) * C * 4);
  }
  const int64_t total = num_params();
  if (grad_ready_ && total > layer_off_[size_t(L)]) grad_ready_(layer_off_[size_t(L)], total - layer_off_[size_t(L)]);

  for (int i = L - 1; i >= 0; i--) {
    LayerActs& a = layer_acts(i);
    if (recompute_) layer_forward(i, A.xs[size_t(i)], A.dinput /*scratch for the unused output*/, a, B, T);
    // The first layer of a non-first stage writes the input gradient where asked.
    float* dst = i == 0 && input_grad_into && !stage_.embedding ? input_grad_into : dx_next;
    layer_backward(i, A.xs[size_t(i)], dx, dst, a, B, T);
    if (dst == dx_next) std::swap(dx, dx_next);
    else dx = dst;
    if (grad_ready_) grad_ready_(layer_off_[size_t(i)], layer_off_[size_t(i) + 1] - layer_off_[size_t(i)]);
  }

  if (stage_.embedding) {
    // forward: xs[0] = wte[tokens] + wpe[t]
    ops::embedding_backward(g_->wte, g_->wpe, dx, A.tokens.data(), B, T, C);
    if (grad_ready_ && layer_off_[0] > 0) grad_ready_(0, layer_off_[0]);
  } else if (input_grad_into) {
    if (dx != input_grad_into) std::memcpy(input_grad_into, dx, size_t(N) * C * 4);  // zero-layer chunk
  } else {
    std::memcpy(A.dinput, dx, size_t(N) * C * 4);
  }
}

}  // namespace troupe::model
