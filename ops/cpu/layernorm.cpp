// LayerNorm over the last dimension: out = (x - mean) * rstd * weight + bias.
// inp (N, C), weight/bias (C), out (N, C), mean/rstd (N) saved for backward.
//
// Threads split rows for everything that is per row (statistics, out, dinp) and split
// channels for dweight/dbias, whose sums over rows then run in row order, as in the
// reference. Row sums use fixed lanes (vec_math.h): no result depends on thread count.

#include <algorithm>
#include <cmath>

#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace troupe::ops {

namespace {
constexpr int kChannelChunk = 64;  // channels per task in the weight/bias gradients
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* __restrict x = inp + int64_t(n) * C;
    float* __restrict o = out + int64_t(n) * C;
    const float m = cpu::reduce_sum(C, [&](int64_t i) { return x[i]; }) / float(C);
    const float var = cpu::reduce_sum(C,
                                      [&](int64_t i) {
                                        const float d = x[i] - m;
                                        return d * d;
                                      }) /
                      float(C);
    const float s = 1.0f / std::sqrt(var + eps);
    for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * weight[i] + bias[i];
    mean[n] = m;
    rstd[n] = s;
  }
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C) {
  // in the forward pass this was out = norm * w + b with norm = (x - mean) * rstd, so
  // dnorm = dout * w, and through the normalization (mean and rstd depend on x):
  // dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* __restrict x = inp + int64_t(n) * C;
    const float* __restrict dy = dout + int64_t(n) * C;
    float* __restrict dx = dinp + int64_t(n) * C;
    const float m = mean[n], s = rstd[n];
    const float dnorm_mean = cpu::reduce_sum(C, [&](int64_t i) { return dy[i] * weight[i]; }) / float(C);
    const float dnorm_norm_mean =
        cpu::reduce_sum(C, [&](int64_t i) { return dy[i] * weight[i] * ((x[i] - m) * s); }) / float(C);
    for (int i = 0; i < C; i++) {
      const float norm = (x[i] - m) * s;
      const float dnorm = dy[i] * weight[i];
      dx[i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
    }
  }
  // dweight += sum over rows of dout * norm, dbias += sum over rows of dout
  const int nchunks = (C + kChannelChunk - 1) / kChannelChunk;
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < nchunks; ch++) {
    const int c0 = ch * kChannelChunk, cw = std::min(kChannelChunk, C - c0);
    float dw[kChannelChunk], db[kChannelChunk];
    for (int j = 0; j < cw; j++) {
      dw[j] = dweight[c0 + j];
      db[j] = dbias[c0 + j];
    }
    for (int n = 0; n < N; n++) {
      const float* __restrict x = inp + int64_t(n) * C + c0;
      const float* __restrict dy = dout + int64_t(n) * C + c0;
      const float m = mean[n], s = rstd[n];
      for (int j = 0; j < cw; j++) {
        dw[j] += (x[j] - m) * s * dy[j];
        db[j] += dy[j];
      }
    }
    for (int j = 0; j < cw; j++) {
      dweight[c0 + j] = dw[j];
      dbias[c0 + j] = db[j];
    }
  }
}

void layernorm_forward_ref(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                           const float* bias, int N, int C, float eps) {
  for (int n = 0; n < N; n++) {
    const float* x = inp + int64_t(n) * C;
    double m = 0;
    for (int i = 0; i < C; i++) m += x[i];
    m /= C;
    double var = 0;
    for (int i = 0; i < C; i++) var += (x[i] - m) * (x[i] - m);
    var /= C;
    const double s = 1.0 / std::sqrt(var + double(eps));
    for (int i = 0; i < C; i++) out[int64_t(n) * C + i] = float((x[i] - m) * s * weight[i] + bias[i]);
    mean[n] = float(m);
    rstd[n] = float(s);
  }
}

void layernorm_backward_ref(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* weight, const float* mean, const float* rstd, int N, int C) {
  for (int n = 0; n < N; n++) {
    const float* x = inp + int64_t(n) * C;
    const float* dy = dout + int64_t(n) * C;
    const double m = mean[n], s = rstd[n];
    double dnorm_mean = 0, dnorm_norm_mean = 0;
    for (int i = 0; i < C; i++) {
      const double norm = (x[i] - m) * s;
      const double dnorm = double(dy[i]) * weight[i];
      dnorm_mean += dnorm;
      dnorm_norm_mean += dnorm * norm;
    }
    dnorm_mean /= C;
    dnorm_norm_mean /= C;
    for (int i = 0; i < C; i++) {
      const double norm = (x[i] - m) * s;
      const double dnorm = double(dy[i]) * weight[i];
      dinp[int64_t(n) * C + i] += float((dnorm - dnorm_mean - norm * dnorm_norm_mean) * s);
    }
  }
  for (int n = 0; n < N; n++)
    for (int i = 0; i < C; i++) {
      const float norm = (inp[int64_t(n) * C + i] - mean[n]) * rstd[n];
      dweight[i] += norm * dout[int64_t(n) * C + i];
      dbias[i] += dout[int64_t(n) * C + i];
    }
}

}  // namespace troupe::ops
