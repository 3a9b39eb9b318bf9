// SwiGLU (Llama MLP): out = silu(gate) * up, silu(g) = g * sigmoid(g).
// inp (N, 2H) holds [gate | up] per row, out (N, H), dinp (N, 2H).

#include <cmath>

#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace troupe::ops {

void swiglu_forward(float* out, const float* inp, int N, int H) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* __restrict gate = inp + int64_t(n) * 2 * H;
    const float* __restrict up = gate + H;
    float* __restrict o = out + int64_t(n) * H;
    for (int i = 0; i < H; i++) o[i] = gate[i] * cpu::sigmoid_fast(gate[i]).s * up[i];
  }
}

void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int H) {
  // in the forward pass this was out = g * s(g) * up, so
  // dup = dout * g * s(g), dg = dout * up * s(g) * (1 + g * (1 - s(g)))
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* __restrict gate = inp + int64_t(n) * 2 * H;
    const float* __restrict up = gate + H;
    const float* __restrict dy = dout + int64_t(n) * H;
    float* __restrict dgate = dinp + int64_t(n) * 2 * H;
    float* __restrict dup = dgate + H;
    for (int i = 0; i < H; i++) {
      const float g = gate[i];
      const cpu::Sigmoid sg = cpu::sigmoid_fast(g);
      dgate[i] += dy[i] * up[i] * (sg.s * (1.0f + g * sg.one_minus_s));
      dup[i] += dy[i] * (g * sg.s);
    }
  }
}

void swiglu_forward_ref(float* out, const float* inp, int N, int H) {
  for (int n = 0; n < N; n++)
    for (int i = 0; i < H; i++) {
      const float g = inp[int64_t(n) * 2 * H + i], u = inp[int64_t(n) * 2 * H + H + i];
      out[int64_t(n) * H + i] = g / (1.0f + std::exp(-g)) * u;
    }
}

void swiglu_backward_ref(float* dinp, const float* inp, const float* dout, int N, int H) {
  for (int n = 0; n < N; n++)
    for (int i = 0; i < H; i++) {
      const double g = inp[int64_t(n) * 2 * H + i], u = inp[int64_t(n) * 2 * H + H + i];
      const double dy = dout[int64_t(n) * H + i];
      const double s = 1.0 / (1.0 + std::exp(-g));
      dinp[int64_t(n) * 2 * H + i] += float(dy * u * s * (1.0 + g * (1.0 - s)));
      dinp[int64_t(n) * 2 * H + H + i] += float(dy * g * s);
    }
}

}  // namespace troupe::ops
