// Fused softmax + cross-entropy over the vocabulary.
// logits (N, V), targets (N) (a target < 0 is ignored: zero loss, zero gradient),
// losses (N), dlogits (N, V) or null: OVERWRITTEN with dloss_scale * (softmax - onehot).
// Returns the sum of the losses of the non-ignored rows, added in row order in f64.
//
// Per row, passes over V (a row of 50k floats stays in L2 after the first): the max;
// e = exp(x - max) written into dlogits (or a scratch row); sum(e) in f64 with fixed
// lanes; then dlogits = e * dloss_scale / sum. exp is computed once per element. Rows
// are independent, so threads split rows and nothing depends on the thread count.

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace troupe::ops {

namespace {

void check_targets(const int32_t* targets, int N, int V) {
  for (int n = 0; n < N; n++)
    TROUPE_CHECK(targets[n] < V, "target %d at row %d is outside the vocabulary of %d", targets[n], n, V);
}

}  // namespace

double softmax_xent_forward_backward(float* losses, float* dlogits, const float* logits, const int32_t* targets, int N,
                                     int V, float dloss_scale) {
  check_targets(targets, N, V);
  std::vector<double> row_loss(size_t(N), 0.0);
#pragma omp parallel
  {
    // exp(x - max) goes into dlogits, or into this row buffer when there is no dlogits
    std::vector<float> scratch(dlogits ? 0 : size_t(V));
#pragma omp for schedule(static)
    for (int n = 0; n < N; n++) {
      const float* __restrict x = logits + int64_t(n) * V;
      float* __restrict e = dlogits ? dlogits + int64_t(n) * V : scratch.data();
      const int target = targets[n];
      if (target < 0) {
        losses[n] = 0.0f;
        if (dlogits) std::memset(e, 0, sizeof(float) * size_t(V));
        continue;
      }
      const float m = cpu::reduce_max(x, V);
      for (int i = 0; i < V; i++) e[i] = cpu::exp_fast(x[i] - m);
      const double sum = cpu::reduce_sum<double>(V, [&](int64_t i) { return e[i]; });
      // -log softmax(x)[target] = log(sum exp(x - m)) + m - x[target]
      const double loss = std::log(sum) + double(m) - double(x[target]);
      losses[n] = float(loss);
      row_loss[size_t(n)] = loss;
      if (dlogits) {
        const float k = float(double(dloss_scale) / sum);
        for (int i = 0; i < V; i++) e[i] *= k;
        e[target] -= dloss_scale;
      }
    }
  }
  double total = 0;
  for (int n = 0; n < N; n++) total += row_loss[size_t(n)];
  return total;
}

double softmax_xent_forward_backward_ref(float* losses, float* dlogits, const float* logits, const int32_t* targets,
                                         int N, int V, float dloss_scale) {
  check_targets(targets, N, V);
  double total = 0;
  for (int n = 0; n < N; n++) {
    const float* x = logits + int64_t(n) * V;
    const int target = targets[n];
    if (target < 0) {
      losses[n] = 0.0f;
      if (dlogits)
        for (int i = 0; i < V; i++) dlogits[int64_t(n) * V + i] = 0.0f;
      continue;
    }
    double m = -INFINITY;
    for (int i = 0; i < V; i++) m = std::max(m, double(x[i]));
    double sum = 0;
    for (int i = 0; i < V; i++) sum += std::exp(double(x[i]) - m);
    const double loss = std::log(sum) + m - x[target];
    losses[n] = float(loss);
    total += loss;
    if (dlogits)
      for (int i = 0; i < V; i++) {
        const double p = std::exp(double(x[i]) - m) / sum;
        dlogits[int64_t(n) * V + i] = float(double(dloss_scale) * (p - (i == target ? 1.0 : 0.0)));
      }
  }
  return total;
}

}  // namespace troupe::ops
