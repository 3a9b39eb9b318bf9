// `troupe bench actors`: what Troupe's actor layer costs per control message, against
// raw CAF in the same process and the same run, and against a Ray actor
// (bench/ray_actors.py) when the Python given by --python (python3) can import ray.
//
// Every run is one client actor and one echo server actor in one actor_system. The
// client sends (header, payload), the server touches the payload (reads its last byte,
// writes its first: byte[0] = uint8(seq) ^ byte[n-1]) and sends it back; the client
// checks the sequence number and that byte, and reuses the returned payload for its next
// request. Nothing is copied on either side: payloads travel by move both ways, and the
// client counts every reply whose payload is not the buffer it sent (payload_copies).
//
//   troupe: the path of a Troupe control message. A caf::typed_actor interface
//           (replies_to<echo_atom, EchoMsg>::with<EchoMsg>), EchoMsg = a small header
//           (seq, flags) plus a troupe::Tensor handle to the payload (shared storage,
//           a local-only message type, as actors/stage_actor.h's StepOrder). The client
//           uses typed request(...).then; the server answers by returning the message.
//   raw:    plain CAF. An untyped caf::actor whose behaviour takes (echo_atom, int64_t
//           seq, std::vector<uint8_t> payload) as plain values and answers (seq, payload);
//           the client uses untyped request(...).then. Same logical work, same checks.
//   ray:    bench/ray_actors.py: a Ray actor in a worker process doing the same touch on a
//           bytes payload of the same sizes and answering (seq, payload). Ray pickles and
//           copies (large payloads go through its object store), and the round trip crosses
//           processes: not the same kind of path, reported as a reference. It runs once,
//           after the CAF repetitions (starting Ray costs seconds: no interleaving).
//
// Per payload size (8 B, 1 KiB, 64 KiB, 1 MiB): round-trip latency with one request in
// flight (median and p99 over --iters round trips after a warm-up), and messages/s with
// --window requests in flight. The troupe and raw runs alternate (which goes first flips
// every repetition) so machine noise hits both alike; values are medians over the
// repetitions (101 of 5,000 round trips by default), and ratios are medians of the
// per-repetition (paired) ratios, with their interquartile range as the noise. The target
// (troupe/raw <= 1.1 per round trip) is judged on the median-latency ratio and on the
// per-message cost at the window (raw msgs/s / troupe msgs/s), for every size.

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <caf/all.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "apps/bench_peer.h"
#include "apps/commands.h"
#include "core/progress.h"
#include "core/tensor.h"

namespace troupe::app {

namespace bench_actors {

using echo_atom = caf::atom_constant<caf::atom("echo")>;
using start_atom = caf::atom_constant<caf::atom("start")>;

// A Troupe control message: a small header and a handle that names the payload.
struct EchoMsg {
  int64_t seq = 0;
  uint32_t flags = 0;
  Tensor payload;  // shared storage: moving the message moves the handle, never the bytes
};

}  // namespace bench_actors
}  // namespace troupe::app

// Local-only (carries a pointer to storage): never serialized.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::app::bench_actors::EchoMsg)

