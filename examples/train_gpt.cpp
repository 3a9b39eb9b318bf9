// train_gpt: trains a small GPT on the Jane Austen novels in one process (no actors),
// the foundation's end-to-end check: real text, real tokenizer, explicit backward,
// AdamW, validation loss, a sample, weights saved as safetensors.
//
//   build/bin/train_gpt [--steps 1000] [--batch 8] [--seq 128] [--layers 4] [--heads 4]
//                       [--dim 128] [--lr 1e-3] [--val-every 100] [--out FILE] ...
// Run scripts/setup.sh first: it fetches the corpus and the tokenizer and writes
// data/austen.tok.

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "core/data.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/tokenizer.h"
#include "ops/model/optimizer.h"
#include "ops/model/transformer.h"
#include "ops/ops.h"

using namespace troupe;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  std::string tokens = "data/austen.tok";
  std::string tokenizer = "data/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::string out = "out/train_gpt.safetensors";
  int steps = 1000, batch = 8, seq = 128, layers = 4, heads = 4, dim = 128;
  float lr = 1e-3f, min_lr = 1e-4f, weight_decay = 0.1f, grad_clip = 1.0f;
  int warmup = 50, val_every = 100, val_batches = 8, sample_tokens = 64, threads = 0;
  uint64_t seed = 1337;
  bool recompute = false;
};

const char* kUsage =
    "usage: train_gpt [options]\n"
    "  --tokens FILE        token file (data/austen.tok, written by scripts/setup.sh)\n"
    "  --tokenizer GGUF     tokenizer for the sample (data/SmolLM2-135M-Instruct.Q4_1.gguf)\n"
    "  --out FILE           weights as safetensors (out/train_gpt.safetensors)\n"
    "  --steps N (1000)  --batch B (8)  --seq T (128)  --layers L (4)  --heads NH (4)  --dim C (128)\n"
    "  --lr X (1e-3)  --min-lr X (1e-4)  --warmup N (50)  --weight-decay X (0.1)  --grad-clip X (1.0)\n"
    "  --val-every N (100)  --val-batches N (8)  --sample-tokens N (64)  --threads N (all)  --seed S\n"
    "  --recompute          recompute activations in backward (less memory)\n";

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "train_gpt: %s\n%s", msg.c_str(), kUsage);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i++) {
    std::string k = argv[i];
    if (k == "--recompute") {
      a.recompute = true;
      continue;
    }
    if (k == "--help" || k == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) usage_error("option " + k + " needs a value");
    std::string v = argv[++i];
    auto num = [&](double lo) {
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (!end || *end || !(d >= lo)) usage_error(k + ": '" + v + "' is not a number >= " + strformat("%g", lo));
      return d;
    };
    if (k == "--tokens") a.tokens = v;
    else if (k == "--tokenizer") a.tokenizer = v;
    else if (k == "--out") a.out = v;
    else if (k == "--steps") a.steps = int(num(1));
    else if (k == "--batch") a.batch = int(num(1));
    else if (k == "--seq") a.seq = int(num(2));
    else if (k == "--layers") a.layers = int(num(1));
    else if (k == "--heads") a.heads = int(num(1));
    else if (k == "--dim") a.dim = int(num(1));
    else if (k == "--lr") a.lr = float(num(0));
    else if (k == "--min-lr") a.min_lr = float(num(0));
    else if (k == "--warmup") a.warmup = int(num(0));
    else if (k == "--weight-decay") a.weight_decay = float(num(0));
    else if (k == "--grad-clip") a.grad_clip = float(num(0));
    else if (k == "--val-every") a.val_every = int(num(1));
    else if (k == "--val-batches") a.val_batches = int(num(1));
    else if (k == "--sample-tokens") a.sample_tokens = int(num(0));
    else if (k == "--threads") a.threads = int(num(0));
    else if (k == "--seed") a.seed = uint64_t(num(0));
    else usage_error("unknown option " + k);
  }
  return a;
}

// Mean loss over the first n validation batches (evaluation mode: no gradients kept).
double validation_loss(model::Transformer& m, const data::BatchSampler& val, int n) {
  m.set_training(false);
  double sum = 0;
  int count = 0;
  std::vector<int32_t> x, y;
  for (int i = 0; i < n && i < val.num_eval_batches(); i++) {
    val.eval_batch(i, x, y);
    sum += m.forward(x.data(), nullptr, y.data(), val.B(), val.T());
    count++;
  }
  m.set_training(true);
  return count ? sum / count : NAN;
}

