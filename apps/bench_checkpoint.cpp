// `troupe bench checkpoint`: what asynchronous checkpointing costs a training step.
// The same job runs in three modes, alternated over several rounds so that machine noise
// hits each alike:
//   none      no snapshots, no disk checkpoints (the baseline);
//   snapshot  an in-memory snapshot after every step (pin, copy while the next step runs);
//   disk      a snapshot after every step and a disk checkpoint every 5 steps.
// Reported per mode: the median step time, its overhead over the baseline, and the stall
// the coordinator measured directly (pins before the step + the longest wait of an
// optimizer step for the copy), as a fraction of the step time. Target: < 5%.
// The overhead can exceed the stall: the copy and the write run on their own threads,
// which take cores from the stages when the machine has none to spare.

#include <caf/all.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "actors/coordinator.h"
#include "apps/commands.h"
#include "ops/ops.h"

namespace troupe::app {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

struct ModeRun {
  std::vector<double> step_s, stall_s;
};

}  // namespace

int cmd_bench_checkpoint(int argc, char** argv) {
  bool as_json = false;
  int steps = 20, rounds = 3;
  std::string job_path = "examples/jobs/austen_pp2.toml";
  std::vector<std::string> sets;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("troupe bench checkpoint: " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--json") as_json = true;
    else if (a == "--steps") steps = std::max(4, std::stoi(value()));
    else if (a == "--rounds") rounds = std::max(1, std::stoi(value()));
    else if (a == "--job") job_path = value();
    else if (a == "--set") sets.push_back(value());
    else
      throw std::runtime_error("troupe bench checkpoint: unknown option '" + a +
                               "' (--json, --steps N, --rounds R, --job FILE, --set a.b=v)");
  }
  auto base = JobConfig::load(job_path);
  if (!base) throw std::runtime_error(base.error().message);
  for (auto& s : sets)
    if (auto ok = base->set(s); !ok) throw std::runtime_error(ok.error().message);
  base->train.steps = steps;
  base->fault.kill.clear();
  ops::set_num_threads(base->train.threads);
  auto dir = std::filesystem::temp_directory_path() / "troupe_bench_checkpoint";

  const std::vector<std::string> modes = {"none", "snapshot", "disk"};
  std::vector<ModeRun> runs(modes.size());
  for (int round = 0; round < rounds; round++)
    for (size_t k = 0; k < modes.size(); k++) {
      JobConfig job = *base;
      job.checkpoint.snapshot_every = modes[k] == "none" ? 0 : 1;
      job.checkpoint.disk_every = modes[k] == "disk" ? 5 : 0;
      job.checkpoint.dir = dir.string();
      job.checkpoint.keep = 2;
      std::filesystem::remove_all(dir);
      std::fprintf(stderr, "bench checkpoint: round %d/%d, mode %s, %d steps\n", round + 1, rounds,
                   modes[k].c_str(), steps);
      caf::actor_system_config cfg;
      caf::actor_system sys{cfg};
      actors::Coordinator coord(sys, job);
      if (auto ok = coord.start(); !ok) throw std::runtime_error(ok.error().message);
      if (job.checkpoint.snapshot_every > 0)
        if (auto ok = coord.after_step(0, true); !ok) throw std::runtime_error(ok.error().message);
      for (int s = 0; s < steps; s++) {
        auto mt = coord.run_step(s);
        if (!mt) throw std::runtime_error(mt.error().message);
        if (s >= 2) {  // the first steps warm up pools and caches
          runs[k].step_s.push_back(mt->step_seconds);
          runs[k].stall_s.push_back(mt->checkpoint_stall_seconds);
        }
        if (auto ok = coord.after_step(s + 1); !ok) throw std::runtime_error(ok.error().message);
      }
      if (auto ok = coord.flush_checkpoints(); !ok) throw std::runtime_error(ok.error().message);
    }
  std::filesystem::remove_all(dir);

  const double t_none = median(runs[0].step_s);
  nlohmann::json results = nlohmann::json::array();
  bool met = true;
  for (size_t k = 0; k < modes.size(); k++) {
    double t = median(runs[k].step_s), stall = median(runs[k].stall_s);
    double stall_frac = t > 0 ? stall / t : 0, overhead = t_none > 0 ? t / t_none - 1 : 0;
    if (k > 0) met = met && stall_frac < 0.05;
    results.push_back({{"mode", modes[k]},
                       {"step_s_median", t},
                       {"overhead_vs_none", overhead},
                       {"stall_s_median", stall},
                       {"stall_fraction", stall_frac}});
    if (!as_json)
      std::printf("%-8s step %.1f ms (median)  %+5.1f%% vs none  measured stall %.2f ms = %.2f%% of the step\n",
                  modes[k].c_str(), 1e3 * t, 100 * overhead, 1e3 * stall, 100 * stall_frac);
  }
  nlohmann::json out = {{"bench", "checkpoint"}, {"job", job_path},   {"steps", steps},
                        {"rounds", rounds},      {"layout", strformat("pp=%d dp=%d", base->parallel.pp, base->parallel.dp)},
                        {"results", results},    {"target", {{"max_stall_fraction", 0.05}, {"met", met}}}};
  std::printf("%s\n", out.dump(as_json ? -1 : 2).c_str());
  return 0;
}

}  // namespace troupe::app
