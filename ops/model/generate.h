#pragma once
// Plain autoregressive generation: every new token runs a full forward over the context
// (no KV cache). Slow on long outputs, but simple enough to trust: it is the reference a
// cached engine is checked against, and what a console's `generate` runs on a copy of
// the weights of a job in training.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "ops/model/transformer.h"

namespace troupe::model {

struct Sampling {
  float temperature = 0;  // 0: greedy (argmax; the lowest id wins a tie)
  int top_k = 0;          // keep the k most likely tokens (0: all)
  float top_p = 1;        // then the smallest set whose probability reaches p
  uint64_t seed = 0;      // draw i of RngStream(seed, {i}) picks token i: reproducible
  float repetition_penalty = 1;  // > 1 discourages tokens already in the context (CTRL, as HF)
};

// HF's repetition penalty, in place: each distinct token of `context` has its logit
// divided by `penalty` if positive, multiplied if negative.
void apply_repetition_penalty(float* logits, int V, const std::vector<int32_t>& context, float penalty);

// The next token from logits (V values), with `draw` indexing the random stream.
int32_t sample_token(const float* logits, int V, const Sampling& s, uint64_t draw);
// The distribution sample_token draws from (temperature, then top-k, then top-p), as V
// probabilities; temperature 0: all mass on the argmax.
void sampling_distribution(const float* logits, int V, const Sampling& s, float* p);

// Up to max_new tokens after `prompt` (the context is cut to the model's last
// max_seq_len tokens). on_token sees each new token and may stop generation by returning
// false. `m` must hold the whole model (StageRange::full()).
Expected<std::vector<int32_t>> generate_plain(Transformer& m, const std::vector<int32_t>& prompt, int max_new,
                                              const Sampling& s,
                                              const std::function<bool(int32_t)>& on_token = nullptr);

// Copies parameters by name from a checkpoint's or snapshot's tensors into `m`; the error
// names the first missing or mis-shaped tensor.
Expected<void> load_params(Transformer& m, const std::map<std::string, Tensor>& tensors);

}  // namespace troupe::model
