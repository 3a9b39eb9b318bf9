#include "apps/serve_engine.h"

#include <algorithm>
#include <chrono>

#include "ops/ops.h"

namespace troupe::app {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

int blocks_for(int64_t positions, int block_tokens) {
  return int((positions + block_tokens - 1) / block_tokens);
}

// Bytes at the end of s that start a UTF-8 character whose other bytes have not come yet
// (a token may hold part of a character).
size_t utf8_incomplete_tail(const std::string& s) {
  for (size_t i = 1; i <= std::min<size_t>(3, s.size()); i++) {
    unsigned char c = static_cast<unsigned char>(s[s.size() - i]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return len > i ? i : 0;
  }
  return 0;
}

// The longest end of s[from, ...) that is the beginning of a stop string: it may yet
// become one, so it is not shown.
size_t stop_prefix_tail(const std::string& s, size_t from, const std::vector<std::string>& stops) {
  size_t held = 0;
  for (const auto& stop : stops) {
    if (stop.empty()) continue;
    for (size_t k = std::min(stop.size() - 1, s.size() - from); k > held; k--)
      if (s.compare(s.size() - k, k, stop, 0, k) == 0) {
        held = k;
        break;
      }
  }
  return held;
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  return r == FinishReason::Stop ? "stop" : "length";
}

void Histogram::observe(double x) {
  size_t i = size_t(std::lower_bound(bounds.begin(), bounds.end(), x) - bounds.begin());
  counts[i]++;
  sum += x;
  count++;
}

struct ServeEngine::Active {
  ServeRequest req;
  model::Sequence seq;    // prompt, then the answer's tokens
  int blocks_needed = 0;  // the most blocks it can hold: prompt + max_tokens, capped at the context
  std::string text;       // the answer so far
  size_t sent = 0;        // bytes of text already handed to the callback
  Clock::time_point submitted;
  bool started = false;  // has had its first update (time to first token)
  bool done = false, ok = false, cancelled = false;
  int generated() const { return int(seq.tokens.size() - req.prompt.size()); }
};

ServeEngine::ServeEngine(const model::Transformer& weights, const Tokenizer& tok, ServeOptions opt)
    : tok_(tok),
      opt_(opt),
      ctx_(weights.config().max_seq_len),
      vocab_(weights.config().vocab_size),
      cache_(weights.config(),
             opt.kv_blocks > 0 ? opt.kv_blocks : blocks_for(int64_t(opt.max_batch) * ctx_, opt.block_tokens),
             opt.block_tokens),
      engine_(weights, cache_) {
  TROUPE_CHECK(opt.max_batch > 0 && opt.queue > 0, "ServeEngine: max_batch and queue must be positive");
  stats_.kv_blocks_total = cache_.num_blocks();
  thread_ = std::thread([this] { worker(); });
}

ServeEngine::~ServeEngine() {
  stop();
}

SubmitResult ServeEngine::submit(ServeRequest r) {
  auto refuse = [&](SubmitStatus s, std::string msg) {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.requests_total++;
    stats_.requests_rejected++;
    return SubmitResult{s, std::move(msg)};
  };
  if (!r.on_update) return refuse(SubmitStatus::Invalid, "the request has no callback");
  if (r.prompt.empty()) return refuse(SubmitStatus::Invalid, "the prompt is empty");
  if (r.max_tokens < 0)
    return refuse(SubmitStatus::Invalid, strformat("max_tokens is %d; it must be >= 0", r.max_tokens));
  for (size_t i = 0; i < r.prompt.size(); i++)
    if (r.prompt[i] < 0 || r.prompt[i] >= vocab_)
      return refuse(SubmitStatus::Invalid, strformat("prompt token %d at position %zu is outside the vocabulary of %d",
                                                     r.prompt[i], i, vocab_));
  const int64_t n = int64_t(r.prompt.size());
  if (n > ctx_)
    return refuse(
        SubmitStatus::ContextLength,
        strformat("the prompt has %lld tokens, more than the model's context of %d tokens", (long long)n, ctx_));
  auto a = std::make_unique<Active>();
  a->blocks_needed = blocks_for(std::min<int64_t>(n + r.max_tokens, ctx_), cache_.block_tokens());
  if (a->blocks_needed > cache_.num_blocks())
    return refuse(SubmitStatus::TooLarge,
                  strformat("the prompt (%lld tokens) and max_tokens (%d) need %d KV blocks of %d positions, more than "
                            "the %d of the cache: lower max_tokens or raise --kv-blocks",
                            (long long)n, r.max_tokens, a->blocks_needed, cache_.block_tokens(), cache_.num_blocks()));
  a->seq.tokens = r.prompt;
  a->req = std::move(r);
  a->submitted = Clock::now();
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.requests_total++;
    if (stopping_) {
      stats_.requests_rejected++;
      return {SubmitStatus::Stopped, "the server is shutting down"};
    }
    if (int(queue_.size()) >= opt_.queue) {
      stats_.requests_rejected++;
      return {SubmitStatus::QueueFull,
              strformat("queue full: %d requests are waiting (--queue %d)", int(queue_.size()), opt_.queue)};
    }
    queue_.push_back(std::move(a));
  }
  cv_.notify_one();
  return {};
}

void ServeEngine::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  std::lock_guard<std::mutex> lk(join_mu_);
  if (thread_.joinable()) thread_.join();
}

