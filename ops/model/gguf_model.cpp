#include "ops/model/gguf_model.h"

#include <cstring>
#include <vector>

namespace troupe::model {

void unpermute_qk_rows(float* w, int heads, int head_dim, int C) {
  // llama.cpp stores HF row (h, j, i) — j the rotate-half (0: first half, 1: second) and
  // i < head_dim / 2 — at row (h, i, j).
  const int half = head_dim / 2;
  std::vector<float> tmp(size_t(head_dim) * size_t(C));
  for (int h = 0; h < heads; h++) {
    float* block = w + int64_t(h) * head_dim * C;
    for (int j = 0; j < 2; j++)
      for (int i = 0; i < half; i++)
        std::memcpy(tmp.data() + (int64_t(j) * half + i) * C, block + (int64_t(i) * 2 + j) * C, sizeof(float) * size_t(C));
    std::memcpy(block, tmp.data(), sizeof(float) * tmp.size());
  }
}

Expected<LoadedModel> load_gguf_llama(const GgufFile& f, int max_seq_len) {
  auto where = [&](const std::string& what) { return f.name() + ": " + what; };
  auto arch = f.get_string("general.architecture");
  if (!arch) return make_error(where(arch.error().message));
  if (*arch != "llama") return make_error(where("general.architecture is '" + *arch + "', expected 'llama'"));
  auto u32 = [&](const char* key) -> Expected<int> {
    auto v = f.get_u32(key);
    if (!v) return make_error(where(v.error().message));
    return int(*v);
  };
  auto n_layer = u32("llama.block_count"), d_model = u32("llama.embedding_length"),
       d_ff = u32("llama.feed_forward_length"), n_head = u32("llama.attention.head_count"),
       ctx = u32("llama.context_length");
  for (auto* v : {&n_layer, &d_model, &d_ff, &n_head, &ctx})
    if (!*v) return v->error();
  int n_kv = *n_head;
  if (f.has("llama.attention.head_count_kv")) {
    auto kv = u32("llama.attention.head_count_kv");
    if (!kv) return kv.error();
    n_kv = *kv;
  }
  const GgufTensorInfo* emb = f.find_tensor("token_embd.weight");
  if (!emb) return make_error(where("no tensor 'token_embd.weight'"));
  if (emb->ne.size() != 2 || emb->ne[0] != *d_model)
    return make_error(where(strformat("token_embd.weight has shape %s, expected (vocab, %d)", emb->shape().str().c_str(),
                                      *d_model)));
  int vocab = int(emb->ne[1]);
  ModelConfig cfg = ModelConfig::llama(*n_layer, *n_head, n_kv, *d_model, *d_ff, vocab, max_seq_len > 0 ? max_seq_len : *ctx);
  if (f.has("llama.rope.freq_base")) {
    auto theta = f.get_f32("llama.rope.freq_base");
    if (!theta) return make_error(where(theta.error().message));
    cfg.rope_theta = *theta;
  }
  if (f.has("llama.attention.layer_norm_rms_epsilon")) {
    auto eps = f.get_f32("llama.attention.layer_norm_rms_epsilon");
    if (!eps) return make_error(where(eps.error().message));
    cfg.norm_eps = *eps;
  }
  cfg.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  if (auto ok = cfg.validate(); !ok) return make_error(where(ok.error().message));

  LoadedModel out;
  out.config = cfg;
  out.model = std::make_unique<Transformer>(cfg);
  auto load = [&](const std::string& gguf_name, const std::string& hf_name, int unpermute_heads) -> Expected<void> {
    const GgufTensorInfo* t = f.find_tensor(gguf_name);
    if (!t) return make_error(where("no tensor '" + gguf_name + "'"));
    const Param* p = out.model->find_param(hf_name);
    if (!p) return make_error("internal: the model has no parameter '" + hf_name + "'");
    if (!(t->shape() == p->value.shape()))
      return make_error(where(strformat("tensor '%s' has shape %s, expected %s", gguf_name.c_str(),
                                        t->shape().str().c_str(), p->value.shape().str().c_str())));
    float* dst = p->value.data<float>();
    // Dequantize row by row into the parameter, without an intermediate tensor.
    const int64_t row = t->ne[0], rows = t->numel / row;
    const uint64_t row_bytes = t->nbytes / uint64_t(rows);
    const uint8_t* src = f.tensor_data(*t);
    for (int64_t r = 0; r < rows; r++)
      if (!dequantize_row(t->type, src + uint64_t(r) * row_bytes, dst + r * row, row))
        return make_error(where(strformat("tensor '%s': ggml type %u is not supported (F32, F16, BF16, Q8_0, Q4_1)",
                                          gguf_name.c_str(), unsigned(t->type))));
    if (unpermute_heads) unpermute_qk_rows(dst, unpermute_heads, cfg.head_dim(), cfg.d_model);
    return {};
  };
  std::vector<std::tuple<std::string, std::string, int>> map = {{"token_embd.weight", "embed_tokens.weight", 0},
                                                                {"output_norm.weight", "norm.weight", 0}};
  if (!cfg.tied_embeddings) map.emplace_back("output.weight", "lm_head.weight", 0);
  for (int l = 0; l < cfg.n_layer; l++) {
    std::string g = "blk." + std::to_string(l) + ".", h = "layers." + std::to_string(l) + ".";
    map.emplace_back(g + "attn_norm.weight", h + "input_layernorm.weight", 0);
    map.emplace_back(g + "attn_q.weight", h + "self_attn.q_proj.weight", cfg.n_head);
    map.emplace_back(g + "attn_k.weight", h + "self_attn.k_proj.weight", cfg.n_kv_head);
    map.emplace_back(g + "attn_v.weight", h + "self_attn.v_proj.weight", 0);
    map.emplace_back(g + "attn_output.weight", h + "self_attn.o_proj.weight", 0);
    map.emplace_back(g + "ffn_norm.weight", h + "post_attention_layernorm.weight", 0);
    map.emplace_back(g + "ffn_gate.weight", h + "mlp.gate_proj.weight", 0);
    map.emplace_back(g + "ffn_up.weight", h + "mlp.up_proj.weight", 0);
    map.emplace_back(g + "ffn_down.weight", h + "mlp.down_proj.weight", 0);
  }
  for (auto& [g, h, heads] : map)
    if (auto ok = load(g, h, heads); !ok) return ok.error();
  return out;
}

Expected<LoadedModel> load_gguf_llama(const std::string& path, int max_seq_len) {
  auto f = GgufFile::open(path);
  if (!f) return f.error();
  return load_gguf_llama(*f, max_seq_len);
}

}  // namespace troupe::model
