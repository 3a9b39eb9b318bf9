// `troupe serve --model GGUF`: an OpenAI-compatible HTTP server over the continuous-
// batching ServeEngine (apps/serve_engine.h), so the official clients, curl and load
// tools talk to Troupe unchanged:
//
//   POST /v1/completions, POST /v1/chat/completions  (stream: server-sent events)
//   GET  /v1/models, GET /health, GET /metrics (Prometheus text)
//
// HTTP threads (cpp-httplib's pool) parse, tokenize and submit; the engine's worker owns
// the model. Each request waits on its own small mailbox that the worker's callback fills,
// so a slow client never slows the batch, and a client that goes away is dropped at the
// next step. Errors have OpenAI's shape ({"error": {message, type, param, code}}).

#include <httplib.h>
#include <semaphore.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "apps/commands.h"
#include "apps/serve_engine.h"
#include "core/chat.h"
#include "core/gguf.h"
#include "core/tokenizer.h"
#include "ops/model/gguf_model.h"

namespace troupe::app {

namespace {

using nlohmann::json;

const char* kServeUsage =
    "usage: troupe serve --model GGUF [options]\n"
    "  --model PATH      a Llama-architecture GGUF (data/SmolLM2-135M-Instruct.Q4_1.gguf)\n"
    "  --host HOST       address to listen on (default 127.0.0.1)\n"
    "  --port N          port (default 8000; 0: any free port, printed at start)\n"
    "  --max-batch N     requests decoded together in one step (default 8)\n"
    "  --queue N         requests waiting for a place in the batch; more get HTTP 429 (default 64)\n"
    "  --kv-blocks N     KV cache blocks of 16 positions (default: max-batch full contexts)\n"
    "  --ctx N           context length in tokens (default: 2048, at most the model's)\n"
    "  --threads N       CPU threads of the engine (default: all)\n";

struct ApiError {
  int status = 400;
  std::string message, type = "invalid_request_error", param, code;
};

ApiError invalid(std::string message, std::string param, std::string code = "") {
  return {400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

// Bytes of an answer may end inside a UTF-8 character or be invalid: replace, never throw.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json error_json(const ApiError& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)},
            {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump(error_json(e)), "application/json");
}

// The model being served and what every handler needs.
struct Served {
  Served(std::string model_id, const Tokenizer& t, ServeEngine& e)
      : id(std::move(model_id)),
        tok(t),
        engine(e),
        eos(t.eos_id()),
        im_end(t.token_id("<|im_end|>").value_or(t.eos_id())),
        created(int64_t(std::time(nullptr))),
        id_prefix(strformat("%08x-", unsigned(std::random_device()()))) {}
  const std::string id;  // the GGUF's file stem
  const Tokenizer& tok;
  ServeEngine& engine;
  const int32_t eos, im_end;  // the end of a completion; of a chat turn
  const int64_t created;
  const std::string id_prefix;  // random per process, so ids differ across restarts
  std::atomic<uint64_t> next_id{0};
};

// A request as the engine will take it, with the HTTP-only options.
struct Parsed {
  ServeRequest req;
  bool stream = false, include_usage = false;
};

// An optional number field of the body in [lo, hi], or an error naming it.
std::optional<ApiError> number_field(const json& body, const char* name, double lo, double hi, float& out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number() || !(it->get<double>() >= lo && it->get<double>() <= hi))
    return invalid(strformat("%s must be a number from %g to %g, got %s", name, lo, hi, dump(*it).c_str()), name);
  out = it->get<float>();
  return std::nullopt;
}

// The request fields that completions and chat completions share.
std::optional<ApiError> parse_common(const json& body, const Served& s, bool chat, Parsed& p) {
  if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>() != s.id) {
      ApiError e{404,
                 strformat("The model %s does not exist; this server serves '%s'", dump(*it).c_str(), s.id.c_str()),
                 "invalid_request_error", "model", "model_not_found"};
      return e;
    }
  }
  // max_tokens; chat's newer name for it is max_completion_tokens. Default: OpenAI's 16 for
  // completions, the rest of the context for chat.
  p.req.max_tokens = chat ? s.engine.context() : 16;
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    auto it = body.find(name);
    if (it == body.end() || it->is_null()) continue;
    if (!it->is_number_integer() || (!it->is_number_unsigned() && it->get<int64_t>() < 0))
      return invalid(std::string(name) + " must be a non-negative integer, got " + dump(*it), name);
    p.req.max_tokens = int(std::min<uint64_t>(it->get<uint64_t>(), uint64_t(s.engine.context())));
  }
  // OpenAI's defaults: temperature 1, top_p 1 (clients ask for 0 to get greedy answers).
  p.req.sampling.temperature = 1;
  if (auto e = number_field(body, "temperature", 0, 2, p.req.sampling.temperature)) return e;
  if (auto e = number_field(body, "top_p", 0, 1, p.req.sampling.top_p)) return e;
  if (p.req.sampling.top_p <= 0) return invalid("top_p must be greater than 0", "top_p");
  if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer())
      return invalid(strformat("seed must be an integer, got %s", dump(*it).c_str()), "seed");
    p.req.sampling.seed = it->is_number_unsigned() ? it->get<uint64_t>() : uint64_t(it->get<int64_t>());
  } else {
    p.req.sampling.seed = std::random_device()() | uint64_t(std::random_device()()) << 32;
  }
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      p.req.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (auto& v : *it) {
        if (!v.is_string()) return invalid("stop must be a string or an array of strings", "stop");
        p.req.stop.push_back(v.get<std::string>());
      }
    } else {
      return invalid("stop must be a string or an array of strings", "stop");
    }
  }
  if (auto it = body.find("n"); it != body.end() && !it->is_null() && *it != 1)
    return invalid("only n = 1 is supported", "n");
  if (auto it = body.find("stream"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) return invalid("stream must be true or false", "stream");
    p.stream = it->get<bool>();
  }
  if (auto it = body.find("stream_options"); it != body.end() && it->is_object())
    p.include_usage = it->value("include_usage", false);
  return std::nullopt;
}

