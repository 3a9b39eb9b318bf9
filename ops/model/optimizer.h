#pragma once
// AdamW over a stage's parameters, with the moments in buffers the stage owns.
// Global-norm clipping is split in two so that a pipeline can combine the squared
// norms of all its stages before any of them steps.

#include <vector>

#include "core/tensor.h"
#include "ops/model/transformer.h"
#include "ops/ops.h"

namespace troupe::model {

struct OptimConfig {
  float lr = 3e-4f;
  float min_lr = 3e-5f;
  int warmup_steps = 0;
  int total_steps = 0;  // cosine decay to min_lr over this many steps (0: constant)
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.1f;
  float grad_clip = 1.0f;  // max global gradient norm (0: off)
};

// Global-norm gradient clipping: the factor that brings a gradient of norm global_norm
// down to grad_clip (1 when it is within it, or when clipping is off: grad_clip <= 0).
// One definition, so that every runtime (single model, pipeline, replicas) clips alike.
float clip_scale(double grad_clip, double global_norm);

class AdamW {
 public:
  AdamW(std::vector<Param>& params, const OptimConfig& cfg);
  // Sum of squared gradients of these parameters, in a fixed order.
  double grad_sum_squares() const;
  // Clip factor for a global norm: min(1, clip / (norm + 1e-6)), as torch's clip_grad_norm_.
  float clip_scale(double global_norm) const { return model::clip_scale(cfg_.grad_clip, global_norm); }
  // One step at learning rate lr; gradients are multiplied by grad_scale first.
  void step(float lr, float grad_scale);
  int steps_taken() const { return t_; }
  void set_steps_taken(int t) { t_ = t; }
  Tensor& m() { return m_; }
  Tensor& v() { return v_; }
  const OptimConfig& config() const { return cfg_; }

 private:
  std::vector<Param>& params_;
  OptimConfig cfg_;
  Tensor m_, v_;  // twins of the parameter buffer, same layout
  int t_ = 0;
};

}  // namespace troupe::model
