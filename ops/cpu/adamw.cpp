// AdamW (decoupled weight decay, bias-corrected) at step t >= 1, and the two helpers the
// optimizer needs around it: a sum of squares in a fixed order (gradient norm) and an
// in-place scale (gradient clipping, loss scaling).
//
// The update is torch.optim.AdamW's, in torch's own order and rounding (the CPU
// single-tensor path, which the fused one matches):
//   p = p * (1 - lr wd)
//   m = lerp(m, g, 1 - b1)                     = m + (1 - b1)(g - m), one fma
//   v = v b2 + ((1 - b2) g) g                  one fma
//   p = p + (-lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// with the scalars formed in f64 and rounded to f32 once, as torch does with Python
// floats. The fmas are explicit std::fma calls (exact by definition, vectorized to
// vfmadd on x86), so results do not depend on the compiler's contraction choices. This
// reproduces torch's m and v bit for bit, and p except where torch's vectorized sqrt
// rounds differently (about 1 element in 10^4, by 1 ulp).

#include <cmath>
#include <vector>

#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace troupe::ops {

namespace {

struct AdamWScalars {
  float decay, lerp_weight, one_minus_beta2, beta2, neg_step_size, bias_correction2_sqrt, eps;
  AdamWScalars(const AdamWConfig& cfg, int t) {
    const double bc1 = 1.0 - std::pow(double(cfg.beta1), double(t));
    const double bc2 = 1.0 - std::pow(double(cfg.beta2), double(t));
    decay = float(1.0 - double(cfg.lr) * double(cfg.weight_decay));
    lerp_weight = float(1.0 - double(cfg.beta1));
    one_minus_beta2 = float(1.0 - double(cfg.beta2));
    beta2 = cfg.beta2;
    neg_step_size = float(-(double(cfg.lr) / bc1));
    bias_correction2_sqrt = float(std::sqrt(bc2));
    eps = cfg.eps;
  }
};

// torch's lerp(start, end, w): start + w (end - start) for |w| < 0.5, else
// end - (1 - w)(end - start); both as one fma.
inline float lerp(float start, float end, float w) {
  return std::fabs(w) < 0.5f ? std::fma(w, end - start, start) : std::fma(w - 1.0f, end - start, end);
}

inline void adamw_element(float& p, float g, float& m, float& v, const AdamWScalars& s) {
  const float pd = p * s.decay;
  const float m1 = lerp(m, g, s.lerp_weight);
  const float v1 = std::fma(s.one_minus_beta2 * g, g, v * s.beta2);
  const float denom = std::sqrt(v1) / s.bias_correction2_sqrt + s.eps;
  p = pd + (s.neg_step_size * m1) / denom;
  m = m1;
  v = v1;
}

constexpr int64_t kSumSquaresBlock = 4096;

}  // namespace

void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, const AdamWConfig& cfg, int t) {
  const AdamWScalars s(cfg, t);
  float* __restrict p_ = params;
  const float* __restrict g_ = grads;
  float* __restrict m_ = m;
  float* __restrict v_ = v;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) adamw_element(p_[i], g_[i], m_[i], v_[i], s);
}

void adamw_update_ref(float* params, const float* grads, float* m, float* v, int64_t n, const AdamWConfig& cfg, int t) {
  // The same arithmetic as above, written out step by step as torch runs it.
  const double bc1 = 1.0 - std::pow(double(cfg.beta1), double(t));
  const double bc2 = 1.0 - std::pow(double(cfg.beta2), double(t));
  const float w = float(1.0 - double(cfg.beta1));
  for (int64_t i = 0; i < n; i++) {
    params[i] *= float(1.0 - double(cfg.lr) * double(cfg.weight_decay));  // param.mul_(1 - lr*wd)
    m[i] = w < 0.5f ? std::fma(w, grads[i] - m[i], m[i])                  // exp_avg.lerp_(g, 1-b1)
                    : std::fma(w - 1.0f, grads[i] - m[i], grads[i]);
    v[i] = std::fma(float(1.0 - double(cfg.beta2)) * grads[i], grads[i], v[i] * cfg.beta2);  // mul_(b2).addcmul_
    const float denom = std::sqrt(v[i]) / float(std::sqrt(bc2)) + cfg.eps;
    params[i] += (float(-(double(cfg.lr) / bc1)) * m[i]) / denom;  // addcdiv_(m, denom, -step)
  }
}

double sum_squares(const float* x, int64_t n) {
  const int64_t nblocks = (n + kSumSquaresBlock - 1) / kSumSquaresBlock;
  std::vector<double> partial(size_t(nblocks), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nblocks; b++) {
    const float* __restrict xb = x + b * kSumSquaresBlock;
    const int64_t len = std::min(kSumSquaresBlock, n - b * kSumSquaresBlock);
    partial[size_t(b)] = cpu::reduce_sum<double>(len, [&](int64_t i) { return double(xb[i]) * double(xb[i]); });
  }
  double total = 0;
  for (int64_t b = 0; b < nblocks; b++) total += partial[size_t(b)];
  return total;
}

void scale_inplace(float* x, int64_t n, float s) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) x[i] *= s;
}

}  // namespace troupe::ops