ServeStats ServeEngine::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  ServeStats s = stats_;
  s.waiting = int(queue_.size());
  return s;
}

int ServeEngine::reserved_blocks() const {
  int r = 0;
  for (const auto& a : running_)
    if (!a->done) r += a->blocks_needed - int(a->seq.blocks.size());
  return r;
}

// Under mu_: moves requests from the queue into the batch, first come first served, while
// the batch has room and the pool can hold each to its end.
void ServeEngine::admit(std::vector<std::pair<Active*, ServeUpdate>>& out) {
  while (!queue_.empty() && int(running_.size()) < opt_.max_batch) {
    Active& a = *queue_.front();
    if (a.req.max_tokens > 0) {
      engine_.reuse_prefix(a.seq);
      int more = a.blocks_needed - int(a.seq.blocks.size());
      if (more > cache_.free_blocks() - reserved_blocks()) {
        engine_.release(a.seq);  // wait for running requests to give blocks back
        break;
      }
      stats_.prompt_tokens += a.req.prompt.size();
      stats_.prompt_tokens_cached += uint64_t(a.seq.reused);
    } else {  // nothing to generate: done without a step
      ServeUpdate u;
      u.done = true;
      u.finish = FinishReason::Length;
      a.done = a.ok = true;
      out.push_back({&a, u});
    }
    running_.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  stats_.running = int(running_.size());
}

// Hands over the answer's new text: all of it when the request ends, else all but what a
// stop string or an unfinished UTF-8 character may still claim.
void ServeEngine::emit_text(Active& a, bool final, ServeUpdate& u) {
  size_t end = a.text.size();
  if (!final) end -= std::max(utf8_incomplete_tail(a.text), stop_prefix_tail(a.text, a.sent, a.req.stop));
  u.text = a.text.substr(a.sent, end - a.sent);
  a.sent = end;
}

// One engine step over every running request, and one sampled token for each.
void ServeEngine::decode_step(std::vector<std::pair<Active*, ServeUpdate>>& out) {
  std::vector<model::Sequence*> batch;
  std::vector<Active*> who;
  for (auto& a : running_)
    if (!a->done) {
      batch.push_back(&a->seq);
      who.push_back(a.get());
    }
  if (batch.empty()) return;
  auto t0 = Clock::now();
  auto r = engine_.step(batch);
  double dt = seconds_since(t0);
  uint64_t tokens = 0;
  for (size_t i = 0; i < who.size(); i++) {
    Active& a = *who[i];
    ServeUpdate u;
    if (!r) {
      u.done = a.done = true;
      u.error = strformat("engine step failed: %s", r.error().message.c_str());
      out.push_back({&a, u});
      continue;
    }
    const float* logits = *r + int64_t(i) * vocab_;
    if (a.req.sampling.repetition_penalty != 1.0f) {
      logits_.assign(logits, logits + vocab_);
      model::apply_repetition_penalty(logits_.data(), vocab_, a.seq.tokens, a.req.sampling.repetition_penalty);
      logits = logits_.data();
    }
    // Draw index = the request's own token count: the same tokens whatever the batch.
    int32_t next = model::sample_token(logits, vocab_, a.req.sampling, uint64_t(a.generated()));
    if (next == a.req.eos) {
      u.done = a.done = a.ok = true;
      u.finish = FinishReason::Stop;
    } else {
      a.seq.tokens.push_back(next);
      a.text += tok_.token_bytes(next);
      u.token = next;
      tokens++;
      size_t cut = std::string::npos;
      for (const auto& stop : a.req.stop)
        if (!stop.empty()) cut = std::min(cut, a.text.find(stop, a.sent));
      if (cut != std::string::npos) {
        a.text.resize(cut);
        u.done = a.done = a.ok = true;
        u.finish = FinishReason::Stop;
      } else if (a.generated() >= a.req.max_tokens || int(a.seq.tokens.size()) >= ctx_) {
        u.done = a.done = a.ok = true;
        u.finish = FinishReason::Length;
      }
    }
    emit_text(a, u.done, u);
    u.completion_tokens = a.generated();
    out.push_back({&a, u});
  }
  std::lock_guard<std::mutex> lk(mu_);
  stats_.step_seconds.observe(dt);
  stats_.generation_tokens += tokens;
}

void ServeEngine::worker() {
  if (opt_.threads > 0) ops::set_num_threads(opt_.threads);  // OpenMP settings are per thread
  std::vector<std::pair<Active*, ServeUpdate>> out;
  for (;;) {
    out.clear();
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !queue_.empty() || !running_.empty(); });
      if (stopping_) break;
      admit(out);
    }
    decode_step(out);
    // Callbacks run without the lock: submit never waits on a slow client.
    std::vector<double> ttft;
    for (auto& [a, u] : out) {
      if (!a->started) {
        a->started = true;
        ttft.push_back(seconds_since(a->submitted));
      }
      if (!a->req.on_update(u) && !u.done) a->done = a->cancelled = true;
    }
    std::lock_guard<std::mutex> lk(mu_);
    for (double t : ttft) stats_.ttft_seconds.observe(t);
    for (auto& a : running_)
      if (a->done) {
        engine_.release(a->seq);
        (a->cancelled ? stats_.requests_cancelled : a->ok ? stats_.requests_ok : stats_.requests_errored)++;
      }
    std::erase_if(running_, [](const std::unique_ptr<Active>& a) { return a->done; });
    stats_.running = int(running_.size());
    stats_.kv_blocks_used = cache_.num_blocks() - cache_.free_blocks();
  }
  // Shutting down: end what is left, queued or running.
  std::deque<std::unique_ptr<Active>> left;
  {
    std::lock_guard<std::mutex> lk(mu_);
    left.swap(queue_);
  }
  for (auto& a : running_) left.push_back(std::move(a));
  running_.clear();
  ServeUpdate u;
  u.done = true;
  u.error = "server shutting down";
  for (auto& a : left) {
    u.completion_tokens = a->generated();
    a->req.on_update(u);
    engine_.release(a->seq);
  }
  std::lock_guard<std::mutex> lk(mu_);
  stats_.requests_errored += left.size();
  stats_.running = 0;
  stats_.kv_blocks_used = cache_.num_blocks() - cache_.free_blocks();
}

}  // namespace troupe::app