// Top-k sampling at temperature 0.8, seeded; the model is re-run over the whole window
// for each token (no KV cache in this example).
std::vector<int32_t> sample(model::Transformer& m, std::vector<int32_t> ctx, int n, uint64_t seed) {
  const int V = m.config().vocab_size, maxT = m.config().max_seq_len, K = 40;
  m.set_training(false);
  RngStream rng(seed, {0xabc});
  for (int i = 0; i < n; i++) {
    int T = std::min<int>(int(ctx.size()), maxT);
    std::vector<int32_t> window(ctx.end() - T, ctx.end());
    m.forward(window.data(), nullptr, nullptr, 1, T);
    const float* logits = m.logits() + int64_t(T - 1) * V;
    std::vector<std::pair<float, int>> top;
    for (int v = 0; v < V; v++) top.push_back({logits[v], v});
    std::partial_sort(top.begin(), top.begin() + K, top.end(), std::greater<>());
    double z = 0;
    std::vector<double> p(K);
    for (int k = 0; k < K; k++) z += p[size_t(k)] = std::exp((top[size_t(k)].first - top[0].first) / 0.8);
    double u = rng.uniform(uint64_t(i)) * z;
    int pick = K - 1;
    for (int k = 0; k < K; k++) {
      if ((u -= p[size_t(k)]) <= 0) {
        pick = k;
        break;
      }
    }
    ctx.push_back(top[size_t(pick)].second);
  }
  m.set_training(true);
  return ctx;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  ops::set_num_threads(a.threads);

  auto tok = Tokenizer::from_gguf_file(a.tokenizer);
  if (!tok) usage_error(tok.error().message + " (run scripts/setup.sh)");
  auto file = data::TokenFile::open(a.tokens);
  if (!file) usage_error(file.error().message + " (run scripts/setup.sh)");
  data::TokenDataset ds(*file, 0.05);
  data::BatchSampler train(ds, data::Split::Train, a.batch, a.seq, a.seed);
  data::BatchSampler val(ds, data::Split::Val, a.batch, a.seq, a.seed);

  model::ModelConfig cfg = model::ModelConfig::gpt2(a.layers, a.heads, a.dim, tok->vocab_size(), a.seq);
  if (auto ok = cfg.validate(); !ok) usage_error(ok.error().message);
  model::Transformer m(cfg);
  m.init_weights(a.seed);
  m.set_recompute(a.recompute);
  model::OptimConfig oc;
  oc.lr = a.lr;
  oc.min_lr = a.min_lr;
  oc.warmup_steps = a.warmup;
  oc.total_steps = a.steps;
  oc.weight_decay = a.weight_decay;
  oc.grad_clip = a.grad_clip;
  model::AdamW opt(m.params(), oc);

  std::printf("train_gpt: %s, %.2fM params; %lld train / %lld val tokens; B=%d T=%d, %d steps, %d threads\n",
              cfg.str().c_str(), m.num_params() / 1e6, (long long)ds.num_tokens(data::Split::Train),
              (long long)ds.num_tokens(data::Split::Val), a.batch, a.seq, a.steps, ops::num_threads());
  std::printf("step 0: val loss %.4f (ln V = %.4f)\n", validation_loss(m, val, a.val_batches), std::log(double(cfg.vocab_size)));
  std::fflush(stdout);

  const bool tty = isatty(1);
  const int N = a.batch * a.seq;
  std::vector<int32_t> x, y;
  auto t_start = Clock::now();
  double ema_tok_s = 0;
  for (int step = 0; step < a.steps; step++) {
    auto t0 = Clock::now();
    train.batch(step, x, y);
    m.zero_grad();
    float loss = m.forward(x.data(), nullptr, y.data(), a.batch, a.seq);
    m.backward(nullptr, 1.0f / float(N));
    double norm = std::sqrt(opt.grad_sum_squares());
    float lr = model::lr_schedule(step, oc.lr, oc.min_lr, oc.warmup_steps, oc.total_steps);
    opt.step(lr, opt.clip_scale(norm));
    double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    double tok_s = N / dt;
    ema_tok_s = step == 0 ? tok_s : 0.9 * ema_tok_s + 0.1 * tok_s;
    double elapsed = std::chrono::duration<double>(Clock::now() - t_start).count();
    double eta = elapsed / (step + 1) * (a.steps - step - 1);
    bool val_now = (step + 1) % a.val_every == 0 || step + 1 == a.steps;
    if (tty || val_now || step % 10 == 0) {
      std::printf("%sstep %5d/%d  loss %.4f  lr %.2e  norm %.3f  %6.0f tok/s  ETA %s%s", tty ? "\r" : "", step + 1,
                  a.steps, loss, lr, norm, ema_tok_s, format_eta(eta).c_str(), tty && !val_now ? "" : "\n");
      std::fflush(stdout);
    }
    if (val_now) {
      std::printf("step %d: val loss %.4f\n", step + 1, validation_loss(m, val, a.val_batches));
      std::fflush(stdout);
    }
  }

  std::vector<int32_t> prompt = tok->encode("It is a truth universally acknowledged");
  auto text = sample(m, prompt, a.sample_tokens, a.seed);
  std::printf("sample: %s\n", tok->decode(text).c_str());

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& p : m.params()) tensors.push_back({p.name, p.value});
  std::error_code ec;
  if (auto dir = std::filesystem::path(a.out).parent_path(); !dir.empty()) std::filesystem::create_directories(dir, ec);
  auto saved = write_safetensors(a.out, tensors, {{"config", cfg.str()}, {"steps", std::to_string(a.steps)}});
  if (!saved) {
    std::fprintf(stderr, "train_gpt: %s\n", saved.error().message.c_str());
    return 1;
  }
  std::printf("saved %s\n", a.out.c_str());
  return 0;
}
