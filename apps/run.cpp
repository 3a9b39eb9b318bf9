// `troupe run JOB.toml`: runs a training job in this process (the embedded default):
// the coordinator builds the graph of stage actors and drives the steps.
//   troupe run JOB.toml [--set a.b=value]... [--metrics-out FILE] [--graph-out FILE(.json|.dot)]

#include <unistd.h>

#include <caf/all.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "actors/coordinator_actor.h"
#include "apps/commands.h"
#include "core/file_io.h"
#include "core/progress.h"
#include "ops/ops.h"

namespace troupe::app {

namespace {

const char* kRunUsage =
    "usage: troupe run JOB.toml [--set section.key=value]... [--metrics-out FILE] [--graph-out FILE] [--trace-out FILE] [--resume]\n"
    "  --set          override any job field (repeatable), e.g. --set parallel.pp=2\n"
    "  --metrics-out  one JSON object per step (step, loss, lr, grad_norm, tokens_per_s, step_s, bubble_fraction)\n"
    "  --graph-out    the dataflow graph of actors and channels: JSON, or Graphviz if FILE ends in .dot\n"
    "  --trace-out    Chrome trace JSON (Perfetto, chrome://tracing): forward/backward spans per stage actor\n"
    "  --resume       continue from the newest good checkpoint in checkpoint.dir (any pp/dp layout)\n"
    "  --scale-dp N@STEP  after STEP steps, change to N data-parallel replicas (repeatable)\n"
    "Checkpoints are written every checkpoint.disk_every steps (0: never), keeping checkpoint.keep.\n";

}  // namespace

int cmd_run(int argc, char** argv) {
  std::string job_path, metrics_out, graph_out, trace_out;
  bool resume = false;
  std::vector<std::string> sets;
  std::map<int64_t, int> scale_at;  // steps done -> replicas
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("troupe run: " + a + " needs a value\n" + kRunUsage);
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kRunUsage, stdout);
      return 0;
    } else if (a == "--set") {
      sets.push_back(value());
    } else if (a == "--metrics-out") {
      metrics_out = value();
    } else if (a == "--graph-out") {
      graph_out = value();
    } else if (a == "--trace-out") {
      trace_out = value();
    } else if (a == "--resume") {
      resume = true;
    } else if (a == "--scale-dp") {
      std::string v = value();
      int n = 0;
      long long at = 0;
      char tail = 0;
      if (std::sscanf(v.c_str(), "%d@%lld%c", &n, &at, &tail) != 2 || n < 1 || at < 0)
        throw std::runtime_error("troupe run: --scale-dp '" + v + "': expected N@STEP, e.g. 2@10");
      scale_at[at] = n;
    } else if (!a.empty() && a[0] == '-') {
      throw std::runtime_error("troupe run: unknown option " + a + "\n" + kRunUsage);
    } else if (job_path.empty()) {
      job_path = a;
    } else {
      throw std::runtime_error("troupe run: one job file only ('" + a + "' is a second)\n" + kRunUsage);
    }
  }
  if (job_path.empty()) throw std::runtime_error(std::string("troupe run: no job file\n") + kRunUsage);
  auto job = JobConfig::load(job_path);
  if (!job) throw std::runtime_error(job.error().message);
  for (auto& s : sets)
    if (auto ok = job->set(s); !ok) throw std::runtime_error(ok.error().message);
  ops::set_num_threads(job->train.threads);

  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  // The coordinator is an actor; this thread is its client (as a console would be).
  actors::CoordinatorClient coord(sys, actors::spawn_coordinator(sys, *job));
  using namespace actors;
  auto started = coord.call<CoordinatorInfo>(start_atom::value);
  if (!started) throw std::runtime_error(started.error().message);
  std::printf("troupe run %s: %s; pp=%d dp=%d, %d microbatches (%s), batch %d x %d tokens, %d steps\n",
              job_path.c_str(), started->model.str().c_str(), job->parallel.pp, job->parallel.dp,
              job->parallel.microbatches, job->parallel.schedule.c_str(), job->data.batch_size, job->data.seq_len,
              job->train.steps);
  if (auto& faults = started->faults; !faults.empty()) {
    std::string plan;
    for (auto& f : faults) plan += strformat("%s%s@step%d:%s", plan.empty() ? "" : ", ", f.target.c_str(), f.step, f.phase.c_str());
    std::printf("fault injection: %s\n", plan.c_str());
  }
  if (!graph_out.empty()) {
    bool dot = graph_out.size() > 4 && graph_out.compare(graph_out.size() - 4, 4, ".dot") == 0;
    std::ofstream(graph_out) << (dot ? started->graph_dot : started->graph_json);
  }
  if (!trace_out.empty()) coord.call<std::string>(trace_atom::value, true);
  int64_t first = 0;
  if (resume) {
    auto at = coord.call<ResumeInfo>(resume_atom::value);
    if (!at) throw std::runtime_error(at.error().message);
    for (auto& w : at->warnings) std::fprintf(stderr, "troupe run: warning: %s\n", w.c_str());
    first = at->step;
    std::printf("resumed from %s at step %lld\n", job->checkpoint.dir.c_str(), (long long)first);
  }
  std::FILE* metrics = nullptr;
  // A resumed run appends to the metrics of the run it continues.
  if (!metrics_out.empty() && !(metrics = std::fopen(metrics_out.c_str(), resume ? "a" : "w")))
    throw std::runtime_error("troupe run: --metrics-out " + metrics_out + ": cannot open for writing");
  const bool tty = isatty(1);
  auto t_start = std::chrono::steady_clock::now();
  // File offset of each step's metrics line, so that a rewind after a failure drops the
  // lines of the steps that are replayed: the file ends as in a run without failures.
  std::map<int64_t, long> metrics_at;
  int restarts = 0;  // of the stage gang, for the metrics
  // Checkpoint policy after a step: prints what finished in the background.
  auto checkpoints = [&](int64_t steps_done, bool force) {
    auto rep = coord.call<CheckpointReport>(checkpoint_atom::value, steps_done, force);
    if (!rep) throw std::runtime_error("troupe run: " + rep.error().message);
    for (auto& e : rep->events) std::printf("%scheckpoint writer: %s\n", tty ? "\n" : "", e.c_str());
    for (auto& p : rep->published) std::printf("%scheckpoint %s\n", tty ? "\n" : "", p.c_str());
  };
  if (job->checkpoint.snapshot_every > 0) checkpoints(first, true);
  for (int64_t step = first; step < job->train.steps; step++) {
    if (auto it = scale_at.find(step); it != scale_at.end()) {
      auto t0 = std::chrono::steady_clock::now();
      auto scaled = coord.call<CoordinatorInfo>(scale_atom::value, it->second, step);
      if (!scaled) throw std::runtime_error("troupe run: " + scaled.error().message);
      std::printf("%sscaled to dp=%d after step %lld in %.1f ms: %zu actors, %d microbatches per replica\n",
                  tty ? "\n" : "", it->second, (long long)step,
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
                  scaled->actors, scaled->job.parallel.microbatches);
      scale_at.erase(it);
    }
    auto result = coord.call<StepMetrics>(run_step_atom::value, step);
    if (!result) {
      auto t_fail = std::chrono::steady_clock::now();
      std::printf("%sstep %lld: %s\n", tty ? "\n" : "", (long long)(step + 1), result.error().message.c_str());
      auto back = coord.call<RecoverInfo>(recover_atom::value, step);
      if (!back) throw std::runtime_error("troupe run: cannot recover: " + back.error().message);
      restarts = back->restarts;
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_fail).count();
      std::printf("recovered: the supervisor restarted the stage actors (one_for_all) in %.1f ms; restored the "
                  "snapshot of step %lld; training resumed %.1f ms after the failed step; replaying from step %lld "
                  "(restart %d)\n",
                  back->restart_seconds * 1e3, (long long)back->step, ms, (long long)(back->step + 1), back->restarts);
      if (metrics && metrics_at.count(back->step)) {
        std::fflush(metrics);
        std::filesystem::resize_file(metrics_out, std::uintmax_t(metrics_at[back->step]));
        std::fseek(metrics, 0, SEEK_END);
      }
      step = back->step - 1;
      continue;
    }
    actors::StepMetrics mt = *result;
    if (metrics) {
      metrics_at[step] = std::ftell(metrics);
      nlohmann::json j = {{"step", mt.step + 1},          {"loss", mt.loss},
                          {"lr", mt.lr},                  {"grad_norm", mt.grad_norm},
                          {"tokens_per_s", mt.tokens_per_second}, {"step_s", mt.step_seconds},
                          {"bubble_fraction", mt.bubble_fraction}, {"ckpt_stall_s", mt.checkpoint_stall_seconds},
                          {"restarts", restarts}};
      std::fprintf(metrics, "%s\n", j.dump().c_str());
      std::fflush(metrics);
    }
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    double eta = elapsed / double(step + 1 - first) * double(job->train.steps - step - 1);
    bool last = step + 1 == job->train.steps;
    if (tty || last || step % 10 == 0)
      std::printf("%sstep %5lld/%d  loss %.4f  lr %.2e  norm %.3f  %6.0f tok/s  ETA %s%s", tty ? "\r" : "",
                  (long long)(step + 1), job->train.steps, mt.loss, mt.lr, mt.grad_norm, mt.tokens_per_second,
                  format_eta(eta).c_str(), tty && !last ? "" : "\n");
    std::fflush(stdout);
    checkpoints(step + 1, false);
  }
  if (auto rep = coord.call<CheckpointReport>(flush_atom::value); !rep) {
    throw std::runtime_error("troupe run: " + rep.error().message);
  } else {
    for (auto& e : rep->events) std::printf("checkpoint writer: %s\n", e.c_str());
    for (auto& p : rep->published) std::printf("checkpoint %s\n", p.c_str());
  }
  if (metrics) std::fclose(metrics);
  if (!trace_out.empty()) {
    auto text = coord.call<std::string>(trace_atom::value, false).value();
    auto ok = write_file_atomic(trace_out, {{text.data(), text.size()}});
    if (!ok) throw std::runtime_error("troupe run: --trace-out: " + ok.error().message);
    std::printf("trace written to %s (open in Perfetto or chrome://tracing)\n", trace_out.c_str());
  }
  return 0;
}

}  // namespace troupe::app
