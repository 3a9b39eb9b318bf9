#include "ops/model/optimizer.h"

#include <cmath>
#include <cstring>

namespace troupe::model {

static int64_t total_numel(const std::vector<Param>& ps) {
  int64_t n = 0;
  for (auto& p : ps) n += p.value.numel();
  return n;
}

AdamW::AdamW(std::vector<Param>& params, const OptimConfig& cfg)
    : params_(params), cfg_(cfg), m_(Tensor::zeros({total_numel(params)})), v_(Tensor::zeros({total_numel(params)})) {}

double AdamW::grad_sum_squares() const {
  double s = 0;
  for (auto& p : params_) s += ops::sum_squares(p.grad.data<float>(), p.grad.numel());
  return s;
}

float clip_scale(double grad_clip, double global_norm) {
  if (grad_clip <= 0) return 1.0f;
  double c = grad_clip / (global_norm + 1e-6);
  return c < 1.0 ? float(c) : 1.0f;
}

void AdamW::step(float lr, float grad_scale) {
  t_++;
  int64_t off = 0;
  for (auto& p : params_) {
    int64_t n = p.value.numel();
    float* g = p.grad.data<float>();
    if (grad_scale != 1.0f) ops::scale_inplace(g, n, grad_scale);
    ops::AdamWConfig c{lr, cfg_.beta1, cfg_.beta2, cfg_.eps, p.decay ? cfg_.weight_decay : 0.0f};
    ops::adamw_update(p.value.data<float>(), g, m_.data<float>() + off, v_.data<float>() + off, n, c, t_);
    off += n;
  }
}

}  // namespace troupe::model
