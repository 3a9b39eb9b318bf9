// `troupe data distill`: a corpus for training a draft model by sequence-level
// distillation (Kim & Rush 2016): random windows of a token file are given to the
// teacher (SmolLM2) as prompts, and the teacher's sampled continuations are written, with
// their prompts, to a new token file. A small model trained on it learns the teacher's
// next-token distribution on that kind of text, which is what a drafter needs.
//   troupe data distill --model GGUF --tokens FILE.tok --out FILE.tok [--sequences N] ...

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "core/data.h"
#include "core/progress.h"
#include "core/rng.h"
#include "ops/model/generate.h"
#include "ops/model/gguf_model.h"
#include "ops/model/inference.h"

namespace troupe::app {

int cmd_data_distill(int argc, char** argv) {
  std::string model_path = "data/SmolLM2-135M-Instruct.Q4_1.gguf", tokens_path = "data/austen.tok", out_path;
  int sequences = 512, prompt_len = 32, gen_len = 96, batch = 16;
  model::Sampling s{0.8f, 0, 0.95f, 1234, 1.0f};
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("troupe data distill: " + a + " needs a value");
      return argv[++i];
    };
    auto count = [&](long lo, long hi) {
      std::string v = value();
      char* end = nullptr;
      long x = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || x < lo || x > hi)
        throw std::runtime_error(strformat("troupe data distill: %s '%s': expected %ld..%ld", a.c_str(), v.c_str(), lo, hi));
      return x;
    };
    if (a == "--model") model_path = value();
    else if (a == "--tokens") tokens_path = value();
    else if (a == "--out") out_path = value();
    else if (a == "--sequences") sequences = int(count(1, 10000000));
    else if (a == "--prompt-len") prompt_len = int(count(1, 4096));
    else if (a == "--gen-len") gen_len = int(count(1, 4096));
    else if (a == "--batch") batch = int(count(1, 256));
    else if (a == "--seed") s.seed = uint64_t(count(0, LONG_MAX));
    else if (a == "--temperature") {
      std::string v = value();
      char* end = nullptr;
      s.temperature = std::strtof(v.c_str(), &end);
      if (v.empty() || *end || s.temperature < 0) throw std::runtime_error("troupe data distill: --temperature '" + v + "'");
    } else if (a == "-h" || a == "--help") {
      std::printf(
          "usage: troupe data distill --out FILE.tok [--model GGUF] [--tokens FILE.tok] [--sequences N]\n"
          "                           [--prompt-len P] [--gen-len G] [--batch B] [--temperature T] [--seed S]\n"
          "Prompts are random P-token windows of --tokens (default data/austen.tok); the teacher --model\n"
          "(default SmolLM2-135M-Instruct) continues each with G sampled tokens (T = 0.8, top-p 0.95), B at a\n"
          "time; each prompt and continuation is one document of the output token file.\n");
      return 0;
    } else {
      throw std::runtime_error("troupe data distill: unknown option " + a);
    }
  }
  if (out_path.empty()) throw std::runtime_error("troupe data distill: --out is required");
  auto loaded = model::load_gguf_llama(model_path, prompt_len + gen_len);
  if (!loaded) throw std::runtime_error(loaded.error().message);
  auto file = data::TokenFile::open(tokens_path);
  if (!file) throw std::runtime_error(file.error().message);
  if (file->size() <= prompt_len) throw std::runtime_error(tokens_path + ": shorter than --prompt-len");
  const int V = loaded->config.vocab_size;
  model::KvCache cache(loaded->config, batch * ((prompt_len + gen_len + 15) / 16 + 1), 16);
  model::InferenceEngine eng(*loaded->model, cache);
  std::vector<int32_t> corpus;
  RngStream pick(s.seed, {7});
  auto t0 = std::chrono::steady_clock::now();
  int done = 0;
  while (done < sequences) {
    const int n = std::min(batch, sequences - done);
    std::vector<model::Sequence> seqs(static_cast<size_t>(n));
    for (int i = 0; i < n; i++) {
      int64_t at = int64_t(pick.bits(uint64_t(done + i)) % uint64_t(file->size() - prompt_len));
      for (int j = 0; j < prompt_len; j++) seqs[size_t(i)].tokens.push_back((*file)[at + j]);
    }
    std::vector<model::Sequence*> ptrs;
    for (auto& q : seqs) ptrs.push_back(&q);
    for (int g = 0; g < gen_len; g++) {
      const float* logits = eng.step(ptrs).value();
      for (int i = 0; i < n; i++) {
        model::Sampling si = s;
        si.seed = s.seed ^ (uint64_t(done + i) * 0x9e3779b97f4a7c15ull);
        seqs[size_t(i)].tokens.push_back(model::sample_token(logits + int64_t(i) * V, V, si, uint64_t(g)));
      }
    }
    for (auto& q : seqs) {
      corpus.insert(corpus.end(), q.tokens.begin(), q.tokens.end());
      eng.release(q);
    }
    done += n;
    double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "\rdistill: %d/%d sequences, %.0f generated tok/s, ETA %s   ", done, sequences,
                 double(done) * gen_len / el, format_eta(el / done * (sequences - done)).c_str());
  }
  std::fprintf(stderr, "\n");
  if (auto ok = data::write_token_file(out_path, corpus, uint32_t(V)); !ok) throw std::runtime_error(ok.error().message);
  std::printf("distill: wrote %zu tokens (%d sequences of %d + %d) to %s\n", corpus.size(), sequences, prompt_len, gen_len,
              out_path.c_str());
  return 0;
}

}  // namespace troupe::app
