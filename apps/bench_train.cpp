// `troupe bench train`: tokens/s and GFLOP/s of forward + backward + AdamW for a small
// config and a GPT-2-small-shaped one, against the OpenBLAS sgemm peak measured in the
// same run and, when python3 has torch, against bench/torch_train.py on the same
// configs and thread count (the ratio is what counts: absolute times here are noisy).

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/rng.h"
#include "ops/model/optimizer.h"
#include "ops/model/transformer.h"
#include "ops/ops.h"

namespace troupe::app {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Best-of-repeats GFLOP/s of a square OpenBLAS sgemm, with OpenBLAS's own threading at
// 1 and at `threads` threads: the best is the ceiling our GEMM-bound kernels can reach.
// (Our linear runs OpenBLAS single-threaded on fixed blocks for bitwise determinism;
// see ops/cpu/linear.cpp.)
double sgemm_peak_gflops(int n, int repeats, int threads) {
  std::vector<float> a(static_cast<size_t>(n) * n), b(a.size()), c(a.size());
  RngStream rng(1, {1});
  rng.fill_uniform(a.data(), int64_t(a.size()), -1, 1);
  rng.fill_uniform(b.data(), int64_t(b.size()), -1, 1, a.size());
  double best = 0;
  for (int t : {1, threads}) {
    openblas_set_num_threads(t);
    for (int r = 0; r < repeats + 1; r++) {
      auto t0 = Clock::now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(),
                  n);
      double s = seconds_since(t0);
      if (r > 0) best = std::max(best, 2.0 * n * n * double(n) / s / 1e9);  // first run warms up
    }
  }
  ops::set_num_threads(threads);  // back to the kernels' setting
  return best;
}

struct BenchConfig {
  std::string name;
  model::ModelConfig model;
  int B, T;
};

json bench_one(const BenchConfig& bc, int steps, bool recompute) {
  model::Transformer m(bc.model);
  m.init_weights(1);
  m.set_recompute(recompute);
  model::OptimConfig oc;
  model::AdamW opt(m.params(), oc);
  const int N = bc.B * bc.T;
  std::vector<int32_t> tokens(static_cast<size_t>(N)), targets(static_cast<size_t>(N));
  RngStream rng(7, {0});
  for (int i = 0; i < N; i++) {
    tokens[size_t(i)] = int32_t(rng.bits(uint64_t(i)) % uint32_t(bc.model.vocab_size));
    targets[size_t(i)] = int32_t(rng.bits(uint64_t(N + i)) % uint32_t(bc.model.vocab_size));
  }
  double total = 0;
  float loss = 0;
  std::vector<double> times;
  for (int s = 0; s < steps + 1; s++) {  // step 0 warms up caches and the allocator
    auto t0 = Clock::now();
    m.zero_grad();
    loss = m.forward(tokens.data(), nullptr, targets.data(), bc.B, bc.T);
    m.backward(nullptr, 1.0f / float(N));
    double norm = std::sqrt(opt.grad_sum_squares());
    opt.step(oc.lr, opt.clip_scale(norm));
    double dt = seconds_since(t0);
    if (s > 0) {
      times.push_back(dt);
      total += dt;
    }
  }
  std::sort(times.begin(), times.end());
  double med = times[times.size() / 2];
  double tok_s = N / med;
  double flops = model::Transformer::train_flops_per_token(bc.model, bc.T) * N;
  json j = {{"config", bc.name},
            {"model", bc.model.str()},
            {"params", m.num_params()},
            {"B", bc.B},
            {"T", bc.T},
            {"recompute", recompute},
            {"steps", steps},
            {"step_s_median", med},
            {"tokens_per_s", tok_s},
            {"gflops", flops / med / 1e9},
            {"activation_mib", double(m.activation_bytes()) / (1 << 20)},
            {"final_loss", loss}};
  return j;
}

// Runs bench/torch_train.py for the same configs; returns its JSON or null.
json run_torch(const std::string& script, const std::string& configs, int steps, int threads) {
  std::string cmd = "python3 " + script + " --configs " + configs + " --steps " + std::to_string(steps) +
                    " --threads " + std::to_string(threads) + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return nullptr;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  if (rc != 0) return nullptr;
  // The script's JSON is its last line.
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  auto nl = out.rfind('\n');
  try {
    return json::parse(nl == std::string::npos ? out : out.substr(nl + 1));
  } catch (...) {
    return nullptr;
  }
}

}  // namespace

