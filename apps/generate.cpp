// `troupe generate --model PATH --prompt TEXT`: text generation with the paged-KV-cache
// engine, printing tokens as they come.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "actors/speculative.h"
#include "apps/commands.h"
#include "core/chat.h"
#include "core/gguf.h"
#include "core/tokenizer.h"
#include "ops/model/generate.h"
#include "ops/model/gguf_model.h"
#include "ops/model/inference.h"
#include "ops/ops.h"

namespace troupe::app {

namespace {

const char* kGenerateUsage =
    "usage: troupe generate --model PATH --prompt TEXT [options]\n"
    "  --model PATH         a Llama-architecture GGUF (SmolLM2-135M-Instruct: data/SmolLM2-135M-Instruct.Q4_1.gguf)\n"
    "  --prompt TEXT        the prompt (with --chat: the user's message)\n"
    "  --chat               wrap the prompt in the model's chat template (ChatML)\n"
    "  --system TEXT        with --chat: the system message (default: the template's)\n"
    "  --max-tokens N       at most N new tokens (default 128)\n"
    "  --temperature T      0 (default): greedy; otherwise sample from softmax(logits / T)\n"
    "  --top-k K            sample among the K most likely tokens (0: all)\n"
    "  --top-p P            then among the smallest set with probability >= P (default 1)\n"
    "  --repetition-penalty R  > 1 discourages repeating context tokens (default 1)\n"
    "  --seed S             random seed for sampling (default 0): same seed, same output\n"
    "  --stop TEXT          stop when the output contains TEXT (repeatable)\n"
    "  --ignore-eos         go on after the end-of-sequence token\n"
    "  --threads N          CPU threads (default: all)\n"
    "  --draft SPEC         speculative decoding through a DraftActor and a VerifierActor: 'ngram' (prompt\n"
    "                       lookup), 'self:N' (the model's own first N layers), 'job:FILE.toml' (the model a\n"
    "                       Troupe job trained, e.g. examples/jobs/draft_distill.toml) or a GGUF of a small\n"
    "                       model with the same tokenizer; the output is the model's own (identical when greedy)\n"
    "  --draft-k K          at most K drafted tokens per round (default 8; adapted to the acceptance rate)\n";

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  std::string model_path, prompt, system;
  bool chat = false, has_system = false, ignore_eos = false;
  int max_tokens = 128, threads = 0;
  model::Sampling s;
  std::vector<std::string> stops;
  std::string draft_spec;
  int draft_k = 8;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("troupe generate: " + a + " needs a value\n" + kGenerateUsage);
      return argv[++i];
    };
    auto number = [&](double lo, double hi) {
      std::string v = value();
      char* end = nullptr;
      double x = std::strtod(v.c_str(), &end);
      if (v.empty() || *end || !(x >= lo && x <= hi))
        throw std::runtime_error(strformat("troupe generate: %s '%s': expected a number from %g to %g", a.c_str(),
                                           v.c_str(), lo, hi));
      return x;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kGenerateUsage, stdout);
      return 0;
    } else if (a == "--model") {
      model_path = value();
    } else if (a == "--prompt") {
      prompt = value();
    } else if (a == "--chat") {
      chat = true;
    } else if (a == "--system") {
      system = value(), has_system = true;
    } else if (a == "--max-tokens") {
      max_tokens = int(number(0, 1 << 20));
    } else if (a == "--temperature") {
      s.temperature = float(number(0, 100));
    } else if (a == "--top-k") {
      s.top_k = int(number(0, 1 << 24));
    } else if (a == "--top-p") {
      s.top_p = float(number(0, 1));
    } else if (a == "--repetition-penalty") {
      s.repetition_penalty = float(number(0.01, 100));
    } else if (a == "--seed") {
      s.seed = uint64_t(number(0, 9007199254740992.0));
    } else if (a == "--stop") {
      stops.push_back(value());
    } else if (a == "--ignore-eos") {
      ignore_eos = true;
    } else if (a == "--draft") {
      draft_spec = value();
    } else if (a == "--draft-k") {
      draft_k = int(number(1, 64));
    } else if (a == "--threads") {
      threads = int(number(1, 1024));
    } else {
      throw std::runtime_error("troupe generate: unknown option " + a + "\n" + kGenerateUsage);
    }
  }
  if (model_path.empty()) throw std::runtime_error(std::string("troupe generate: --model is required\n") + kGenerateUsage);
  if (prompt.empty()) throw std::runtime_error(std::string("troupe generate: --prompt is required\n") + kGenerateUsage);
  if (threads) ops::set_num_threads(threads);
  auto t0 = std::chrono::steady_clock::now();
  auto file = GgufFile::open(model_path);
  if (!file) throw std::runtime_error(file.error().message);
  auto tok = Tokenizer::from_gguf(*file);
  if (!tok) throw std::runtime_error(model_path + ": " + tok.error().message);
  auto loaded = model::load_gguf_llama(*file);
  if (!loaded) throw std::runtime_error(loaded.error().message);
  double load_s = seconds_since(t0);
  std::string text = prompt;
  if (chat) {
    std::vector<ChatMessage> msgs;
    if (has_system) msgs.push_back({"system", system});
    msgs.push_back({"user", prompt});
    auto t = apply_chat_template(tok->chat_template(), msgs);
    if (!t) throw std::runtime_error(model_path + ": " + t.error().message);
    text = *t;
  }
  model::Sequence seq;
  seq.tokens = tok->encode(text);
  if (tok->add_bos() && tok->bos_id() >= 0) seq.tokens.insert(seq.tokens.begin(), tok->bos_id());
  const auto& cfg = loaded->config;
  int ctx = std::min<int>(cfg.max_seq_len, int(seq.tokens.size()) + max_tokens);
  // The end of a turn: <|im_end|> for chat models, else the file's EOS.
  int32_t eos = tok->eos_id();
  if (auto im_end = tok->token_id("<|im_end|>"); chat && im_end) eos = *im_end;
  const int V = cfg.vocab_size;
  const int prompt_tokens = int(seq.tokens.size());
  std::string out;
  auto t_prompt = std::chrono::steady_clock::now();
  double prompt_s = 0;
  int generated = 0;
  const bool tty = isatty(1);
  if (!chat) std::fputs(prompt.c_str(), stdout);
  // Each new token: false ends generation (EOS, a stop string, the context's end).
  auto emit = [&](int32_t next) {
    if (generated == 0) prompt_s = seconds_since(t_prompt);
    if (next == eos && !ignore_eos) return false;
    generated++;
    const std::string& piece = tok->token_bytes(next);
    out += piece;
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    if (tty) std::fflush(stdout);
    for (auto& st : stops)
      if (out.find(st) != std::string::npos) return false;
    if (prompt_tokens + generated >= cfg.max_seq_len) {
      std::fprintf(stderr, "\ntroupe generate: reached the model's context of %d tokens\n", cfg.max_seq_len);
      return false;
    }
    return generated < max_tokens;
  };
  std::string spec_note;
  if (draft_spec.empty()) {
    model::KvCache cache(cfg, (ctx + 15) / 16, 16);
    model::InferenceEngine eng(*loaded->model, cache);
    std::vector<float> logits(static_cast<size_t>(V));
    for (bool more = max_tokens > 0; more;) {
      auto r = eng.step({&seq});
      if (!r) throw std::runtime_error("troupe generate: " + r.error().message);
      std::copy(*r, *r + V, logits.begin());
      model::apply_repetition_penalty(logits.data(), V, seq.tokens, s.repetition_penalty);
      int32_t next = model::sample_token(logits.data(), V, s, uint64_t(generated));
      seq.tokens.push_back(next);
      more = emit(next);
    }
  } else {
    caf::actor_system_config acfg;
    caf::actor_system sys{acfg};
    std::shared_ptr<const model::Transformer> target(std::move(loaded->model));
    auto drafter = actors::make_drafter(draft_spec, target, ctx);
    if (!drafter) throw std::runtime_error("troupe generate: " + drafter.error().message);
    auto draft = actors::spawn_draft_actor(sys, *drafter);
    auto verifier = actors::spawn_verifier_actor(sys, target, (ctx + draft_k + 15) / 16 + 1, 16);
    model::SpeculativeStats st;
    auto r = actors::speculative_generate(sys, draft, verifier, seq.tokens, max_tokens, s, draft_k, &st, emit);
    caf::anon_send_exit(draft, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(verifier, caf::exit_reason::user_shutdown);
    if (!r) throw std::runtime_error("troupe generate: " + r.error().message);
    spec_note = strformat("; drafter %s: %d rounds, %.0f%% of %d drafted tokens accepted, %.2f tokens per round",
                          draft_spec.c_str(), st.rounds, 100 * st.acceptance(), st.drafted,
                          st.rounds ? double(st.generated) / st.rounds : 0.0);
  }
  std::fputs("\n", stdout);
  std::fflush(stdout);
  double total = seconds_since(t_prompt);
  double decode_s = total - prompt_s;
  std::fprintf(stderr,
               "[%s: loaded in %.2f s; prompt %d tokens in %.3f s (%.0f tok/s); %d tokens generated at %.1f tok/s%s]\n",
               cfg.str().c_str(), load_s, prompt_tokens, prompt_s, double(prompt_tokens) / std::max(prompt_s, 1e-9), generated,
               generated > 1 ? double(generated - 1) / std::max(decode_s, 1e-9) : 0.0, spec_note.c_str());
  return 0;
}

}  // namespace troupe::app
