#pragma once
// One decoder-only transformer whose config covers GPT-2 (learned positions,
// LayerNorm, GELU, biases, tied embeddings) and Llama (RoPE, RMSNorm, SwiGLU,
// grouped-query attention, untied head), with explicit forward and backward.
//
// A Transformer may hold any contiguous range of layers (a pipeline stage): the first
// stage also owns the embedding, the last the final norm and the head. The full model
// is the stage that has all of them, so there is one code path for both.
//
// Shapes: B batch, T time, C d_model, N = B*T, NH/NKV query/key-value heads, HS head
// size, H MLP hidden size (4C for GPT-2), V vocabulary, L layers.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace troupe::model {

enum class Arch { GPT2, Llama };

struct ModelConfig {
  Arch arch = Arch::GPT2;
  int vocab_size = 50257;
  int max_seq_len = 1024;
  int n_layer = 12;
  int n_head = 12;
  int n_kv_head = 12;
  int d_model = 768;
  int d_ff = 3072;  // MLP hidden size H
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool tied_embeddings = true;

  int head_dim() const { return d_model / n_head; }
  int qkv_dim() const { return (n_head + 2 * n_kv_head) * head_dim(); }
  bool has_bias() const { return arch == Arch::GPT2; }
  Expected<void> validate() const;  // names the offending field
  std::string str() const;

  static ModelConfig gpt2(int n_layer, int n_head, int d_model, int vocab, int max_seq);
  static ModelConfig llama(int n_layer, int n_head, int n_kv_head, int d_model, int d_ff, int vocab, int max_seq);
};

// Which part of the model a Transformer object holds.
struct StageRange {
  int first_layer = 0;
  int last_layer = -1;  // exclusive; -1 = n_layer
  bool embedding = true;
  bool head = true;
  static StageRange full() { return {}; }
};

struct Param {
  std::string name;  // e.g. "h.3.attn.qkv.weight" (GPT-2) or "layers.3.self_attn.q_proj.weight" (Llama)
  Tensor value;      // a view into the stage's one parameter buffer
  Tensor grad;       // the same view into the gradient buffer
  bool decay;        // AdamW weight decay applies (matrices and embeddings, not biases and norms)
};

class Transformer {
 public:
  explicit Transformer(const ModelConfig& cfg, StageRange stage = StageRange::full());
  ~Transformer();
  Transformer(Transformer&&) noexcept;
  Transformer& operator=(Transformer&&) noexcept;

  const ModelConfig& config() const { return cfg_; }
  const StageRange& stage() const { return stage_; }

  // Parameters live in one contiguous f32 buffer (and gradients in a twin), so that the
  // optimizer and gradient all-reduce see one flat array.
  std::vector<Param>& params() { return params_; }
  const Param* find_param(const std::string& name) const;
  float* param_data() { return param_buf_.data<float>(); }
  float* grad_data() { return grad_buf_.data<float>(); }
  int64_t num_params() const { return param_buf_.numel(); }
  void zero_grad();

  // GPT-2-style init, N(0, 0.02) with residual projections scaled by 1/sqrt(2L). Each
  // parameter draws from its own stream keyed by (seed, name), so a model split into
  // stages initializes exactly as the whole model does.
  void init_weights(uint64_t seed);

  // Activation recomputation: keep only each layer's input and recompute the rest in
  // backward (less memory, about one more forward of compute).
  void set_recompute(bool on) { recompute_ = on; }