// The chat messages as the model's template lays them out.
std::optional<ApiError> chat_prompt(const json& body, const Served& s, std::string& text) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty())
    return invalid("messages must be a non-empty array of {role, content}", "messages");
  std::vector<ChatMessage> msgs;
  for (size_t i = 0; i < it->size(); i++) {
    const json& m = (*it)[i];
    std::string where = strformat("messages[%zu]", i);
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      return invalid(where + " must be an object with a string role", "messages");
    ChatMessage msg{m["role"].get<std::string>(), ""};
    const json content = m.value("content", json(nullptr));
    if (content.is_string()) {
      msg.content = content.get<std::string>();
    } else if (content.is_array()) {  // content parts: text only
      for (auto& part : content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string())
          return invalid(where + ".content: only text parts are supported", "messages");
        msg.content += part["text"].get<std::string>();
      }
    } else if (!content.is_null()) {
      return invalid(where + ".content must be a string or an array of text parts", "messages");
    }
    msgs.push_back(std::move(msg));
  }
  auto t = apply_chat_template(s.tok.chat_template(), msgs);
  if (!t) return invalid(t.error().message, "messages");
  text = *t;
  return std::nullopt;
}

// A request's mailbox: the worker's callback adds updates, the HTTP thread takes them.
struct Mailbox {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<ServeUpdate> updates;
  bool closed = false;  // the client went away: the callback answers false

  std::deque<ServeUpdate> take() {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return !updates.empty(); });
    std::deque<ServeUpdate> out;
    out.swap(updates);
    return out;
  }
  void close() {
    std::lock_guard<std::mutex> lk(mu);
    closed = true;
  }
};

ServeCallback deliver_to(std::shared_ptr<Mailbox> box) {
  return [box](const ServeUpdate& u) {
    std::lock_guard<std::mutex> lk(box->mu);
    if (box->closed) return false;
    box->updates.push_back(u);
    box->cv.notify_one();
    return true;
  };
}

ApiError refusal_error(const SubmitResult& r, bool chat) {
  const char* prompt_field = chat ? "messages" : "prompt";
  switch (r.status) {
    case SubmitStatus::QueueFull:
      return {429, r.message, "rate_limit_error", "", "rate_limit_exceeded"};
    case SubmitStatus::ContextLength:
      return invalid(r.message, prompt_field, "context_length_exceeded");
    case SubmitStatus::TooLarge:
      return invalid(r.message, "max_tokens");
    case SubmitStatus::Stopped:
      return {503, r.message, "server_error", "", ""};
    case SubmitStatus::Invalid:
    case SubmitStatus::Accepted:
      break;
  }
  return invalid(r.message, prompt_field);
}