namespace troupe::app {

namespace bench_actors {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr uint8_t kFill = 0x5a;

// The server's work, the same on both sides.
inline void touch(uint8_t* p, size_t n, int64_t seq) {
  p[0] = uint8_t(uint8_t(seq) ^ p[n - 1]);
}
inline bool touched_ok(const uint8_t* p, int64_t seq) {
  return p[0] == uint8_t(uint8_t(seq) ^ kFill);
}

// ---- troupe: typed interface, message struct with a tensor handle ----------------------

using echo_actor = caf::typed_actor<caf::replies_to<echo_atom, EchoMsg>::with<EchoMsg>>;

echo_actor::behavior_type troupe_echo_server() {
  return {
      [](echo_atom, EchoMsg& m) -> EchoMsg {
        touch(m.payload.data<uint8_t>(), m.payload.nbytes(), m.seq);
        return std::move(m);
      },
  };
}

struct TroupeSide {
  using server_type = echo_actor;
  using payload_type = Tensor;
  static constexpr const char* name = "troupe";
  static server_type spawn_server(caf::actor_system& sys) { return sys.spawn(troupe_echo_server); }
  static payload_type make_payload(size_t bytes) {
    // bytes is a multiple of 4 for every size this bench uses
    Tensor t = Tensor::empty(Shape{int64_t(bytes / 4)}, DType::F32);
    std::memset(t.raw(), kFill, bytes);
    return t;
  }
  static uint8_t* data(const payload_type& p) { return p.data<uint8_t>(); }
  template <class Self, class OnReply, class OnError>
  static void request(Self* self, const server_type& server, int64_t seq, payload_type payload, OnReply on_reply,
                      OnError on_error) {
    self->request(server, caf::infinite, echo_atom::value, EchoMsg{seq, 0, std::move(payload)})
        .then([on_reply](EchoMsg& r) mutable { on_reply(r.seq, r.payload); }, on_error);
  }
};

// ---- raw CAF: untyped actor, plain values ---------------------------------------------

caf::behavior raw_echo_server() {
  return {
      [](echo_atom, int64_t seq, std::vector<uint8_t>& p) -> caf::result<int64_t, std::vector<uint8_t>> {
        touch(p.data(), p.size(), seq);
        return {seq, std::move(p)};
      },
  };
}

struct RawSide {
  using server_type = caf::actor;
  using payload_type = std::vector<uint8_t>;
  static constexpr const char* name = "raw";
  static server_type spawn_server(caf::actor_system& sys) { return sys.spawn(raw_echo_server); }
  static payload_type make_payload(size_t bytes) { return payload_type(bytes, kFill); }
  static uint8_t* data(payload_type& p) { return p.data(); }
  template <class Self, class OnReply, class OnError>
  static void request(Self* self, const server_type& server, int64_t seq, payload_type payload, OnReply on_reply,
                      OnError on_error) {
    self->request(server, caf::infinite, echo_atom::value, seq, std::move(payload))
        .then([on_reply](int64_t rseq, std::vector<uint8_t>& p) mutable { on_reply(rseq, p); }, on_error);
  }
};

// ---- the client: the same code drives both sides ---------------------------------------

struct RunSpec {
  size_t bytes = 8;
  int window = 1;  // requests in flight; 1 = latency run (records every round trip)
  int64_t warmup = 0;
  int64_t measured = 0;
};

struct RunResult {
  std::vector<double> rtt_us;  // latency runs only
  double seconds = 0;          // time for the measured replies
  int64_t payload_copies = 0;  // replies whose payload was not the buffer sent
  std::string error;
};

template <class Side>
struct ClientState {
  typename Side::server_type server;
  RunSpec spec;
  std::vector<typename Side::payload_type> payloads;  // one per window slot
  std::vector<const uint8_t*> sent_ptr;
  std::vector<Clock::time_point> sent_at;
  int64_t sent = 0, received = 0;
  Clock::time_point t_start;
  RunResult result;
  std::shared_ptr<std::promise<RunResult>> done;
  static inline const char* name = "bench_actors_client";
};

template <class Side>
using ClientPtr = caf::stateful_actor<ClientState<Side>>*;

template <class Side>
void finish(ClientPtr<Side> self) {
  auto& st = self->state;
  st.done->set_value(std::move(st.result));
  self->send_exit(st.server, caf::exit_reason::user_shutdown);
  self->quit();
}

template <class Side>
void send_one(ClientPtr<Side> self, size_t slot);

template <class Side>
void on_reply(ClientPtr<Side> self, size_t slot, int64_t seq, int64_t rseq, typename Side::payload_type& p) {
  auto now = Clock::now();
  auto& st = self->state;
  if (st.result.error.size()) return;
  const uint8_t* d = Side::data(p);
  if (rseq != seq || !touched_ok(d, seq)) {
    st.result.error =
        strformat("%s: reply %lld does not match request %lld", Side::name, (long long)rseq, (long long)seq);
    finish<Side>(self);
    return;
  }
  if (d != st.sent_ptr[slot]) {
    st.result.payload_copies++;
    st.sent_ptr[slot] = d;
  }
  st.payloads[slot] = std::move(p);
  st.received++;
  if (st.received == st.spec.warmup) st.t_start = now;
  if (st.received > st.spec.warmup && st.spec.window == 1)
    st.result.rtt_us.push_back(std::chrono::duration<double, std::micro>(now - st.sent_at[slot]).count());
  if (st.received == st.spec.warmup + st.spec.measured) {
    st.result.seconds = std::chrono::duration<double>(now - st.t_start).count();
    finish<Side>(self);
    return;
  }
  if (st.sent < st.spec.warmup + st.spec.measured) send_one<Side>(self, slot);
}

template <class Side>
void send_one(ClientPtr<Side> self, size_t slot) {
  auto& st = self->state;
  int64_t seq = st.sent++;
  st.sent_at[slot] = Clock::now();
  Side::request(
      self, st.server, seq, std::move(st.payloads[slot]),
      [self, slot, seq](int64_t rseq, typename Side::payload_type& p) { on_reply<Side>(self, slot, seq, rseq, p); },
      [self](caf::error& e) {
        auto& s = self->state;
        if (s.result.error.empty()) {
          s.result.error = std::string(Side::name) + ": " + self->system().render(e);
          finish<Side>(self);
        }
      });
}

template <class Side>
caf::behavior echo_client(ClientPtr<Side> self, typename Side::server_type server, RunSpec spec,
                          std::shared_ptr<std::promise<RunResult>> done) {
  auto& st = self->state;
  st.server = std::move(server);
  st.spec = spec;
  st.done = std::move(done);
  for (int i = 0; i < spec.window; i++) {
    st.payloads.push_back(Side::make_payload(spec.bytes));
    st.sent_ptr.push_back(Side::data(st.payloads.back()));
  }
  st.sent_at.resize(size_t(spec.window));
  if (spec.window == 1) st.result.rtt_us.reserve(size_t(spec.measured));
  return {
      [self](start_atom) {
        for (size_t slot = 0; slot < size_t(self->state.spec.window); slot++) send_one<Side>(self, slot);
      },
  };
}

// One run: a fresh server and client; the timed part is inside the client.
template <class Side>
RunResult run_once(caf::actor_system& sys, const RunSpec& spec) {
  auto done = std::make_shared<std::promise<RunResult>>();
  auto fut = done->get_future();
  auto server = Side::spawn_server(sys);
  auto client = sys.spawn(echo_client<Side>, server, spec, done);
  caf::anon_send(client, start_atom::value);
  RunResult r = fut.get();
  sys.await_all_actors_done();
  if (!r.error.empty()) throw std::runtime_error("troupe bench actors: " + r.error);
  return r;
}

// ---- statistics ----------------------------------------------------------------------

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  size_t k = std::min(v.size() - 1, size_t(q * double(v.size())));
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(k), v.end());
  return v[k];
}
double median(std::vector<double> v) {
  return quantile(std::move(v), 0.5);
}

