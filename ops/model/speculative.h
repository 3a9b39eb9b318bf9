#pragma once
// Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a cheap drafter proposes
// k tokens, the target scores all of them in one forward, and the exact rule keeps the
// output distribution the target's own: draft token x with draft probability q(x) is
// accepted with probability min(1, p(x) / q(x)); at the first rejection the token is
// drawn from norm(max(0, p - q)); when all k are accepted one bonus token is drawn from
// the target's next distribution. At temperature 0 this is "keep the longest prefix the
// target's argmax agrees with": output identical to target-only greedy decoding.
//
// Drafters here: prompt lookup (n-gram matches in the context, Saxena 2023), and a model
// drafter that is either a small model with the same tokenizer or the target's own first
// layers (self-speculation, as LayerSkip/Draft&Verify).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "ops/model/generate.h"
#include "ops/model/inference.h"

namespace troupe::model {

struct Draft {
  std::vector<int32_t> tokens;
  // q[i]: the distribution tokens[i] was drawn from (V values); empty when the proposal
  // is deterministic (prompt lookup, greedy drafting), i.e. q is one-hot on the token.
  std::vector<std::vector<float>> q;
};

struct Verdict {
  std::vector<int32_t> tokens;  // the accepted draft tokens, then one more (correction or bonus)
  int accepted = 0;
};

// The exact rule. p[i] (i = 0..k) is the target's distribution after context + the first
// i draft tokens (from sampling_distribution). Randomness: RngStream(seed, {round, j}).
Verdict verify_draft(const Draft& d, const std::vector<const float*>& p, int V, uint64_t seed, uint64_t round);

class Drafter {
 public:
  virtual ~Drafter() = default;
  virtual std::string name() const = 0;
  // Up to k tokens to follow `context` (fewer, or none, when it has no guess).
  virtual Expected<Draft> propose(const std::vector<int32_t>& context, int k, const Sampling& s, uint64_t round) = 0;
};

// Prompt lookup: the longest n-gram (n from max_n down to min_n) that ends the context and
// occurred earlier in it; proposes the tokens that followed its latest earlier occurrence.
class NgramDrafter : public Drafter {
 public:
  NgramDrafter(int max_n = 3, int min_n = 1) : max_n_(max_n), min_n_(min_n) {}
  std::string name() const override { return "ngram"; }
  Expected<Draft> propose(const std::vector<int32_t>& context, int k, const Sampling& s, uint64_t round) override;

 private:
  int max_n_, min_n_;
};

// A model drafter with its own KV cache: a small model sharing the target's vocabulary,
// or the target itself cut to its first `layers` layers (self-speculation). It keeps its
// sequence in step with the context it is asked about (truncating what was rejected).
class ModelDrafter : public Drafter {
 public:
  ModelDrafter(const Transformer& model, int layers, int kv_blocks, std::string name);
  // The same, keeping the model alive.
  ModelDrafter(std::shared_ptr<const Transformer> model, int layers, int kv_blocks, std::string name);
  std::string name() const override { return name_; }
  Expected<Draft> propose(const std::vector<int32_t>& context, int k, const Sampling& s, uint64_t round) override;

 private:
  std::shared_ptr<const Transformer> owned_;
  std::string name_;
  ModelConfig cache_cfg_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<InferenceEngine> engine_;
  Sequence seq_;
};

// The draft length, adapted to the running acceptance rate (an exponential average):
// one more while nearly all drafts pass, one fewer while few do.
struct AdaptiveK {
  int k_max = 8, k = 4;
  double rate = 0.5;
  void update(int accepted, int drafted);
};

// The target's half of a round: appends the draft to seq (whose last token is not yet
// computed), scores it in one forward, applies the rule, drops the rejected positions
// and appends the correction or bonus token (not yet computed).
Expected<Verdict> verify_on_target(InferenceEngine& target, Sequence& seq, const Draft& d, const Sampling& s,
                                   uint64_t round);

struct SpeculativeStats {
  int rounds = 0, drafted = 0, accepted = 0, generated = 0;
  double acceptance() const { return drafted ? double(accepted) / drafted : 0; }
};

// The client's side of speculative decoding, whoever drafts and verifies (one thread, or
// the draft and verifier actors): up to max_new tokens after the prompt, each round
// asking propose(context, k, round) for at most k tokens (k adapted, and cut so the
// context stays below max_context) and verify(draft, round) for the verdict; counts into
// stats; on_token may stop it (false).
using ProposeFn = std::function<Expected<Draft>(const std::vector<int32_t>& context, int k, uint64_t round)>;
using VerifyFn = std::function<Expected<Verdict>(const Draft& draft, uint64_t round)>;
Expected<std::vector<int32_t>> speculative_rounds(const std::vector<int32_t>& prompt, int max_new, int max_context,
                                                  AdaptiveK& k, SpeculativeStats& stats, const ProposeFn& propose,
                                                  const VerifyFn& verify,
                                                  const std::function<bool(int32_t)>& on_token = nullptr);

// Decoding with a drafter against a target engine, in one thread (the actor form, with
// the drafter and the target in their own actors, is actors/speculative.h).
class SpeculativeDecoder {
 public:
  SpeculativeDecoder(InferenceEngine& target, Drafter& drafter, int k_max = 8, int k_start = 4);
  // Generates up to max_new tokens after the prompt; on_token may stop it (false).
  Expected<std::vector<int32_t>> generate(const std::vector<int32_t>& prompt, int max_new, const Sampling& s,
                                          const std::function<bool(int32_t)>& on_token = nullptr);
  const SpeculativeStats& stats() const { return stats_; }

 private:
  InferenceEngine& target_;
  Drafter& drafter_;
  AdaptiveK k_;
  SpeculativeStats stats_;
};

// A drafter from a spec: "ngram" (prompt lookup), "self:N" (the target's first N layers),
// or the path of a Llama GGUF with the target's vocabulary (a small model). Errors name
// the spec and what is wrong with it.
Expected<std::shared_ptr<Drafter>> make_drafter(const std::string& spec, std::shared_ptr<const Transformer> target,
                                                int max_seq_len);

// Checks what speculative decoding supports; the error says what is not.
Expected<void> check_speculative_sampling(const Sampling& s);

}  // namespace troupe::model
