// GELU, tanh approximation (GPT-2; torch gelu(approximate='tanh')):
// out = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). inp, out, dout: n floats.
//
// The fast version uses 0.5 (1 + tanh(u)) = sigmoid(2u) with the vectorizable exp of
// vec_math.h (libm's tanhf does not vectorize); the reference follows torch's formula.

#include <cmath>

#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace troupe::ops {

namespace {
constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kKappa = 0.044715f;
}  // namespace

void gelu_forward(float* out, const float* inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    const float x = inp[i];
    const float u = kBeta * (x + kKappa * (x * x * x));
    out[i] = x * cpu::sigmoid_fast(2.0f * u).s;
  }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  // in the forward pass this was out = x * s with s = sigmoid(2u), so
  // dout/dx = s + x * 2 s (1 - s) * du/dx, du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    const float x = inp[i];
    const float u = kBeta * (x + kKappa * (x * x * x));
    const cpu::Sigmoid sg = cpu::sigmoid_fast(2.0f * u);
    const float du = kBeta * (1.0f + 3.0f * kKappa * (x * x));
    dinp[i] += dout[i] * (sg.s + 2.0f * x * (sg.s * sg.one_minus_s) * du);
  }
}

void gelu_forward_ref(float* out, const float* inp, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const float x = inp[i];
    out[i] = 0.5f * x * (1.0f + std::tanh(kBeta * (x + kKappa * x * x * x)));
  }
}

void gelu_backward_ref(float* dinp, const float* inp, const float* dout, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const float x = inp[i];
    const float th = std::tanh(kBeta * (x + kKappa * x * x * x));
    const float left = 0.5f * x * (1.0f - th * th) * kBeta * (1.0f + 3.0f * kKappa * x * x);
    dinp[i] += dout[i] * (0.5f * (1.0f + th) + left);
  }
}

}  // namespace troupe::ops