struct RepStats {
  double lat_median_us = 0, lat_p99_us = 0, msgs_per_s = 0;
  int64_t payload_copies = 0;
};

template <class Side>
RepStats measure(caf::actor_system& sys, size_t bytes, int64_t iters, int window) {
  RepStats s;
  RunSpec lat{bytes, 1, std::max<int64_t>(iters / 10, 100), iters};
  RunResult l = run_once<Side>(sys, lat);
  s.lat_median_us = quantile(l.rtt_us, 0.5);
  s.lat_p99_us = quantile(l.rtt_us, 0.99);
  RunSpec tp{bytes, window, std::max<int64_t>(iters / 10, 4 * int64_t(window)), iters};
  RunResult t = run_once<Side>(sys, tp);
  s.msgs_per_s = double(iters) / t.seconds;
  s.payload_copies = l.payload_copies + t.payload_copies;
  return s;
}

std::string size_label(size_t b) {
  if (b >= (1u << 20)) return strformat("%zu MiB", b >> 20);
  if (b >= 1024) return strformat("%zu KiB", b >> 10);
  return strformat("%zu B", b);
}

json side_json(const std::vector<RepStats>& reps) {
  std::vector<double> med, p99, mps;
  int64_t copies = 0;
  for (auto& r : reps) {
    med.push_back(r.lat_median_us);
    p99.push_back(r.lat_p99_us);
    mps.push_back(r.msgs_per_s);
    copies += r.payload_copies;
  }
  return {{"latency_us", {{"median", median(med)}, {"p99", median(p99)}}},
          {"msgs_per_s", median(mps)},
          {"payload_copies", copies}};
}