json usage_json(int prompt_tokens, int completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

// POST /v1/completions (chat = false) and /v1/chat/completions (chat = true).
void handle_completion(Served& s, bool chat, const httplib::Request& http, httplib::Response& res) {
  json body;
  try {
    body = json::parse(http.body);
  } catch (const json::parse_error& e) {
    return send_error(res, invalid(std::string("the body is not valid JSON: ") + e.what(), ""));
  }
  if (!body.is_object()) return send_error(res, invalid("the body must be a JSON object", ""));
  Parsed p;
  if (auto e = parse_common(body, s, chat, p)) return send_error(res, *e);
  std::string text;
  if (chat) {
    if (auto e = chat_prompt(body, s, text)) return send_error(res, *e);
    p.req.eos = s.im_end;
  } else {
    auto it = body.find("prompt");
    if (it == body.end() || it->is_null()) return send_error(res, invalid("prompt is required", "prompt"));
    if (it->is_array() && it->size() == 1 && (*it)[0].is_string()) it = (*it).begin();  // ["text"]
    if (!it->is_string()) return send_error(res, invalid("prompt must be a string", "prompt"));
    text = it->get<std::string>();
    p.req.eos = s.eos;
  }
  p.req.prompt = s.tok.encode(text);
  if (s.tok.add_bos() && s.tok.bos_id() >= 0) p.req.prompt.insert(p.req.prompt.begin(), s.tok.bos_id());
  const int prompt_tokens = int(p.req.prompt.size());
  auto box = std::make_shared<Mailbox>();
  p.req.on_update = deliver_to(box);
  SubmitResult r = s.engine.submit(std::move(p.req));
  if (!r.ok()) return send_error(res, refusal_error(r, chat));

  const std::string id =
      strformat("%s%s%llu", chat ? "chatcmpl-" : "cmpl-", s.id_prefix.c_str(), (unsigned long long)s.next_id++);
  const int64_t created = int64_t(std::time(nullptr));
  const char* object = chat ? "chat.completion" : "text_completion";
  auto choice = [chat](const std::string& delta_text, const json& finish, bool stream) {
    json c = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}};
    if (!chat)
      c["text"] = delta_text;
    else if (stream)
      c["delta"] = finish.is_null() ? json{{"content", delta_text}} : json::object();
    else
      c["message"] = {{"role", "assistant"}, {"content", delta_text}};
    return c;
  };
  if (!p.stream) {
    std::string answer;
    for (;;) {
      for (auto& u : box->take()) {
        answer += u.text;
        if (!u.done) continue;
        if (!u.error.empty()) return send_error(res, {500, u.error, "server_error", "", ""});
        json out = {{"id", id},
                    {"object", object},
                    {"created", created},
                    {"model", s.id},
                    {"choices", json::array({choice(answer, finish_reason_name(u.finish), false)})},
                    {"usage", usage_json(prompt_tokens, u.completion_tokens)}};
        res.set_content(dump(out), "application/json");
        return;
      }
    }
  }
  // Server-sent events: one chunk per piece of text, the finish reason, [DONE].
  const char* chunk_object = chat ? "chat.completion.chunk" : "text_completion";
  auto chunk = [=, &s](json choices) {
    return json{{"id", id}, {"object", chunk_object}, {"created", created}, {"model", s.id}, {"choices", choices}};
  };
  const bool include_usage = p.include_usage;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [box, chat, chunk, choice, include_usage, prompt_tokens, started = false](size_t,
                                                                                httplib::DataSink& sink) mutable {
        auto send = [&](const json& j) {
          std::string line = "data: ";
          line += dump(j);
          line += "\n\n";
          return sink.write(line.data(), line.size());
        };
        // Writes this call's events; false when the client went away.
        auto write_events = [&] {
          if (chat && !started) {  // OpenAI's first chat chunk names the role
            json c = choice("", nullptr, true);
            c["delta"] = {{"role", "assistant"}, {"content", ""}};
            if (!send(chunk(json::array({c})))) return false;
          }
          started = true;
          for (auto& u : box->take()) {
            if (!u.text.empty() && !send(chunk(json::array({choice(u.text, nullptr, true)})))) return false;
            if (!u.done) continue;
            if (!u.error.empty()) {
              if (!send(error_json({500, u.error, "server_error", "", ""}))) return false;
            } else {
              if (!send(chunk(json::array({choice("", finish_reason_name(u.finish), true)})))) return false;
              if (include_usage) {
                json last = chunk(json::array());
                last["usage"] = usage_json(prompt_tokens, u.completion_tokens);
                if (!send(last)) return false;
              }
            }
            static const std::string kDone = "data: [DONE]\n\n";
            if (!sink.write(kDone.data(), kDone.size())) return false;
            sink.done();
          }
          return true;
        };
        if (write_events()) return true;
        box->close();  // the engine drops the request at its next step
        return false;
      },
      [box](bool success) {
        if (!success) box->close();
      });
}

