// Timings of the main CUDA kernels at GPT-2 small sizes (hidden: run with
// `troupe_cuda_tests "[.bench]"`). Median of 20 timed runs after 3 warm-ups, CUDA events
// around each run. Prints a human line and a JSON line per kernel.

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>

#include "cuda_test_util.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_ops.h"

using namespace troupe;
using namespace troupe::test;

namespace {

double median_ms(const std::function<void()>& f, int warmup = 3, int reps = 20) {
  for (int i = 0; i < warmup; i++) f();
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < reps; i++) {
    CUDA_CHECK(cudaEventRecord(start));
    f();
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void report(const std::string& name, const std::string& shape, double ms, double flop) {
  const double tflops = flop / (ms * 1e-3) / 1e12;
  std::printf("%-28s %-34s %8.3f ms %7.2f TFLOP/s\n", name.c_str(), shape.c_str(), ms, tflops);
  std::printf("{\"bench\":\"%s\",\"shape\":\"%s\",\"ms\":%.4f,\"tflops\":%.3f}\n", name.c_str(), shape.c_str(), ms,
              tflops);
}

bool all_finite(const std::vector<float>& x) {
  return std::all_of(x.begin(), x.end(), [](float v) { return std::isfinite(v); });
}

}  // namespace

TEST_CASE("bench cuda linear forward", "[.bench][cuda]") {
  const int N = 4096, C = 768, OC = 3072;
  DeviceArray<float> inp(randn(size_t(N) * C, 140, {1})), w(randn(size_t(OC) * C, 140, {2}, 0.02f));
  DeviceArray<float> bias(randn(size_t(OC), 140, {3})), out(size_t(N) * OC);
  const double ms = median_ms([&] { cuda::linear_forward(out.get(), inp.get(), w.get(), bias.get(), N, C, OC); });
  report("linear_forward f32", "N=4096 C=768 OC=3072 bias", ms, 2.0 * N * C * OC);
  cuda::set_tf32(true);
  const double ms_tf32 = median_ms([&] { cuda::linear_forward(out.get(), inp.get(), w.get(), bias.get(), N, C, OC); });
  cuda::set_tf32(false);
  report("linear_forward tf32", "N=4096 C=768 OC=3072 bias", ms_tf32, 2.0 * N * C * OC);
  CHECK(all_finite(out.download()));
}

TEST_CASE("bench cuda attention forward and backward", "[.bench][cuda]") {
  const int B = 8, T = 1024, NH = 12, NKV = 12, HS = 64;
  const size_t n = size_t(B) * T * NH * HS;
  DeviceArray<float> q(randn(n, 141, {1})), k(randn(n, 141, {2})), v(randn(n, 141, {3})), dout(randn(n, 141, {4}));
  DeviceArray<float> out(n), lse(size_t(B) * NH * T), dq(n), dk(n), dv(n);
  // causal: half of the T x T score matrix; 2 products (QK^T, PV) forward, 5 in a
  // backward with atomic dQ (we run 7: S and dP are recomputed in the dQ kernel)
  const double pair_flop = 2.0 * B * NH * (double(T) * T / 2) * HS;
  const double fwd =
      median_ms([&] { cuda::attention_forward(out.get(), lse.get(), q.get(), k.get(), v.get(), B, T, NH, NKV, HS); });
  report("attention_forward", "B=8 T=1024 NH=12 HS=64 causal", fwd, 2 * pair_flop);
  const double bwd = median_ms([&] {
    cuda::attention_backward(dq.get(), dk.get(), dv.get(), dout.get(), q.get(), k.get(), v.get(), out.get(), lse.get(),
                             B, T, NH, NKV, HS);
  });
  report("attention_backward", "B=8 T=1024 NH=12 HS=64 causal", bwd, 5 * pair_flop);
  report("attention_forward+backward", "B=8 T=1024 NH=12 HS=64 causal", fwd + bwd, 7 * pair_flop);
  CHECK(all_finite(out.download()));
  CHECK(all_finite(dq.download()));
}
