// `troupe bench decode`: single-stream greedy decoding of SmolLM2-135M-Instruct with the
// KV-cache engine against transformers (PyTorch, CPU, the same threads, the same f32
// weights from the same GGUF) in the same run; the ratio of decode tokens/s, and whether
// both decoded the same tokens.

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "actors/speculative.h"
#include "apps/bench_peer.h"
#include "apps/commands.h"
#include "core/gguf.h"
#include "core/tokenizer.h"
#include "ops/model/generate.h"
#include "ops/model/gguf_model.h"
#include "ops/model/inference.h"
#include "ops/ops.h"

namespace troupe::app {

using nlohmann::json;

namespace {

struct DecodeRun {
  double prompt_s = 0, tokens_per_s = 0;
  std::vector<int32_t> tokens;
};

// Greedy decoding of n tokens after `prompt`; the best of `reps` runs.
DecodeRun troupe_decode(const model::Transformer& m, const std::vector<int32_t>& prompt, int n, int reps) {
  DecodeRun best;
  const int V = m.config().vocab_size;
  for (int r = 0; r < reps; r++) {
    model::KvCache cache(m.config(), (int(prompt.size()) + n + 15) / 16, 16);
    model::InferenceEngine eng(m, cache);
    model::Sequence s;
    s.tokens = prompt;
    DecodeRun run;
    auto t0 = std::chrono::steady_clock::now();
    auto t1 = t0;
    for (int i = 0; i < n; i++) {
      const float* l = eng.step({&s}).value();
      if (i == 0) t1 = std::chrono::steady_clock::now();
      int32_t next = model::sample_token(l, V, model::Sampling{}, 0);
      s.tokens.push_back(next);
      run.tokens.push_back(next);
    }
    auto t2 = std::chrono::steady_clock::now();
    run.prompt_s = std::chrono::duration<double>(t1 - t0).count();
    run.tokens_per_s = double(n - 1) / std::chrono::duration<double>(t2 - t1).count();
    if (run.tokens_per_s > best.tokens_per_s) best = run;
  }
  return best;
}

// Speculative decoding through the actors, end to end (prompt included); the best of reps.
json speculative_row(caf::actor_system& sys, std::shared_ptr<const model::Transformer> target, const std::string& spec,
                     const std::vector<int32_t>& prompt, int n, int k_max, int reps, const DecodeRun& plain) {
  int ctx = int(prompt.size()) + n + k_max + 1;
  auto drafter = actors::make_drafter(spec, target, ctx);
  if (!drafter) return {{"drafter", spec}, {"status", "skipped"}, {"reason", drafter.error().message}};
  double best = 0;
  model::SpeculativeStats stats;
  std::vector<int32_t> tokens;
  for (int r = 0; r < reps; r++) {
    auto draft = actors::spawn_draft_actor(sys, *drafter);
    auto verifier = actors::spawn_verifier_actor(sys, target, (ctx + 15) / 16 + 1, 16);
    model::SpeculativeStats st;
    auto t0 = std::chrono::steady_clock::now();
    auto out = actors::speculative_generate(sys, draft, verifier, prompt, n, model::Sampling{}, k_max, &st);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    caf::anon_send_exit(draft, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(verifier, caf::exit_reason::user_shutdown);
    if (!out) return {{"drafter", spec}, {"status", "skipped"}, {"reason", out.error().message}};
    if (double(n) / secs > best) best = double(n) / secs, stats = st, tokens = *out;
  }
  // Plain decoding end to end as well: the prompt's forward, then n - 1 decode steps.
  double plain_e2e = double(n) / (plain.prompt_s + double(n - 1) / plain.tokens_per_s);
  return {{"drafter", spec},
          {"status", "measured"},
          {"tokens_per_s", best},
          {"plain_tokens_per_s", plain_e2e},
          {"speedup", best / plain_e2e},
          {"acceptance", stats.acceptance()},
          {"tokens_per_round", stats.rounds ? double(stats.generated) / stats.rounds : 0.0},
          {"same_tokens", tokens == plain.tokens}};
}

}  // namespace

int cmd_bench_decode(int argc, char** argv) {
  std::string model_path = "data/SmolLM2-135M-Instruct.Q4_1.gguf", python = "python3";
  std::string prompt = "It is a truth universally acknowledged, that a single man in possession of a good fortune";
  int tokens = 128, reps = 2, threads = 0, k_max = 8;
  std::string drafters = "ngram,self:6";
  bool as_json = false, with_peer = true;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("troupe bench decode: " + a + " needs a value");
      return argv[++i];
    };
    auto count = [&](int lo, int hi) {
      std::string v = next();
      char* end = nullptr;
      long x = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || x < lo || x > hi)
        throw std::runtime_error(strformat("troupe bench decode: %s '%s': expected %d..%d", a.c_str(), v.c_str(), lo, hi));
      return int(x);
    };
    if (a == "--json") as_json = true;
    else if (a == "--model") model_path = next();
    else if (a == "--prompt") prompt = next();
    else if (a == "--tokens") tokens = count(2, 4096);
    else if (a == "--reps") reps = count(1, 100);
    else if (a == "--threads") threads = count(1, 1024);
    else if (a == "--python") python = next();
    else if (a == "--no-peer") with_peer = false;
    else if (a == "--drafters") drafters = next();
    else if (a == "--draft-k") k_max = count(1, 64);
    else if (a == "-h" || a == "--help") {
      std::printf(
          "usage: troupe bench decode [--json] [--model GGUF] [--prompt TEXT] [--tokens N] [--reps R] [--threads T]\n"
          "                           [--python PY] [--no-peer] [--drafters LIST] [--draft-k K]\n"
          "Single-stream greedy decode tokens/s of the model (default SmolLM2-135M-Instruct) against transformers\n"
          "(bench/hf_decode.py; skipped with the reason when PY cannot import torch and transformers), and\n"
          "speculative decoding through the draft and verifier actors for each drafter of LIST (comma-separated\n"
          "ngram, self:N or a GGUF; default ngram,self:6): speedup over plain decoding end to end, acceptance.\n");
      return 0;
    } else {
      throw std::runtime_error("troupe bench decode: unknown option " + a);
    }
  }
  if (threads) ops::set_num_threads(threads);
  threads = ops::num_threads();
  auto file = GgufFile::open(model_path);
  if (!file) throw std::runtime_error(file.error().message);
  auto tok = Tokenizer::from_gguf(*file);
  if (!tok) throw std::runtime_error(tok.error().message);
  auto loaded = model::load_gguf_llama(*file, 2048);
  if (!loaded) throw std::runtime_error(loaded.error().message);
  std::shared_ptr<const model::Transformer> target(std::move(loaded->model));
  auto ids = tok->encode(prompt);
  std::fprintf(stderr, "bench decode: troupe, %d tokens after a %zu-token prompt, %d threads\n", tokens, ids.size(), threads);
  DecodeRun ours = troupe_decode(*target, ids, tokens, reps);
  json out = {{"model", model_path},
              {"prompt_tokens", ids.size()},
              {"tokens", tokens},
              {"threads", threads},
              {"troupe", {{"tokens_per_s", ours.tokens_per_s}, {"prompt_s", ours.prompt_s}, {"weights", "f32"}}}};
  if (with_peer) {
    std::string id_list;
    for (int32_t t : ids) {
      if (!id_list.empty()) id_list += ',';
      id_list += std::to_string(t);
    }
    json peer = run_python_peer(python, "torch, transformers, gguf", "hf_decode.py",
                                {"--gguf", model_path, "--ids", id_list, "--tokens", std::to_string(tokens), "--threads",
                                 std::to_string(threads), "--reps", std::to_string(reps)},
                                "bench decode: transformers");
    if (peer.value("status", "") == "measured") {
      auto theirs = peer["tokens"].get<std::vector<int32_t>>();
      peer["same_tokens"] = theirs == ours.tokens;
      peer.erase("tokens");
      out["ratio"] = ours.tokens_per_s / peer["tokens_per_s"].get<double>();
    }
    out["transformers"] = peer;
  }
  {
    caf::actor_system_config cfg;
    caf::actor_system sys{cfg};
    json rows = json::array();
    std::string list = drafters;
    for (size_t at = 0; at <= list.size();) {
      size_t comma = list.find(',', at);
      std::string spec = list.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
      at = comma == std::string::npos ? list.size() + 1 : comma + 1;
      if (spec.empty()) continue;
      std::fprintf(stderr, "bench decode: speculative with %s\n", spec.c_str());
      rows.push_back(speculative_row(sys, target, spec, ids, tokens, k_max, reps, ours));
    }
    out["speculative"] = rows;
  }
  if (as_json) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("decode: troupe %.1f tok/s", ours.tokens_per_s);
    if (out.contains("ratio"))
      std::printf(", transformers %.1f tok/s: %.2fx (same tokens: %s)", out["transformers"]["tokens_per_s"].get<double>(),
                  out["ratio"].get<double>(), out["transformers"]["same_tokens"].get<bool>() ? "yes" : "no");
    else if (out.contains("transformers"))
      std::printf(", transformers skipped: %s", out["transformers"]["reason"].get<std::string>().c_str());
    std::printf("\n");
    for (auto& r : out["speculative"]) {
      if (r["status"] == "measured")
        std::printf("speculative %-10s %.1f tok/s, %.2fx plain (acceptance %.0f%%, %.2f tokens per round, same tokens: %s)\n",
                    r["drafter"].get<std::string>().c_str(), r["tokens_per_s"].get<double>(), r["speedup"].get<double>(),
                    100 * r["acceptance"].get<double>(), r["tokens_per_round"].get<double>(),
                    r["same_tokens"].get<bool>() ? "yes" : "no");
      else
        std::printf("speculative %-10s skipped: %s\n", r["drafter"].get<std::string>().c_str(),
                    r["reason"].get<std::string>().c_str());
    }
  }
  return 0;
}

}  // namespace troupe::app