// SIGINT and SIGTERM post this; a thread waiting on it stops the server. A handler rather
// than sigwait: OpenBLAS starts threads before main, so no signal mask covers them all.
sem_t g_stop_requested;
void on_stop_signal(int) {
  sem_post(&g_stop_requested);  // async-signal-safe
}

// Prometheus text exposition (version 0.0.4).
std::string metrics_text(const ServeStats& st) {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    out += strformat("# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
  };
  auto histogram = [&](const char* name, const char* help, const Histogram& h) {
    out += strformat("# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < h.counts.size(); i++) {
      cum += h.counts[i];
      std::string le = i < h.bounds.size() ? strformat("%g", h.bounds[i]) : "+Inf";
      out += strformat("%s_bucket{le=\"%s\"} %llu\n", name, le.c_str(), (unsigned long long)cum);
    }
    out += strformat("%s_sum %.17g\n%s_count %llu\n", name, h.sum, name, (unsigned long long)h.count);
  };
  metric("troupe_requests_total", "counter", "Requests submitted to the engine.", double(st.requests_total));
  metric("troupe_requests_ok_total", "counter", "Requests that finished with stop or length.", double(st.requests_ok));
  metric("troupe_requests_errored_total", "counter", "Requests ended by an engine error or shutdown.",
         double(st.requests_errored));
  metric("troupe_requests_cancelled_total", "counter", "Requests dropped because the client went away.",
         double(st.requests_cancelled));
  metric("troupe_requests_rejected_total", "counter", "Requests refused at submission (queue full, too long).",
         double(st.requests_rejected));
  metric("troupe_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", double(st.prompt_tokens));
  metric("troupe_prompt_tokens_cached_total", "counter", "Prompt tokens taken from the prefix cache.",
         double(st.prompt_tokens_cached));
  metric("troupe_generation_tokens_total", "counter", "Tokens generated.", double(st.generation_tokens));
  metric("troupe_requests_running", "gauge", "Requests in the running batch.", st.running);
  metric("troupe_requests_waiting", "gauge", "Requests in the queue.", st.waiting);
  metric("troupe_kv_blocks_used", "gauge", "KV cache blocks in use.", st.kv_blocks_used);
  metric("troupe_kv_blocks_total", "gauge", "KV cache blocks in the pool.", st.kv_blocks_total);
  histogram("troupe_step_seconds", "Time of one engine step (one batched forward).", st.step_seconds);
  histogram("troupe_time_to_first_token_seconds", "From submission to the first token.", st.ttft_seconds);
  return out;
}

}  // namespace

