// Token (+ learned position) embedding.
// tokens (N) with N = B*T, wte (V, C), wpe (maxT, C) or null, out (N, C).
//
// Backward scatters rows of dout into dwte by token id; tokens repeat, so threads split
// the channels rather than the rows: each dwte element then receives its contributions
// in row order 0..N-1, exactly as in the reference, whatever the thread count.

#include <algorithm>

#include "ops/ops.h"

namespace troupe::ops {

namespace {
constexpr int kChannelChunk = 64;  // channels per task in backward
}

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C,
                       int pos0) {
  const int64_t N = int64_t(B) * T;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const int t = int(n % T);
    float* __restrict o = out + n * C;
    const float* __restrict e = wte + int64_t(tokens[n]) * C;
    if (wpe) {
      const float* __restrict p = wpe + int64_t(pos0 + t) * C;
      for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    } else {
      for (int c = 0; c < C; c++) o[c] = e[c];
    }
  }
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C,
                        int pos0) {
  const int nchunks = (C + kChannelChunk - 1) / kChannelChunk;
  // in the forward pass this was out[b,t,:] = wte[tok,:] + wpe[t,:], so dout flows to both
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < nchunks; ch++) {
    const int c0 = ch * kChannelChunk, cw = std::min(kChannelChunk, C - c0);
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        const int64_t n = int64_t(b) * T + t;
        const float* __restrict d = dout + n * C + c0;
        float* __restrict e = dwte + int64_t(tokens[n]) * C + c0;
        for (int c = 0; c < cw; c++) e[c] += d[c];
        if (dwpe) {
          float* __restrict p = dwpe + int64_t(pos0 + t) * C + c0;
          for (int c = 0; c < cw; c++) p[c] += d[c];
        }
      }
  }
}

void embedding_forward_ref(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C,
                           int pos0) {
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const int64_t n = int64_t(b) * T + t;
      for (int c = 0; c < C; c++) {
        float x = wte[int64_t(tokens[n]) * C + c];
        if (wpe) x += wpe[int64_t(pos0 + t) * C + c];
        out[n * C + c] = x;
      }
    }
}

void embedding_backward_ref(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C,
                            int pos0) {
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const int64_t n = int64_t(b) * T + t;
      for (int c = 0; c < C; c++) {
        dwte[int64_t(tokens[n]) * C + c] += dout[n * C + c];
        if (dwpe) dwpe[int64_t(pos0 + t) * C + c] += dout[n * C + c];
      }
    }
}

}  // namespace troupe::ops