int cmd_bench_train(int argc, char** argv) {
  bool as_json = false, with_torch = true, recompute = false;
  int steps = 3, threads = 0;
  std::string only;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&](const char* what) -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(std::string("troupe bench train: ") + what + " needs a value");
      return argv[++i];
    };
    if (a == "--json") as_json = true;
    else if (a == "--no-torch") with_torch = false;
    else if (a == "--recompute") recompute = true;
    else if (a == "--steps") steps = std::max(1, std::atoi(next("--steps").c_str()));
    else if (a == "--threads") threads = std::atoi(next("--threads").c_str());
    else if (a == "--config") only = next("--config");
    else throw std::runtime_error("troupe bench train: unknown option '" + a + "' (see --help)");
  }
  ops::set_num_threads(threads);
  threads = ops::num_threads();

  // "small" is the training example's default model; "gpt2-small" is GPT-2 124M.
  // bench/torch_train.py defines the same two.
  const std::vector<BenchConfig> configs = {
      {"small", model::ModelConfig::gpt2(4, 4, 128, 49152, 128), 8, 128},
      {"gpt2-small", model::ModelConfig::gpt2(12, 12, 768, 50257, 1024), 4, 256}};
  std::vector<BenchConfig> run;
  for (auto& bc : configs)
    if (only.empty() || only == bc.name) run.push_back(bc);
  if (run.empty()) throw std::runtime_error("troupe bench train: unknown --config '" + only + "' (small, gpt2-small)");

  double peak = sgemm_peak_gflops(2048, 8, threads);
  if (!as_json) std::printf("sgemm peak (2048^3, %d threads): %.1f GFLOP/s\n", threads, peak);
  json results = json::array();
  std::string names;
  for (auto& bc : run) {
    json r = bench_one(bc, steps, recompute);
    r["fraction_of_sgemm_peak"] = r["gflops"].get<double>() / peak;
    if (!as_json)
      std::printf("%-11s %s B=%d T=%d: %.0f tok/s, %.1f GFLOP/s (%.0f%% of sgemm peak), step %.3f s\n",
                  bc.name.c_str(), bc.model.str().c_str(), bc.B, bc.T, r["tokens_per_s"].get<double>(),
                  r["gflops"].get<double>(), 100 * r["fraction_of_sgemm_peak"].get<double>(),
                  r["step_s_median"].get<double>());
    results.push_back(r);
    names += (names.empty() ? "" : ",") + bc.name;
  }
  json torch = nullptr;
  if (with_torch) {
    const char* src = std::getenv("TROUPE_SOURCE_DIR");
    std::string script = std::string(src ? src : ".") + "/bench/torch_train.py";
    torch = run_torch(script, names, steps, threads);
    if (torch.is_null()) {
      if (!as_json) std::printf("torch: not measured (python3 with torch not found, or %s failed)\n", script.c_str());
    } else {
      for (auto& r : results) {
        for (auto& t : torch["results"]) {
          if (t["config"] == r["config"]) {
            r["torch_tokens_per_s"] = t["tokens_per_s"];
            r["ratio_vs_torch"] = r["tokens_per_s"].get<double>() / t["tokens_per_s"].get<double>();
            r["torch_final_loss"] = t["final_loss"];
            if (!as_json)
              std::printf("%-11s torch %s: %.0f tok/s -> troupe/torch = %.2fx\n", r["config"].get<std::string>().c_str(),
                          torch.value("torch_version", std::string("?")).c_str(),
                          t["tokens_per_s"].get<double>(), r["ratio_vs_torch"].get<double>());
          }
        }
      }
    }
  }
  json out = {{"bench", "train"}, {"threads", threads}, {"sgemm_peak_gflops", peak}, {"results", results},
              {"torch", torch.is_null() ? json("not measured") : json(torch.value("torch_version", "?"))}};
  std::printf("%s\n", out.dump(as_json ? -1 : 2).c_str());
  return 0;
}

}  // namespace troupe::app
