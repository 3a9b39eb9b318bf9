// The continuous-batching core of `troupe serve` on SmolLM2-135M: a request gets the same
// tokens alone, batched with others, or joining a batch mid-run; the bounded queue refuses
// with "queue full"; stop strings, the end token, max_tokens and the context end requests
// with the right finish reason; a request that does not fit the KV pool waits for one that
// leaves; a client that goes away frees its blocks; stop() ends what is in flight.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "apps/serve_engine.h"
#include "core/chat.h"
#include "ops/model/gguf_model.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::app;

namespace {

// The model and tokenizer, loaded once (dequantizing every weight takes a second).
struct Smol {
  Tokenizer tok;
  model::LoadedModel m;
  int32_t im_end;
};
const Smol& smollm() {
  static std::unique_ptr<Smol> s = [] {
    std::string path = test::data_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    auto tok = Tokenizer::from_gguf_file(path);
    REQUIRE(tok.ok());
    auto m = model::load_gguf_llama(path, 512);  // context 512: a small KV pool by default
    REQUIRE(m.ok());
    int32_t im_end = tok->token_id("<|im_end|>").value();
    return std::make_unique<Smol>(Smol{std::move(*tok), std::move(*m), im_end});
  }();
  return *s;
}

std::vector<int32_t> chat_tokens(const std::string& user) {
  const Smol& s = smollm();
  return s.tok.encode(apply_chat_template(s.tok.chat_template(), {{"user", user}}).value());
}

// What a request's callback saw, and a wait for it to end.
struct Outcome {
  std::vector<int32_t> tokens;
  std::string text;  // the streamed pieces, concatenated
  bool done = false;
  FinishReason finish = FinishReason::Stop;
  std::string error;
  int completion_tokens = 0;
  int updates = 0;
};
class Collector {
 public:
  // on_update(n) runs at the n-th update; returning false stops listening. Everything
  // happens under the lock, so a waiter that saw the end may destroy the Collector.
  ServeCallback callback(std::function<bool(int)> on_update = nullptr) {
    return [this, on_update](const ServeUpdate& u) {
      std::lock_guard<std::mutex> lk(mu_);
      if (u.token >= 0) out_.tokens.push_back(u.token);
      out_.text += u.text;
      out_.completion_tokens = u.completion_tokens;
      if (u.done) out_.done = true, out_.finish = u.finish, out_.error = u.error;
      bool listening = on_update ? on_update(++out_.updates) : (++out_.updates, true);
      cv_.notify_all();
      return listening;
    };
  }
  Outcome wait() {
    std::unique_lock<std::mutex> lk(mu_);
    REQUIRE(cv_.wait_for(lk, std::chrono::minutes(5), [&] { return out_.done; }));
    return out_;
  }
  void wait_updates(int n) {
    std::unique_lock<std::mutex> lk(mu_);
    REQUIRE(cv_.wait_for(lk, std::chrono::minutes(5), [&] { return out_.updates >= n || out_.done; }));
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  Outcome out_;
};

ServeRequest request(std::vector<int32_t> prompt, int max_tokens, int32_t eos = -1) {
  ServeRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.eos = eos;
  r.on_update = [](const ServeUpdate&) { return true; };
  return r;
}

Outcome run_alone(ServeEngine& e, ServeRequest r) {
  Collector c;
  r.on_update = c.callback();
  auto s = e.submit(std::move(r));
  REQUIRE(s.ok());
  return c.wait();
}

// Waits for the worker to retire everything (stats are updated after each step).
ServeStats idle_stats(ServeEngine& e) {
  for (int i = 0; i < 3000; i++) {
    ServeStats st = e.stats();
    if (st.running == 0 && st.waiting == 0) return st;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("the engine did not become idle");
  return {};
}

// Four requests of different lengths, greedy and sampled, chat and plain text.
std::vector<ServeRequest> mixed_requests() {
  const Smol& s = smollm();
  std::vector<ServeRequest> rs;
  rs.push_back(request(chat_tokens("What is the capital of France?"), 12, s.im_end));
  rs.push_back(request(chat_tokens("Write a haiku about the sea."), 12, s.im_end));
  rs.push_back(request(s.tok.encode("It is a truth universally acknowledged, that a single man"), 12));
  rs.push_back(request(s.tok.encode("The quick brown fox"), 12));
  rs[3].sampling.temperature = 0.8f;
  rs[3].sampling.top_p = 0.95f;
  rs[3].sampling.seed = 42;
  return rs;
}

}  // namespace

TEST_CASE("serve: a request gets the same tokens alone and batched", "[serve]") {
  const Smol& s = smollm();
  ServeEngine e(*s.m.model, s.tok, {.max_batch = 4});
  std::vector<Outcome> alone;
  for (auto& r : mixed_requests()) alone.push_back(run_alone(e, r));
  std::vector<Collector> cs(4);
  auto rs = mixed_requests();
  for (size_t i = 0; i < rs.size(); i++) {
    rs[i].on_update = cs[i].callback();
    REQUIRE(e.submit(std::move(rs[i])).ok());
  }
  for (size_t i = 0; i < cs.size(); i++) {
    Outcome b = cs[i].wait();
    INFO("request " << i << ": alone '" << alone[i].text << "', batched '" << b.text << "'");
    CHECK(b.error.empty());
    CHECK(b.tokens == alone[i].tokens);
    CHECK(b.text == alone[i].text);
    CHECK(b.finish == alone[i].finish);
  }
  CHECK(alone[0].text.find("Paris") != std::string::npos);
  ServeStats st = idle_stats(e);
  CHECK(st.requests_ok == 8);
  CHECK(st.prompt_tokens_cached > 0);  // the chat prompts share the template's system message
  CHECK(st.kv_blocks_used == 0);
  CHECK(st.step_seconds.count > 0);
  CHECK(st.ttft_seconds.count == 8);
}

TEST_CASE("serve: a request joins a running batch and leaves before it ends", "[serve]") {
  const Smol& s = smollm();
  ServeEngine e(*s.m.model, s.tok, {.max_batch = 4});
  auto long_req = [&] { return request(s.tok.encode("Once upon a time, in a small village by the sea,"), 24); };
  auto short_req = [&] { return request(chat_tokens("Name a colour."), 6, s.im_end); };
  Outcome a_alone = run_alone(e, long_req()), b_alone = run_alone(e, short_req());

  std::mutex mu;
  std::vector<std::string> order;  // "a3": a's 3rd update, in the order the worker gave them
  auto log = [&](const char* who) {
    return [&, who](int n) {
      std::lock_guard<std::mutex> lk(mu);
      std::string ev = who;
      ev += std::to_string(n);
      order.push_back(ev);
      return true;
    };
  };
  Collector a, b;
  ServeRequest ra = long_req(), rb = short_req();
  ra.on_update = a.callback(log("a"));
  rb.on_update = b.callback(log("b"));
  REQUIRE(e.submit(std::move(ra)).ok());
  a.wait_updates(4);
  REQUIRE(e.submit(std::move(rb)).ok());
  Outcome oa = a.wait(), ob = b.wait();
  CHECK(oa.tokens == a_alone.tokens);
  CHECK(ob.tokens == b_alone.tokens);
  // b started while a ran and was done before a.
  auto at = [&](char who, int n) {
    std::string ev(1, who);
    ev += std::to_string(n);
    return std::find(order.begin(), order.end(), ev) - order.begin();
  };
  INFO("updates in order: " << Catch::Detail::stringify(order));
  CHECK(at('a', 1) < at('b', 1));
  CHECK(at('b', 1) < at('a', oa.updates));
  CHECK(at('b', ob.updates) < at('a', oa.updates));
}

TEST_CASE("serve: the queue is bounded", "[serve]") {
  const Smol& s = smollm();
  ServeEngine e(*s.m.model, s.tok, {.max_batch = 1, .queue = 1});
  auto prompt = s.tok.encode("A long walk in the countryside");
  Collector a, b;
  ServeRequest ra = request(prompt, 24), rb = request(prompt, 4), rc = request(prompt, 4);
  ra.on_update = a.callback();
  rb.on_update = b.callback();
  REQUIRE(e.submit(std::move(ra)).ok());
  a.wait_updates(1);                               // a runs (the batch is full)...
  REQUIRE(e.submit(std::move(rb)).ok());           // ... b waits in the queue ...
  SubmitResult refused = e.submit(std::move(rc));  // ... and c finds it full
  CHECK(refused.status == SubmitStatus::QueueFull);
  CHECK(refused.message == "queue full: 1 requests are waiting (--queue 1)");
  ServeStats mid = e.stats();
  CHECK(mid.waiting == 1);
  CHECK(mid.running == 1);
  CHECK(a.wait().completion_tokens == 24);
  CHECK(b.wait().completion_tokens == 4);
  ServeStats st = idle_stats(e);
  CHECK(st.requests_total == 3);
  CHECK(st.requests_rejected == 1);
  CHECK(st.requests_ok == 2);
  CHECK(st.generation_tokens == 28);
}

TEST_CASE("serve: finish reasons: stop strings, the end token, max_tokens", "[serve]") {
  const Smol& s = smollm();
  ServeEngine e(*s.m.model, s.tok, {});
  auto prompt = s.tok.encode("It is a truth universally acknowledged, that a single man");
  Outcome full = run_alone(e, request(prompt, 16));
  CHECK(full.finish == FinishReason::Length);
  CHECK(full.completion_tokens == 16);
  CHECK(full.tokens.size() == 16);
  CHECK(full.text == s.tok.decode(full.tokens));

  // A stop string from the middle of that answer: the answer ends just before it.
  const std::string stop = full.text.substr(full.text.size() / 2, 4);
  ServeRequest r = request(prompt, 16);
  r.stop = {"never in this text", stop};
  Outcome cut = run_alone(e, r);
  INFO("answer '" << full.text << "', stop '" << stop << "'");
  CHECK(cut.finish == FinishReason::Stop);
  CHECK(cut.text == full.text.substr(0, full.text.find(stop)));
  CHECK(cut.tokens.size() < full.tokens.size());
  CHECK(std::equal(cut.tokens.begin(), cut.tokens.end(), full.tokens.begin()));

  // The end of the turn ends a chat answer; it is not part of it.
  Outcome chat = run_alone(e, request(chat_tokens("What is the capital of France?"), 64, s.im_end));
  CHECK(chat.finish == FinishReason::Stop);
  CHECK(chat.tokens.size() < 64);
  CHECK(chat.text.find("Paris") != std::string::npos);
  CHECK(chat.text.find("<|im_end|>") == std::string::npos);

  Outcome none = run_alone(e, request(prompt, 0));
  CHECK(none.finish == FinishReason::Length);
  CHECK(none.tokens.empty());
  CHECK(idle_stats(e).requests_ok == 4);
}

TEST_CASE("serve: the context and the KV pool bound a request", "[serve]") {
  const Smol& s = smollm();
  ServeEngine e(*s.m.model, s.tok, {});
  REQUIRE(e.context() == 512);
  std::vector<int32_t> text = s.tok.encode("The sea was calm and the sky was grey. ");
  std::vector<int32_t> too_long;
  while (too_long.size() <= 512) too_long.insert(too_long.end(), text.begin(), text.end());
  SubmitResult r = e.submit(request(too_long, 4));
  CHECK(r.status == SubmitStatus::ContextLength);
  std::string expected = "the prompt has ";
  expected += std::to_string(too_long.size());
  expected += " tokens, more than the model's context of 512 tokens";
  CHECK(r.message == expected);
  // A prompt 3 short of the context: 3 tokens, then "length".
  std::vector<int32_t> near(too_long.begin(), too_long.begin() + 509);
  Outcome o = run_alone(e, request(near, 100));
  CHECK(o.error.empty());
  CHECK(o.finish == FinishReason::Length);
  CHECK(o.completion_tokens == 3);

  CHECK(e.submit(request({}, 4)).status == SubmitStatus::Invalid);
  CHECK(e.submit(request({1, 49152}, 4)).message ==
        "prompt token 49152 at position 1 is outside the vocabulary of 49152");
  CHECK(e.submit(request({1}, -1)).message == "max_tokens is -1; it must be >= 0");

  // A pool of 4 blocks (64 positions): a request needing 5 is refused; two needing 3 each
  // run one after the other, and get their tokens as if alone.
  ServeEngine small(*s.m.model, s.tok, {.max_batch = 2, .kv_blocks = 4});
  CHECK(small.submit(request(text, 80)).status == SubmitStatus::TooLarge);
  auto p1 = s.tok.encode("Roses are red,"), p2 = s.tok.encode("One, two, three,");
  Outcome a_alone = run_alone(small, request(p1, 30)), b_alone = run_alone(small, request(p2, 30));
  Collector a, b;
  std::atomic<bool> a_done{false}, b_started_after_a{false};
  ServeRequest ra = request(p1, 30), rb = request(p2, 30);
  ra.on_update = a.callback([&](int n) {
    if (n == 30) a_done = true;
    return true;
  });
  rb.on_update = b.callback([&](int n) {
    if (n == 1) b_started_after_a = a_done.load();
    return true;
  });
  REQUIRE(small.submit(std::move(ra)).ok());
  REQUIRE(small.submit(std::move(rb)).ok());
  CHECK(a.wait().tokens == a_alone.tokens);
  CHECK(b.wait().tokens == b_alone.tokens);
  CHECK(b_started_after_a);
}

TEST_CASE("serve: a client that goes away frees its blocks, and stop ends what is in flight", "[serve]") {
  const Smol& s = smollm();
  ServeEngine e(*s.m.model, s.tok, {});
  auto prompt = s.tok.encode("A story about a lighthouse keeper");
  Collector c;
  ServeRequest r = request(prompt, 100);
  r.on_update = c.callback([](int n) { return n < 3; });  // stops listening after 3 tokens
  REQUIRE(e.submit(std::move(r)).ok());
  ServeStats st = idle_stats(e);
  CHECK(st.requests_cancelled == 1);
  CHECK(st.kv_blocks_used == 0);
  CHECK(st.generation_tokens == 3);

  Collector d;
  ServeRequest rd = request(prompt, 400);
  rd.on_update = d.callback();
  REQUIRE(e.submit(std::move(rd)).ok());
  d.wait_updates(2);
  e.stop();
  Outcome o = d.wait();
  CHECK(o.error == "server shutting down");
  CHECK(e.submit(request(prompt, 4)).status == SubmitStatus::Stopped);
  CHECK(e.stats().requests_errored == 1);
}
