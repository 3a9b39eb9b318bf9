#pragma once
// Loads a Llama-architecture GGUF (SmolLM2, TinyLlama, ...) into a Transformer: the
// hyperparameters from the llama.* metadata, every weight dequantized to f32 (F32, F16,
// BF16, Q8_0, Q4_1) under its HF name. llama.cpp's converter permutes the rows of q_proj
// and k_proj for its interleaved RoPE; they are permuted back here, because Troupe's RoPE
// is HF's rotate-half form. A model without output.weight has tied embeddings.

#include <memory>
#include <string>

#include "core/gguf.h"
#include "ops/model/transformer.h"

namespace troupe::model {

struct LoadedModel {
  ModelConfig config;
  std::unique_ptr<Transformer> model;
};

// max_seq_len 0: the file's llama.context_length. Errors name the file and the key or
// tensor at fault.
Expected<LoadedModel> load_gguf_llama(const GgufFile& f, int max_seq_len = 0);
Expected<LoadedModel> load_gguf_llama(const std::string& path, int max_seq_len = 0);

// The inverse of llama.cpp's q/k permutation for a (heads * head_dim, C) weight, in place.
void unpermute_qk_rows(float* w, int heads, int head_dim, int C);

}  // namespace troupe::model