  // Training mode (default) makes the last stage keep d(loss)/d(logits) from the
  // fused softmax + cross-entropy; evaluation skips that work.
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  // Activation slots: a pipeline stage holds several microbatches between their
  // forward and backward (1F1B: up to p - s). Each slot keeps one microbatch's
  // activations; forward(..., slot) fills it and backward(..., slot) consumes it. Slots
  // are created on first use and keep their buffers for reuse.
  //
  // Forward of this stage over a (B, T) microbatch at positions [0, T).
  //  - first stage: tokens (B*T); otherwise input (B*T, C) activations.
  //  - last stage: targets (B*T) (may be null: logits only); returns the mean loss over
  //    non-ignored targets (NaN when targets is null). Other stages return NaN and
  //    leave their output in output().
  float forward(const int32_t* tokens, const float* input, const int32_t* targets, int B, int T, int slot = 0);
  // Zero-copy form for pipeline stages: with borrow_input the slot reads `input` in
  // place (it must stay valid and unchanged until the slot's backward) instead of copying
  // it; with output_into (non-last stage) the last layer writes its output there, so it
  // can be handed to the next stage as it is. output(slot) then points there too (a
  // stage without layers copies its input there).
  float forward(const int32_t* tokens, const float* input, const int32_t* targets, int B, int T, int slot,
                bool borrow_input, float* output_into);
  const float* output(int slot = 0) const;  // (N, C) activations of a non-last stage
  const float* logits(int slot = 0) const;  // (N, V), last stage after forward
  // Per-token losses (N) of the slot's last forward with targets.
  const float* losses(int slot = 0) const;

  // Backward of the last forward, accumulating parameter gradients.
  //  - last stage: dloss_scale is d(total loss)/d(per-token loss) (1/(tokens in the
  //    whole batch) for a mean); d_output is ignored.
  //  - other stages: d_output (N, C) is the gradient arriving from the next stage.
  // Afterwards input_grad() holds d(input) (N, C) for non-first stages.
  void backward(const float* d_output, float dloss_scale, int slot = 0);
  // Zero-copy form: the input gradient (non-first stage) is written to input_grad_into.
  void backward(const float* d_output, float dloss_scale, int slot, float* input_grad_into);
  const float* input_grad(int slot = 0) const;

  int64_t activation_bytes() const;  // bytes held by all slots

  // Gradient readiness, for data parallelism that reduces while backward still runs:
  // when set, the next backward calls f(offset, count) each time a group of gradients
  // (offsets into grad_data()) has its final value for that backward — the head, then
  // each layer from the last to the first, then the embedding; the groups tile the
  // buffer from its end to its start. The runtime sets it only for a step's last
  // backward, after which the accumulated gradients are complete.
  void set_grad_ready_hook(std::function<void(int64_t offset, int64_t count)> f) { grad_ready_ = std::move(f); }

  // FLOPs of forward + backward per token at sequence length T: 6 * (matmul params) +
  // 6 * L * T * C for causal attention (QK^T and AV, forward plus twice that backward).
  static double train_flops_per_token(const ModelConfig& cfg, int T);

 private:
  struct Weights;      // pointers into the parameter (or gradient) buffer
  struct LayerActs;    // what one layer keeps for backward
  struct Activations;  // all activation and scratch buffers at one (B, T)
  void layer_forward(int i, const float* x_in, float* x_out, LayerActs& a, int B, int T);
  void layer_backward(int i, const float* x_in, const float* dx_out, float* dx_in, LayerActs& a, int B, int T);
  LayerActs& layer_acts(int i);
  void ensure_activations(int slot, int B, int T);
  const Activations* slot_acts(int slot) const;
  int n_stage_layers() const { return stage_.last_layer - stage_.first_layer; }

  ModelConfig cfg_;
  StageRange stage_;
  bool recompute_ = false;
  bool training_ = true;
  Tensor param_buf_, grad_buf_;
  std::vector<Param> params_;
  std::unique_ptr<Weights> w_, g_;
  std::vector<std::unique_ptr<Activations>> slots_;
  Activations* acts_ = nullptr;  // the slot the current forward or backward works on
  // Where each gradient group starts in the flat buffer: layer i at layer_off_[i], the
  // head at layer_off_[L] (= the end of the last layer); the embedding ends at layer_off_[0].
  std::vector<int64_t> layer_off_;
  std::function<void(int64_t, int64_t)> grad_ready_;
};

// Learning-rate schedule: linear warmup to lr, then cosine decay to min_lr at
// total_steps (constant lr if total_steps <= warmup).
float lr_schedule(int step, float lr, float min_lr, int warmup, int total_steps);

}  // namespace troupe::model
