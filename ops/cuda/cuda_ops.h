#pragma once
// CUDA kernels: the same functions as ops/ops.h, with the same names, shapes and
// semantics (forward overwrites its outputs, backward ACCUMULATES (+=) into every
// gradient it writes), over DEVICE pointers, each enqueued on a stream (default: the
// legacy default stream). Letters as in ops/ops.h: B batch, T sequence length, C
// channels, OC output channels, N = B*T rows, V vocabulary, NH query heads, NKV
// key/value heads, HS head size, H hidden size of the MLP.
//
// Determinism: every kernel gives the same bits on every run for the same inputs, GPU
// model and toolkit. No float atomics: sums over rows (dweight, dbias, dwte, dk, dv) run
// per-block partials in a fixed order, then a fixed-order second pass.
//
// Functions return once the work is enqueued, except those returning a host value
// (softmax_xent_forward_backward, sum_squares), which wait for their stream. A stream is
// used by one host thread at a time (an actor owns its streams). Each (device, stream)
// gets its own cuBLAS handle and scratch buffer, created on first use (context.h).

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ops/ops.h"

namespace troupe::cuda {

using ops::AdamWConfig;

// ---- embedding: out[b,t,:] = wte[tok[b,t],:] (+ wpe[pos0+t,:] if wpe) -----------------
// tokens (N), wte (V, C), wpe (maxT, C) or null, out (N, C).
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C,
                       int pos0 = 0, cudaStream_t stream = nullptr);
// Rows are grouped by token (a stable sort on the device) and each dwte row sums its
// contributions in row order: the same additions, in the same order, as the CPU.
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C,
                        int pos0 = 0, cudaStream_t stream = nullptr);

// ---- linear: out = inp @ weight^T + bias (cuBLAS, f32; TF32 off unless set_tf32(true)) --
// inp (N, C), weight (OC, C), bias (OC) or null, out (N, OC); dinp and dbias may be null.
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC,
                    cudaStream_t stream = nullptr);
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC, cudaStream_t stream = nullptr);
// bf16 weights (storage), f32 activations and accumulation.
void linear_forward_bf16w(float* out, const float* inp, const uint16_t* weight, const float* bias, int N, int C, int OC,
                          cudaStream_t stream = nullptr);

// ---- LayerNorm: inp (N, C), weight/bias (C), out (N, C), mean/rstd (N) ----------------
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int N, int C, float eps, cudaStream_t stream = nullptr);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C,
                        cudaStream_t stream = nullptr);

// ---- RMSNorm: inp (N, C), weight (C), out (N, C), rstd (N) -----------------------------
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps,
                     cudaStream_t stream = nullptr);
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int N, int C, cudaStream_t stream = nullptr);

// ---- GELU (tanh form), n elements -----------------------------------------------------
void gelu_forward(float* out, const float* inp, int64_t n, cudaStream_t stream = nullptr);
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n, cudaStream_t stream = nullptr);

// ---- SwiGLU: inp (N, 2H) = [gate | up] per row, out (N, H) ----------------------------
void swiglu_forward(float* out, const float* inp, int N, int H, cudaStream_t stream = nullptr);
void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H, cudaStream_t stream = nullptr);

// ---- RoPE, rotate-half form: x (B, T, NHx, HS) in place, positions pos0 + t -----------
void rope_forward(float* x, int B, int T, int NHx, int HS, float theta, int pos0 = 0, cudaStream_t stream = nullptr);
void rope_backward(float* dx, int B, int T, int NHx, int HS, float theta, int pos0 = 0, cudaStream_t stream = nullptr);

// ---- causal self-attention with grouped-query heads (FlashAttention-2 style) ----------
// q (B, T, NH, HS), k/v (B, T, NKV, HS), out (B, T, NH, HS), lse (B, NH, T).
// Tiles of 64 queries x 64 keys with an online softmax: memory O(T*HS) per head, never
// the (T, T) matrix. HS <= kMaxAttentionHeadSize.
constexpr int kMaxAttentionHeadSize = 128;
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int B, int T, int NH,
                       int NKV, int HS, cudaStream_t stream = nullptr);
// dq/dk/dv accumulate. Scores are recomputed from q, k and lse; D = rowsum(dout * out).
// One kernel owns dk, dv of a key tile (looping over query tiles and the heads of its
// group), a second owns dq of a query tile: no two blocks write the same float.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, int B, int T, int NH, int NKV, int HS,
                        cudaStream_t stream = nullptr);

// ---- fused softmax + cross-entropy ------------------------------------------------------
// logits (N, V), targets (N) (< 0: ignored), losses (N); dlogits (N, V) or null is
// OVERWRITTEN with dloss_scale * (softmax - onehot). Returns the sum of the losses of the
// non-ignored rows, added in row order in f64; waits for the stream. Throws if a target
// is >= V, as the CPU version does.
double softmax_xent_forward_backward(float* losses, float* dlogits, const float* logits, const int32_t* targets, int N,
                                     int V, float dloss_scale, cudaStream_t stream = nullptr);
// The same without waiting: the sum goes to *loss_sum (one device double). A target >= V
// makes its row's loss (and so the sum) NaN.
void softmax_xent_forward_backward_async(double* loss_sum, float* losses, float* dlogits, const float* logits,
                                         const int32_t* targets, int N, int V, float dloss_scale,
                                         cudaStream_t stream = nullptr);

// ---- residual: out = a + b; backward adds dout to both ---------------------------------
void residual_forward(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream = nullptr);
void residual_backward(float* da, float* db, const float* dout, int64_t n, cudaStream_t stream = nullptr);

// ---- AdamW, step t >= 1: torch's arithmetic, bit for bit the same as the CPU version ---
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, const AdamWConfig& cfg, int t,
                  cudaStream_t stream = nullptr);
// Sum of squares in f64 in a fixed order (blocks of 4096, then the blocks in order);
// waits for the stream. The _async form writes one device double.
double sum_squares(const float* x, int64_t n, cudaStream_t stream = nullptr);
void sum_squares_async(double* result, const float* x, int64_t n, cudaStream_t stream = nullptr);
void scale_inplace(float* x, int64_t n, float s, cudaStream_t stream = nullptr);

}  // namespace troupe::cuda
