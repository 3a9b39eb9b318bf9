// Rotary position embedding, rotate-half form (HF Llama): with h = HS/2, each pair
// (x[i], x[i+h]) at position p = pos0 + t is rotated by the angle p * inv_freq[i],
// inv_freq[i] = theta^(-2i/HS):
//   x[i]   <- x[i] cos - x[i+h] sin
//   x[i+h] <- x[i+h] cos + x[i] sin
// x (B, T, NHx, HS), rotated in place. The angles are computed in f32 the way HF does
// (inv_freq = 1 / theta^(2i/HS), angle = float(p) * inv_freq) so that long positions
// round the same way.

#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/ops.h"

namespace troupe::ops {

namespace {

float inv_freq(int i, int HS, float theta) {
  return 1.0f / std::pow(theta, float(2 * i) / float(HS));
}

// cos and sin of every (t, i) angle: (T, HS/2) each.
struct RopeTable {
  std::vector<float> cos, sin;
  RopeTable(int T, int HS, float theta, int pos0) : cos(size_t(T) * (HS / 2)), sin(size_t(T) * (HS / 2)) {
    const int h = HS / 2;
    std::vector<float> freq(static_cast<size_t>(h));
    for (int i = 0; i < h; i++) freq[size_t(i)] = inv_freq(i, HS, theta);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
      for (int i = 0; i < h; i++) {
        const float angle = float(pos0 + t) * freq[size_t(i)];
        cos[size_t(t) * h + i] = std::cos(angle);
        sin[size_t(t) * h + i] = std::sin(angle);
      }
  }
};

// Rotates every head vector of x by +angle (sign = 1) or -angle (sign = -1).
void rotate(float* x, int B, int T, int NHx, int HS, float theta, int pos0, float sign) {
  TROUPE_CHECK(HS % 2 == 0, "RoPE needs an even head size, got HS=%d", HS);
  const int h = HS / 2;
  const RopeTable tab(T, HS, theta, pos0);
  const int64_t rows = int64_t(B) * T * NHx;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const int t = int((r / NHx) % T);
    const float* __restrict c = tab.cos.data() + size_t(t) * h;
    const float* __restrict s = tab.sin.data() + size_t(t) * h;
    float* __restrict x1 = x + r * HS;
    float* __restrict x2 = x1 + h;
    for (int i = 0; i < h; i++) {
      const float a = x1[i], b = x2[i], si = sign * s[i];
      x1[i] = a * c[i] - b * si;
      x2[i] = b * c[i] + a * si;
    }
  }
}

}  // namespace

void rope_forward(float* x, int B, int T, int NHx, int HS, float theta, int pos0) {
  rotate(x, B, T, NHx, HS, theta, pos0, 1.0f);
}

// in the forward pass this was x <- R x with R a rotation, so dx <- R^T dx = R(-angle) dx
void rope_backward(float* dx, int B, int T, int NHx, int HS, float theta, int pos0) {
  rotate(dx, B, T, NHx, HS, theta, pos0, -1.0f);
}

void rope_forward_ref(float* x, int B, int T, int NHx, int HS, float theta, int pos0) {
  const int h = HS / 2;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int hd = 0; hd < NHx; hd++) {
        float* v = x + ((int64_t(b) * T + t) * NHx + hd) * HS;
        for (int i = 0; i < h; i++) {
          const float angle = float(pos0 + t) * inv_freq(i, HS, theta);
          const float c = std::cos(angle), s = std::sin(angle);
          const float a = v[i], bb = v[i + h];
          v[i] = a * c - bb * s;
          v[i + h] = bb * c + a * s;
        }
      }
}

void rope_backward_ref(float* dx, int B, int T, int NHx, int HS, float theta, int pos0) {
  const int h = HS / 2;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int hd = 0; hd < NHx; hd++) {
        float* v = dx + ((int64_t(b) * T + t) * NHx + hd) * HS;
        for (int i = 0; i < h; i++) {
          const float angle = float(pos0 + t) * inv_freq(i, HS, theta);
          const float c = std::cos(angle), s = std::sin(angle);
          const float a = v[i], bb = v[i + h];
          v[i] = a * c + bb * s;
          v[i + h] = bb * c - a * s;
        }
      }
}

}  // namespace troupe::ops
