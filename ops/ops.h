#pragma once
// CPU kernels: forward and backward of each layer as plain functions over raw f32
// pointers, in the spirit of llm.c. Each has a slow, obvious *_ref twin in the same
// file; tests compare the fast one to it, and both to PyTorch fixtures.
//
// Letters used throughout:
//   B batch, T sequence length, C channels (d_model), OC output channels,
//   N = B*T rows, V vocabulary, NH query heads, NKV key/value heads (NH % NKV == 0),
//   HS head size, H hidden size of the MLP.
//
// Conventions:
//   - Row-major, contiguous. Linear weights are (OC, C) like torch.nn.Linear.
//   - Backward functions ACCUMULATE (+=) into every gradient they write (dinp, dweight,
//     ...); callers zero gradient buffers when a fresh gradient is wanted. This lets a
//     residual stream or a tied embedding sum contributions without extra buffers.
//   - Outputs of forward functions are overwritten (=).

#include <cstdint>

namespace troupe::ops {

// ---- embedding: out[b,t,:] = wte[tok[b,t],:] (+ wpe[pos0+t,:] if wpe) -----------------
// tokens (N) with N = B*T, wte (V, C), wpe (maxT, C) or null, out (N, C)
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T,
                       int C, int pos0 = 0);
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C,
                        int pos0 = 0);
void embedding_forward_ref(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T,
                           int C, int pos0 = 0);
void embedding_backward_ref(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T,
                            int C, int pos0 = 0);

// ---- linear: out = inp @ weight^T + bias ---------------------------------------------
// inp (N, C), weight (OC, C), bias (OC) or null, out (N, OC)
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC);
// dinp (N, C) may be null (first layer), dbias may be null
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC);
void linear_forward_ref(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                        int OC);
void linear_backward_ref(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                         const float* weight, int N, int C, int OC);
// bf16 weights (storage), f32 activations and accumulation.
// Decoding's matrix-vector form of linear_forward (no bias) for a few rows: each weight
// row is read once per 8 input rows; bits independent of the thread count.
void matvec_forward(float* out, const float* inp, const float* weight, int N, int C, int OC);
void linear_forward_bf16w(float* out, const float* inp, const uint16_t* weight, const float* bias, int N, int C,
                          int OC);

// ---- LayerNorm: out = (x - mean) * rstd * weight + bias -------------------------------
// inp (N, C), weight/bias (C), out (N, C), mean/rstd (N) saved for backward
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, float eps);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C);
void layernorm_forward_ref(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                           const float* bias, int N, int C, float eps);
void layernorm_backward_ref(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* weight, const float* mean, const float* rstd, int N, int C);

// ---- RMSNorm: out = x * rstd * weight, rstd = 1/sqrt(mean(x^2) + eps) -----------------
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps);
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int N, int C);
void rmsnorm_forward_ref(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps);
void rmsnorm_backward_ref(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                          const float* rstd, int N, int C);

// ---- GELU, tanh form (GPT-2): 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))) -------------
void gelu_forward(float* out, const float* inp, int64_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);
void gelu_forward_ref(float* out, const float* inp, int64_t n);
void gelu_backward_ref(float* dinp, const float* inp, const float* dout, int64_t n);

// ---- SwiGLU: out = silu(gate) * up, with inp (N, 2H) = [gate | up] per row ------------
// out (N, H)
void swiglu_forward(float* out, const float* inp, int N, int H);
void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H);
void swiglu_forward_ref(float* out, const float* inp, int N, int H);
void swiglu_backward_ref(float* dinp, const float* inp, const float* dout, int N, int H);

// ---- RoPE, rotate-half form (as HF Llama): pairs (i, i + HS/2) rotated by pos*theta^(-2i/HS)
// x (B, T, NHx, HS) rotated in place; positions are pos0 + t.
void rope_forward(float* x, int B, int T, int NHx, int HS, float theta, int pos0 = 0);
// Backward of a rotation is the inverse rotation; dx (B, T, NHx, HS) in place.
void rope_backward(float* dx, int B, int T, int NHx, int HS, float theta, int pos0 = 0);
void rope_forward_ref(float* x, int B, int T, int NHx, int HS, float theta, int pos0 = 0);
void rope_backward_ref(float* dx, int B, int T, int NHx, int HS, float theta, int pos0 = 0);

// ---- causal self-attention with grouped-query heads -----------------------------------
// q (B, T, NH, HS), k/v (B, T, NKV, HS), out (B, T, NH, HS),
// lse (B, NH, T): log-sum-exp of each query's scaled scores, saved for backward.
// Computed tile by tile with an online softmax: memory O(T*HS), never the (T, T) matrix.
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int B, int T,
                       int NH, int NKV, int HS);
// dq/dk/dv accumulate. Recomputes scores tile by tile from q, k and lse.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, int B, int T, int NH, int NKV, int HS);
// Reference: materializes the (T, T) probabilities per head.
void attention_forward_ref(float* out, float* lse, const float* q, const float* k, const float* v, int B, int T,
                           int NH, int NKV, int HS);
void attention_backward_ref(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                            const float* v, const float* out, const float* lse, int B, int T, int NH, int NKV,
                            int HS);

// ---- fused softmax + cross-entropy -----------------------------------------------------
// logits (N, V), targets (N) (a target < 0 is ignored: no loss, zero gradient).
// losses (N) = -log softmax(logits)[target]. If dlogits is not null it is OVERWRITTEN
// with dloss_scale * (softmax - onehot), the gradient of dloss_scale * sum(losses).
// Returns the sum of losses over non-ignored rows.
double softmax_xent_forward_backward(float* losses, float* dlogits, const float* logits, const int32_t* targets,
                                     int N, int V, float dloss_scale);
double softmax_xent_forward_backward_ref(float* losses, float* dlogits, const float* logits,
                                         const int32_t* targets, int N, int V, float dloss_scale);

// ---- residual: out = a + b; backward adds dout to both --------------------------------
void residual_forward(float* out, const float* a, const float* b, int64_t n);
void residual_backward(float* da, float* db, const float* dout, int64_t n);

// ---- AdamW (decoupled weight decay, bias-corrected), step t >= 1 ----------------------
struct AdamWConfig {
  float lr = 3e-4f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
};
// Weight decay is per call: callers pass weight_decay = 0 for biases and norm gains.
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, const AdamWConfig& cfg,
                  int t);
void adamw_update_ref(float* params, const float* grads, float* m, float* v, int64_t n, const AdamWConfig& cfg,
                      int t);
// Sum of squares in a fixed order (blocks of 4096 summed in f64, blocks added in order),
// so the result does not depend on thread count.
double sum_squares(const float* x, int64_t n);
void scale_inplace(float* x, int64_t n, float s);

// Threads used by the OpenMP kernels (0 = all cores). GEMMs run on these threads too, one
// single-threaded OpenBLAS call per block of a fixed grid (see cpu/linear.cpp).
void set_num_threads(int n);
int num_threads();

}  // namespace troupe::ops
