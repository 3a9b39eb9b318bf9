#include "actors/pipeline_schedule.h"

#include <algorithm>
#include <limits>
#include <map>

namespace troupe::pipeline {

Schedule gpipe_schedule(int p, int m) {
  Schedule s{"gpipe", p, m, 1, std::vector<StagePlan>(size_t(p))};
  for (auto& plan : s.plans) {
    for (int i = 0; i < m; i++) plan.push_back({Op::Forward, i, 0});
    for (int i = 0; i < m; i++) plan.push_back({Op::Backward, i, 0});
  }
  return s;
}

Schedule one_f_one_b_schedule(int p, int m) {
  Schedule s{"1f1b", p, m, 1, std::vector<StagePlan>(size_t(p))};
  for (int st = 0; st < p; st++) {
    auto& plan = s.plans[size_t(st)];
    int warmup = std::min(p - st - 1, m);
    int f = 0, b = 0;
    for (; f < warmup; f++) plan.push_back({Op::Forward, f, 0});
    while (f < m) {  // steady state: one forward, one backward
      plan.push_back({Op::Forward, f++, 0});
      plan.push_back({Op::Backward, b++, 0});
    }
    while (b < m) plan.push_back({Op::Backward, b++, 0});  // cool-down
  }
  return s;
}

Expected<Schedule> interleaved_schedule(int p, int m, int v) {
  if (v < 2) return make_error(strformat("interleaved schedule: %d chunks per stage (need at least 2)", v));
  if (m % p != 0)
    return make_error(strformat("interleaved schedule: %d microbatches is not a multiple of %d stages", m, p));
  Schedule s{"interleaved", p, m, v, std::vector<StagePlan>(size_t(p))};
  const int total = m * v;  // forward (and backward) instructions per stage
  // The k-th forward of a stage: microbatches go in groups of p through chunk 0, then
  // the same group through chunk 1, ...; backwards visit chunks in reverse.
  auto fwd = [&](int k) -> Instr {
    int group = k / (p * v), in_group = k % (p * v);
    return {Op::Forward, group * p + in_group % p, in_group / p};
  };
  auto bwd = [&](int k) -> Instr {
    int group = k / (p * v), in_group = k % (p * v);
    return {Op::Backward, group * p + in_group % p, v - 1 - in_group / p};
  };
  for (int st = 0; st < p; st++) {
    auto& plan = s.plans[size_t(st)];
    int warmup = std::min((p - st - 1) * 2 + (v - 1) * p, total);
    int f = 0, b = 0;
    for (; f < warmup; f++) plan.push_back(fwd(f));
    while (f < total) {
      plan.push_back(fwd(f++));
      plan.push_back(bwd(b++));
    }
    while (b < total) plan.push_back(bwd(b++));
  }
  return s;
}

Expected<Schedule> make_schedule(const std::string& name, int p, int m, int v) {
  if (p < 1 || m < 1) return make_error(strformat("schedule %s: p=%d m=%d must be positive", name.c_str(), p, m));
  if (name == "gpipe") return gpipe_schedule(p, m);
  if (name == "1f1b") return one_f_one_b_schedule(p, m);
  if (name == "interleaved") return interleaved_schedule(p, m, v);
  return make_error("schedule '" + name + "' is not gpipe, 1f1b or interleaved");
}

double theoretical_bubble(const Schedule& s) {
  double p = s.stages, m = s.microbatches, v = s.chunks;
  return (p - 1) / (v * m + p - 1);
}

Expected<Simulation> simulate(const Schedule& s, double tf, double tb) {
  const int p = s.stages, v = s.chunks, G = p * v;
  // done[op][mb][g]: finish time, or -1
  std::vector<std::vector<double>> fdone(size_t(s.microbatches), std::vector<double>(size_t(G), -1)),
      bdone = fdone;
  std::vector<size_t> next(size_t(p), 0);
  std::vector<double> free_at(size_t(p), 0);
  std::vector<int> in_flight(size_t(p), 0);
  Simulation sim;
  sim.peak_in_flight.assign(size_t(p), 0);
  double busy = 0;
  size_t remaining = 0;
  for (auto& plan : s.plans) remaining += plan.size();
  while (remaining > 0) {
    // Among stages whose next instruction is ready, run the one that can start first.
    int best = -1;
    double best_start = std::numeric_limits<double>::infinity();
    for (int st = 0; st < p; st++) {
      if (next[size_t(st)] >= s.plans[size_t(st)].size()) continue;
      const Instr& in = s.plans[size_t(st)][next[size_t(st)]];
      int g = s.global_chunk(st, in.chunk);
      double ready;
      if (in.op == Op::Forward) {
        ready = g == 0 ? 0 : fdone[size_t(in.microbatch)][size_t(g - 1)];
      } else {
        double own = fdone[size_t(in.microbatch)][size_t(g)];
        double after = g == G - 1 ? own : bdone[size_t(in.microbatch)][size_t(g + 1)];
        ready = own < 0 || after < 0 ? -1 : std::max(own, after);
      }
      if (ready < 0) continue;
      double start = std::max(ready, free_at[size_t(st)]);
      if (start < best_start) {
        best_start = start;
        best = st;
      }
    }
    if (best < 0) {
      std::string where;
      for (int st = 0; st < p; st++)
        if (next[size_t(st)] < s.plans[size_t(st)].size()) {
          const Instr& in = s.plans[size_t(st)][next[size_t(st)]];
          where += strformat(" stage %d waits at %s%d.%d;", st, in.op == Op::Forward ? "F" : "B", in.microbatch, in.chunk);
        }
      return make_error(s.name + " schedule deadlocks:" + where);
    }
    const Instr& in = s.plans[size_t(best)][next[size_t(best)]];
    int g = s.global_chunk(best, in.chunk);
    double cost = (in.op == Op::Forward ? tf : tb) / v;
    double end = best_start + cost;
    (in.op == Op::Forward ? fdone : bdone)[size_t(in.microbatch)][size_t(g)] = end;
    in_flight[size_t(best)] += in.op == Op::Forward ? 1 : -1;
    sim.peak_in_flight[size_t(best)] = std::max(sim.peak_in_flight[size_t(best)], in_flight[size_t(best)]);
    free_at[size_t(best)] = end;
    busy += cost;
    sim.makespan = std::max(sim.makespan, end);
    next[size_t(best)]++;
    remaining--;
  }
  sim.bubble = 1.0 - busy / (p * sim.makespan);
  return sim;
}

Expected<void> validate(const Schedule& s) {
  if (int(s.plans.size()) != s.stages)
    return make_error(strformat("%s: %zu plans for %d stages", s.name.c_str(), s.plans.size(), s.stages));
  for (int st = 0; st < s.stages; st++) {
    std::map<std::pair<int, int>, int> f, b;
    for (const Instr& in : s.plans[size_t(st)]) {
      if (in.microbatch < 0 || in.microbatch >= s.microbatches || in.chunk < 0 || in.chunk >= s.chunks)
        return make_error(strformat("%s: stage %d: instruction for microbatch %d chunk %d is out of range",
                                    s.name.c_str(), st, in.microbatch, in.chunk));
      auto key = std::make_pair(in.microbatch, in.chunk);
      if (in.op == Op::Forward) {
        f[key]++;
      } else {
        if (!f.count(key))
          return make_error(strformat("%s: stage %d: backward of microbatch %d chunk %d before its forward",
                                      s.name.c_str(), st, in.microbatch, in.chunk));
        b[key]++;
      }
    }
    for (int mb = 0; mb < s.microbatches; mb++)
      for (int c = 0; c < s.chunks; c++) {
        auto key = std::make_pair(mb, c);
        if (f[key] != 1 || b[key] != 1)
          return make_error(strformat("%s: stage %d: microbatch %d chunk %d has %d forwards and %d backwards",
                                      s.name.c_str(), st, mb, c, f[key], b[key]));
      }
  }
  auto sim = simulate(s);
  if (!sim) return sim.error();
  return {};
}

std::string to_string(const StagePlan& plan) {
  std::string out;
  for (const Instr& in : plan) {
    if (!out.empty()) out += ' ';
    out += strformat("%c%d", in.op == Op::Forward ? 'F' : 'B', in.microbatch);
    if (in.chunk) out += strformat(".%d", in.chunk);
  }
  return out;
}

}  // namespace troupe::pipeline