// ---- the Ray peer --------------------------------------------------------------------

// The Ray peer's JSON, or {"status": "skipped", "reason": ...}. Its progress goes to stderr.
json run_ray(const std::string& python, const std::vector<size_t>& sizes, int64_t iters, int window) {
  std::string sz;
  for (size_t b : sizes) {
    if (!sz.empty()) sz += ',';
    sz += std::to_string(b);
  }
  return run_python_peer(python, "ray", "ray_actors.py",
                         {"--sizes", sz, "--iters", std::to_string(iters), "--window", std::to_string(window)},
                         "bench actors: ray");
}

}  // namespace bench_actors

int cmd_bench_actors(int argc, char** argv) {
  using namespace bench_actors;
  bool as_json = false, quick = false, with_ray = true;
  int64_t iters = 0, ray_iters = 0;
  int window = 64, reps = 0, threads = 0;
  std::string python = "python3";
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&](const char* what) -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(std::string("troupe bench actors: ") + what + " needs a value");
      return argv[++i];
    };
    if (a == "--json")
      as_json = true;
    else if (a == "--quick")
      quick = true;
    else if (a == "--no-ray")
      with_ray = false;
    else if (a == "--python")
      python = next("--python");
    else if (a == "--iters")
      iters = std::max<int64_t>(100, std::atoll(next("--iters").c_str()));
    else if (a == "--ray-iters")
      ray_iters = std::max<int64_t>(10, std::atoll(next("--ray-iters").c_str()));
    else if (a == "--window")
      window = std::max(1, std::atoi(next("--window").c_str()));
    else if (a == "--reps")
      reps = std::max(1, std::atoi(next("--reps").c_str()));
    else if (a == "--threads")
      threads = std::max(1, std::atoi(next("--threads").c_str()));
    else if (a == "-h" || a == "--help") {
      std::printf(
          "usage: troupe bench actors [--json] [--quick] [--iters N] [--reps R] [--window W] [--threads T]\n"
          "                           [--no-ray] [--python PY] [--ray-iters N]\n"
          "Round-trip latency (median, p99) and messages/s through Troupe's typed actor layer vs raw\n"
          "CAF in the same run, and a Ray actor (bench/ray_actors.py) when PY can import ray.\n");
      return 0;
    } else
      throw std::runtime_error("troupe bench actors: unknown option '" + a + "' (see --help)");
  }
  if (iters == 0) iters = quick ? 1000 : 5000;
  if (reps == 0) reps = quick ? 5 : 101;
  if (ray_iters == 0) ray_iters = quick ? 100 : 1000;
  const std::vector<size_t> sizes = {8, 1024, 64 * 1024, 1024 * 1024};

  caf::actor_system_config cfg;
  if (threads > 0) cfg.set("scheduler.max-threads", size_t(threads));
  caf::actor_system sys{cfg};
  threads = int(sys.scheduler().num_workers());

  // stats[size][rep]
  std::vector<std::vector<RepStats>> troupe_st(sizes.size()), raw_st(sizes.size());
  // Many short, alternating repetitions: where CAF's work-stealing scheduler places the
  // two actors (one worker or two) differs from run to run and moves a run's latency by
  // up to 2x; the paired ratios are symmetric in that noise, so their median converges.
  auto t0 = Clock::now(), last_progress = t0;
  for (int r = 0; r < reps; r++) {
    for (size_t k = 0; k < sizes.size(); k++) {
      // Alternate which side goes first so drift and noise fall on both alike.
      if (r % 2 == 0) {
        troupe_st[k].push_back(measure<TroupeSide>(sys, sizes[k], iters, window));
        raw_st[k].push_back(measure<RawSide>(sys, sizes[k], iters, window));
      } else {
        raw_st[k].push_back(measure<RawSide>(sys, sizes[k], iters, window));
        troupe_st[k].push_back(measure<TroupeSide>(sys, sizes[k], iters, window));
      }
    }
    auto now = Clock::now();
    if (std::chrono::duration<double>(now - last_progress).count() >= 1.0 || r + 1 == reps) {
      last_progress = now;
      double el = std::chrono::duration<double>(now - t0).count();
      auto& tr = troupe_st[0].back();
      auto& rw = raw_st[0].back();
      std::fprintf(stderr, "bench actors: rep %d/%d (8 B: troupe %.2f us, raw %.2f us) ETA %s\n", r + 1, reps,
                   tr.lat_median_us, rw.lat_median_us, format_eta(el / (r + 1) * (reps - r - 1)).c_str());
    }
  }

  json ray = {{"status", "skipped"}, {"reason", "--no-ray"}};
  if (with_ray) ray = run_ray(python, sizes, ray_iters, window);
  if (ray["status"] == "skipped")
    std::fprintf(stderr, "bench actors: ray skipped: %s\n", ray["reason"].get<std::string>().c_str());

  const double target = 1.1;
  double worst_lat = 0, worst_cost = 0;
  json results = json::array();
  for (size_t k = 0; k < sizes.size(); k++) {
    std::vector<double> lat_ratio, p99_ratio, tp_ratio;
    for (int r = 0; r < reps; r++) {
      auto& tr = troupe_st[k][size_t(r)];
      auto& rw = raw_st[k][size_t(r)];
      lat_ratio.push_back(tr.lat_median_us / rw.lat_median_us);
      p99_ratio.push_back(tr.lat_p99_us / rw.lat_p99_us);
      tp_ratio.push_back(tr.msgs_per_s / rw.msgs_per_s);
    }
    json e = {{"bytes", sizes[k]},
              {"troupe", side_json(troupe_st[k])},
              {"raw", side_json(raw_st[k])},
              {"ratio",
               {{"latency_median_troupe_over_raw", median(lat_ratio)},
                {"latency_p99_troupe_over_raw", median(p99_ratio)},
                {"throughput_troupe_over_raw", median(tp_ratio)},
                // The spread of the paired per-repetition ratios (25th, 75th percentile): the noise.
                {"latency_median_troupe_over_raw_iqr", {quantile(lat_ratio, 0.25), quantile(lat_ratio, 0.75)}},
                {"throughput_troupe_over_raw_iqr", {quantile(tp_ratio, 0.25), quantile(tp_ratio, 0.75)}}}}};
    worst_lat = std::max(worst_lat, median(lat_ratio));
    worst_cost = std::max(worst_cost, 1.0 / median(tp_ratio));  // per-message cost at the window
    e["ray"] = nullptr;
    if (ray["status"] == "measured") {
      for (auto& rr : ray["results"]) {
        if (rr["bytes"].get<size_t>() != sizes[k]) continue;
        e["ray"] = {{"latency_us", rr["latency_us"]}, {"msgs_per_s", rr["msgs_per_s"]}};
        double tl = e["troupe"]["latency_us"]["median"], tp99 = e["troupe"]["latency_us"]["p99"],
               tm = e["troupe"]["msgs_per_s"];
        e["ratio"]["latency_median_ray_over_troupe"] = rr["latency_us"]["median"].get<double>() / tl;
        e["ratio"]["latency_p99_ray_over_troupe"] = rr["latency_us"]["p99"].get<double>() / tp99;
        e["ratio"]["throughput_ray_over_troupe"] = rr["msgs_per_s"].get<double>() / tm;
      }
    }
    results.push_back(e);
  }

  if (ray.contains("results")) ray.erase("results");  // folded into the per-size entries
  json out = {{"bench", "actors"},
              {"caf_version", strformat("%d.%d.%d", CAF_MAJOR_VERSION, CAF_MINOR_VERSION, CAF_PATCH_VERSION)},
              {"threads", threads},
              {"cores", std::thread::hardware_concurrency()},
              {"iters", iters},
              {"reps", reps},
              {"window", window},
              {"target",
               {{"max_troupe_over_raw", target},
                {"worst_latency_median_ratio", worst_lat},
                {"worst_throughput_cost_ratio", worst_cost},
                {"met", json(worst_lat <= target && worst_cost <= target)}}},
              {"ray", ray},
              {"results", results}};

  // A handful of repetitions cannot separate a 10% difference from the scheduler's noise.
  const int min_reps_for_verdict = 21;
  if (reps < min_reps_for_verdict) {
    out["target"]["met"] = nullptr;
    out["target"]["note"] =
        strformat("no verdict from %d repetitions (needs %d; --quick is a smoke test)", reps, min_reps_for_verdict);
  }

  if (!as_json) {
    std::printf("CAF %s, %d scheduler threads, %d cores; %lld round trips x %d reps; window %d\n",
                out["caf_version"].get<std::string>().c_str(), threads, int(std::thread::hardware_concurrency()),
                (long long)iters, reps, window);
    std::printf("%-7s | %-28s | %-28s | %-15s | %-28s\n", "payload", "troupe: p50 / p99 us, msg/s",
                "raw CAF: p50 / p99 us, msg/s", "troupe/raw lat,tp", "ray: p50 / p99 us, msg/s   ray/troupe p50");
    for (auto& e : results) {
      auto cell = [](const json& s) {
        return strformat("%7.2f / %7.2f %10.0f", s["latency_us"]["median"].get<double>(),
                         s["latency_us"]["p99"].get<double>(), s["msgs_per_s"].get<double>());
      };
      std::string ray_cell = "skipped";
      if (!e["ray"].is_null())
        ray_cell = cell(e["ray"]) + strformat(" %8.0fx", e["ratio"]["latency_median_ray_over_troupe"].get<double>());
      std::printf("%-7s | %-28s | %-28s | %5.2fx  %5.2fx   | %s\n", size_label(e["bytes"].get<size_t>()).c_str(),
                  cell(e["troupe"]).c_str(), cell(e["raw"]).c_str(),
                  e["ratio"]["latency_median_troupe_over_raw"].get<double>(),
                  e["ratio"]["throughput_troupe_over_raw"].get<double>(), ray_cell.c_str());
    }
    std::printf(
        "target troupe/raw <= %.2fx per round trip: %s (worst latency ratio %.3f, worst per-message cost %.3f)\n",
        target,
        out["target"]["met"].is_null()     ? "no verdict (too few repetitions)"
        : out["target"]["met"].get<bool>() ? "met"
                                           : "NOT met",
        worst_lat, worst_cost);
    if (ray["status"] == "skipped") std::printf("ray: skipped (%s)\n", ray["reason"].get<std::string>().c_str());
  }
  std::printf("%s\n", out.dump(as_json ? -1 : 2).c_str());
  return 0;
}

}  // namespace troupe::app
