// RMSNorm (Llama): out = (x * rstd) * weight, rstd = 1 / sqrt(mean(x^2) + eps).
// inp (N, C), weight (C), out (N, C), rstd (N) saved for backward.
//
// Same split as LayerNorm: rows across threads for per-row work, channels across
// threads for dweight so that its sum over rows runs in row order.

#include <algorithm>
#include <cmath>

#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace troupe::ops {

namespace {
constexpr int kChannelChunk = 64;  // channels per task in the weight gradient
}

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* __restrict x = inp + int64_t(n) * C;
    float* __restrict o = out + int64_t(n) * C;
    const float ms = cpu::reduce_sum(C, [&](int64_t i) { return x[i] * x[i]; }) / float(C);
    const float s = 1.0f / std::sqrt(ms + eps);
    for (int i = 0; i < C; i++) o[i] = (x[i] * s) * weight[i];
    rstd[n] = s;
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int N, int C) {
  // in the forward pass this was out = norm * w with norm = x * rstd, so dnorm = dout * w
  // and, since rstd depends on x: dx = rstd * (dnorm - norm * mean(dnorm * norm))
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* __restrict x = inp + int64_t(n) * C;
    const float* __restrict dy = dout + int64_t(n) * C;
    float* __restrict dx = dinp + int64_t(n) * C;
    const float s = rstd[n];
    const float dnorm_norm_mean =
        cpu::reduce_sum(C, [&](int64_t i) { return dy[i] * weight[i] * (x[i] * s); }) / float(C);
    for (int i = 0; i < C; i++) dx[i] += (dy[i] * weight[i] - (x[i] * s) * dnorm_norm_mean) * s;
  }
  // dweight += sum over rows of dout * norm
  const int nchunks = (C + kChannelChunk - 1) / kChannelChunk;
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < nchunks; ch++) {
    const int c0 = ch * kChannelChunk, cw = std::min(kChannelChunk, C - c0);
    float dw[kChannelChunk];
    for (int j = 0; j < cw; j++) dw[j] = dweight[c0 + j];
    for (int n = 0; n < N; n++) {
      const float* __restrict x = inp + int64_t(n) * C + c0;
      const float* __restrict dy = dout + int64_t(n) * C + c0;
      const float s = rstd[n];
      for (int j = 0; j < cw; j++) dw[j] += (x[j] * s) * dy[j];
    }
    for (int j = 0; j < cw; j++) dweight[c0 + j] = dw[j];
  }
}

void rmsnorm_forward_ref(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) {
  for (int n = 0; n < N; n++) {
    const float* x = inp + int64_t(n) * C;
    double ms = 0;
    for (int i = 0; i < C; i++) ms += double(x[i]) * x[i];
    ms /= C;
    const double s = 1.0 / std::sqrt(ms + double(eps));
    for (int i = 0; i < C; i++) out[int64_t(n) * C + i] = float(x[i] * s * weight[i]);
    rstd[n] = float(s);
  }
}

void rmsnorm_backward_ref(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                          const float* rstd, int N, int C) {
  for (int n = 0; n < N; n++) {
    const float* x = inp + int64_t(n) * C;
    const float* dy = dout + int64_t(n) * C;
    const double s = rstd[n];
    double dnorm_norm_mean = 0;
    for (int i = 0; i < C; i++) dnorm_norm_mean += double(dy[i]) * weight[i] * (x[i] * s);
    dnorm_norm_mean /= C;
    for (int i = 0; i < C; i++)
      dinp[int64_t(n) * C + i] += float((double(dy[i]) * weight[i] - x[i] * s * dnorm_norm_mean) * s);
  }
  for (int n = 0; n < N; n++)
    for (int i = 0; i < C; i++) dweight[i] += (inp[int64_t(n) * C + i] * rstd[n]) * dout[int64_t(n) * C + i];
}

}  // namespace troupe::ops
