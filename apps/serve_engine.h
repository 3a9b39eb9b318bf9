#pragma once
// ServeEngine: the core of `troupe serve`, continuous batching over one InferenceEngine.
//
// Requests enter a bounded queue (submit refuses one when it is full, so the HTTP layer
// can answer 429 rather than let latency grow without bound). One worker thread owns the
// InferenceEngine and its KvCache (the engine is not thread-safe) and loops: admit waiting
// requests into the running batch while the batch has room and the KV pool can hold them
// to the end, run ONE engine step over every running sequence (whole prompts of the new
// ones, one token of the others), sample one token for each with the request's own
// Sampling, hand it to the request's callback, and retire the requests that finished. So
// requests join and leave the batch at every step, as in vLLM and Orca.
//
// Reproducibility: token i of a request is sampled with draw index i of its own seed, so
// its output does not depend on what else is in the batch, up to rounding: a step whose
// rows include a new prompt runs GEMMs instead of GEMVs, which may change the last bits
// of the logits (tests/apps/serve_test.cpp checks that tokens do not change).
//
// KV blocks are reserved, not preempted: a request is admitted only when the free blocks,
// less what the running requests may still take, hold its prompt plus max_tokens (capped at
// the context). A running request therefore never runs out of blocks mid-answer.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/tokenizer.h"
#include "ops/model/generate.h"
#include "ops/model/inference.h"

namespace troupe::app {

// OpenAI's finish reasons: "stop" (the end token or a stop string) and "length" (max_tokens
// or the context).
enum class FinishReason { Stop, Length };
const char* finish_reason_name(FinishReason r);

// What a request's callback sees: one update per engine step while it runs, the last with
// done set. text is new answer text, possibly empty: bytes that could begin a stop string
// or end inside a UTF-8 character are held back until they are known to belong.
struct ServeUpdate {
  int32_t token = -1;  // this step's token; -1 when none is part of the answer (end token, error)
  std::string text;
  bool done = false;
  FinishReason finish = FinishReason::Stop;  // with done
  std::string error;                         // with done: why the request failed, or empty
  int completion_tokens = 0;                 // answer tokens so far
};

// Called on the worker thread; returns false when nobody listens any more (the client
// went away): the request is then dropped at once and its blocks freed.
using ServeCallback = std::function<bool(const ServeUpdate&)>;

struct ServeRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 16;
  model::Sampling sampling;       // sampling.seed is the request's own seed
  std::vector<std::string> stop;  // finish when the answer contains one (it is cut before it)
  int32_t eos = -1;               // the token that ends the answer (<|im_end|> for chat); -1: none
  ServeCallback on_update;
};

struct ServeOptions {
  int max_batch = 8;  // requests in one engine step
  int queue = 64;     // requests waiting for a place in the batch
  int kv_blocks = 0;  // 0: enough for max_batch requests of the whole context
  int block_tokens = 16;
  int threads = 0;  // OpenMP threads of the worker (0: all)
};

enum class SubmitStatus {
  Accepted,
  QueueFull,      // HTTP 429
  ContextLength,  // the prompt is longer than the context
  Invalid,        // empty prompt, a token outside the vocabulary, negative max_tokens
  TooLarge,       // prompt plus max_tokens need more KV blocks than the whole pool
  Stopped,        // the engine is shutting down
};
struct SubmitResult {
  SubmitStatus status = SubmitStatus::Accepted;
  std::string message;
  bool ok() const { return status == SubmitStatus::Accepted; }
};

// Prometheus-style histogram: counts[i] observations <= bounds[i], the last one +Inf.
struct Histogram {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;  // bounds.size() + 1, not cumulative
  double sum = 0;
  uint64_t count = 0;
  explicit Histogram(std::vector<double> b = {}) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
  void observe(double x);
};

// Counters for /metrics, copied under the engine's lock.
struct ServeStats {
  uint64_t requests_total = 0;        // every submit
  uint64_t requests_ok = 0;           // finished with "stop" or "length"
  uint64_t requests_errored = 0;      // ended by an engine error or shutdown
  uint64_t requests_cancelled = 0;    // their callback stopped listening
  uint64_t requests_rejected = 0;     // refused by submit (queue full, too long, invalid)
  uint64_t prompt_tokens = 0;         // of admitted requests
  uint64_t prompt_tokens_cached = 0;  // of those, taken from the prefix cache
  uint64_t generation_tokens = 0;
  int running = 0, waiting = 0;
  int kv_blocks_used = 0, kv_blocks_total = 0;
  Histogram step_seconds{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}};
  Histogram ttft_seconds{{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}};  // submit to first token
};

class ServeEngine {
 public:
  // weights: the whole Llama model (its max_seq_len is the context); weights and tok must
  // outlive the engine. Starts the worker.
  ServeEngine(const model::Transformer& weights, const Tokenizer& tok, ServeOptions opt);
  ~ServeEngine();  // stop()
  ServeEngine(const ServeEngine&) = delete;
  ServeEngine& operator=(const ServeEngine&) = delete;

  SubmitResult submit(ServeRequest r);
  // Ends every queued and running request with the error "server shutting down" and joins
  // the worker; later submits are refused. Idempotent.
  void stop();
  ServeStats stats() const;
  int context() const { return ctx_; }

 private:
  struct Active;
  void worker();
  void admit(std::vector<std::pair<Active*, ServeUpdate>>& out);
  void decode_step(std::vector<std::pair<Active*, ServeUpdate>>& out);
  void emit_text(Active& a, bool final, ServeUpdate& u);
  int reserved_blocks() const;

  const Tokenizer& tok_;
  const ServeOptions opt_;
  const int ctx_, vocab_;
  model::KvCache cache_;
  model::InferenceEngine engine_;
  std::vector<float> logits_;  // one sequence's logits, when a penalty changes them

  mutable std::mutex mu_;  // guards queue_, stats_, stopping_
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Active>> queue_;
  ServeStats stats_;
  bool stopping_ = false;

  std::vector<std::unique_ptr<Active>> running_;  // the worker's alone
  std::mutex join_mu_;                            // stop() from two threads joins once
  std::thread thread_;
};

}  // namespace troupe::app