int cmd_serve(int argc, char** argv) {
  std::string model_path, host = "127.0.0.1";
  int port = 8000, ctx = 0;
  ServeOptions opt;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        throw std::runtime_error(strformat("troupe serve: %s needs a value\n%s", a.c_str(), kServeUsage));
      return argv[++i];
    };
    auto integer = [&](long lo, long hi) {
      std::string v = value();
      char* end = nullptr;
      long x = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || x < lo || x > hi)
        throw std::runtime_error(
            strformat("troupe serve: %s '%s': expected an integer from %ld to %ld", a.c_str(), v.c_str(), lo, hi));
      return int(x);
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kServeUsage, stdout);
      return 0;
    } else if (a == "--model") {
      model_path = value();
    } else if (a == "--host") {
      host = value();
    } else if (a == "--port") {
      port = integer(0, 65535);
    } else if (a == "--max-batch") {
      opt.max_batch = integer(1, 1024);
    } else if (a == "--queue") {
      opt.queue = integer(1, 1 << 16);
    } else if (a == "--kv-blocks") {
      opt.kv_blocks = integer(1, 1 << 24);
    } else if (a == "--ctx") {
      ctx = integer(1, 1 << 24);
    } else if (a == "--threads") {
      opt.threads = integer(1, 1024);
    } else {
      throw std::runtime_error(strformat("troupe serve: unknown option %s\n%s", a.c_str(), kServeUsage));
    }
  }
  if (model_path.empty()) throw std::runtime_error(std::string("troupe serve: --model is required\n") + kServeUsage);

  auto t0 = std::chrono::steady_clock::now();
  auto file = GgufFile::open(model_path);
  if (!file) throw std::runtime_error(file.error().message);
  auto tok = Tokenizer::from_gguf(*file);
  if (!tok) throw std::runtime_error(model_path + ": " + tok.error().message);
  auto file_ctx = file->get_u32("llama.context_length");
  if (!file_ctx) throw std::runtime_error(model_path + ": " + file_ctx.error().message);
  if (ctx > int(*file_ctx))
    throw std::runtime_error(
        strformat("troupe serve: --ctx %d is more than the model's context of %u", ctx, *file_ctx));
  if (ctx == 0) ctx = std::min(2048, int(*file_ctx));
  auto loaded = model::load_gguf_llama(*file, ctx);
  if (!loaded) throw std::runtime_error(loaded.error().message);
  ServeEngine engine(*loaded->model, *tok, opt);

  Served s(std::filesystem::path(model_path).stem().string(), *tok, engine);

  httplib::Server svr;
  // One HTTP thread per request that can be in the engine, plus a few for /health and
  // /metrics: with fewer, requests would wait in httplib's queue instead of getting 429.
  const size_t http_threads = size_t(opt.max_batch + opt.queue + 4);
  svr.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  svr.Post("/v1/completions",
           [&](const httplib::Request& q, httplib::Response& r) { handle_completion(s, false, q, r); });
  svr.Post("/v1/chat/completions",
           [&](const httplib::Request& q, httplib::Response& r) { handle_completion(s, true, q, r); });
  svr.Get("/v1/models", [&](const httplib::Request&, httplib::Response& r) {
    json m = {{"id", s.id}, {"object", "model"}, {"created", s.created}, {"owned_by", "troupe"}};
    r.set_content(dump(json{{"object", "list"}, {"data", json::array({m})}}), "application/json");
  });
  svr.Get("/health", [](const httplib::Request&, httplib::Response& r) {
    r.set_content(R"({"status":"ok"})", "application/json");
  });
  svr.Get("/metrics", [&](const httplib::Request&, httplib::Response& r) {
    r.set_content(metrics_text(engine.stats()), "text/plain; version=0.0.4");
  });
  svr.set_error_handler([](const httplib::Request& q, httplib::Response& r) {
    if (r.status == 404 && r.body.empty()) {  // an unknown route, not a handler's own 404
      std::string msg = "no route ";
      msg += q.method + " " + q.path;
      send_error(r, {404, msg, "invalid_request_error", "", ""});
    }
  });
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& r, std::exception_ptr ep) {
    std::string msg = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      msg += ": ";
      msg += e.what();
    } catch (...) {
    }
    send_error(r, {500, msg, "server_error", "", ""});
  });
  svr.set_logger([](const httplib::Request& q, const httplib::Response& r) {
    std::fprintf(stderr, "troupe serve: %s %s %d\n", q.method.c_str(), q.path.c_str(), r.status);
  });

  int bound = port == 0 ? svr.bind_to_any_port(host) : (svr.bind_to_port(host, port) ? port : -1);
  if (bound < 0) throw std::runtime_error(strformat("troupe serve: cannot listen on %s:%d", host.c_str(), port));
  sem_init(&g_stop_requested, 0, 0);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::thread stopper([&] {
    while (sem_wait(&g_stop_requested) != 0 && errno == EINTR) {
    }
    engine.stop();  // ends every request, so no HTTP thread waits on the engine
    svr.stop();
  });
  const auto& cfg = loaded->config;
  const ServeStats st = engine.stats();
  std::printf(
      "troupe serve: %s (%s) loaded in %.2f s; listening on http://%s:%d/v1 (max batch %d, queue %d, "
      "context %d, KV cache %d blocks of 16 positions)\n",
      s.id.c_str(), cfg.str().c_str(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
      host.c_str(), bound, opt.max_batch, opt.queue, ctx, st.kv_blocks_total);
  std::fflush(stdout);
  bool listened = svr.listen_after_bind();
  sem_post(&g_stop_requested);  // listening ended without a signal: wake the stopper all the same
  stopper.join();
  sa.sa_handler = SIG_DFL;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::printf("troupe serve: stopped\n");
  return listened ? 0 : 1;
}

}  // namespace troupe::app
