// Matrix-vector products for decoding: out (N, OC) = inp (N, C) @ weight^T for a few rows
// (N = the sequences decoding one token each, or a verified draft). A GEMM library streams
// the weight matrix per call with setup costs sized for big N; here each weight row is
// read once and used for up to 8 input rows at a time, and threads split the output channels. Each output is
// one dot product summed in a fixed order (8 lanes, then a fixed tree, then the tail), so
// the bits do not depend on the thread count.

#include <algorithm>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "ops/ops.h"

namespace troupe::ops {

namespace {

#if defined(__AVX2__) && defined(__FMA__)
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);                 // 4 lanes
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));        // 2
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x1));  // 1
  return _mm_cvtss_f32(s);
}
#endif

// Rows [r0, r0 + R) of inp against weight row j; R <= 8.
template <int R>
void dot_rows(float* out, const float* inp, const float* w, int C, int OC, int r0, int j) {
  float res[R];
  int c = 0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc[R];
  for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
  for (; c + 8 <= C; c += 8) {
    __m256 wv = _mm256_loadu_ps(w + c);
    for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(inp + int64_t(r0 + r) * C + c), wv, acc[r]);
  }
  for (int r = 0; r < R; r++) res[r] = hsum(acc[r]);
#else
  for (int r = 0; r < R; r++) res[r] = 0;
#endif
  for (; c < C; c++)
    for (int r = 0; r < R; r++) res[r] += inp[int64_t(r0 + r) * C + c] * w[c];
  for (int r = 0; r < R; r++) out[int64_t(r0 + r) * OC + j] = res[r];
}

}  // namespace

void matvec_forward(float* out, const float* inp, const float* weight, int N, int C, int OC) {
  constexpr int kRows = 16;  // output channels per task
  const int tasks = (OC + kRows - 1) / kRows;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < tasks; t++) {
    const int j1 = std::min(OC, (t + 1) * kRows);
    for (int r0 = 0; r0 < N; r0 += 8) {
      const int R = std::min(8, N - r0);
      for (int j = t * kRows; j < j1; j++) {
        const float* w = weight + int64_t(j) * C;
        switch (R) {
          case 8: dot_rows<8>(out, inp, w, C, OC, r0, j); break;
          case 7: dot_rows<7>(out, inp, w, C, OC, r0, j); break;
          case 6: dot_rows<6>(out, inp, w, C, OC, r0, j); break;
          case 5: dot_rows<5>(out, inp, w, C, OC, r0, j); break;
          case 4: dot_rows<4>(out, inp, w, C, OC, r0, j); break;
          case 3: dot_rows<3>(out, inp, w, C, OC, r0, j); break;
          case 2: dot_rows<2>(out, inp, w, C, OC, r0, j); break;
          default: dot_rows<1>(out, inp, w, C, OC, r0, j); break;
        }
      }
    }
  }
}

}  // namespace troupe::ops
