#pragma once
// Pipeline schedules compiled into per-stage instruction lists. The coordinator sends
// each stage its list once per step (plans, not individual operations); the stage runs
// it in order, blocking only on its input channels. One readable function per schedule.
//
// p pipeline stages, m microbatches per step, v model chunks per stage (interleaved).
// Model chunk g = c * p + s lives on stage s as its local chunk c (Megatron's layout),
// so a microbatch visits stages 0..p-1 v times.

#include <string>
#include <vector>

#include "core/error.h"

namespace troupe::pipeline {

enum class Op { Forward, Backward };

struct Instr {
  Op op;
  int microbatch;
  int chunk;  // local model chunk on this stage (0 unless interleaved)
  bool operator==(const Instr&) const = default;
};

using StagePlan = std::vector<Instr>;

struct Schedule {
  std::string name;
  int stages = 1, microbatches = 1, chunks = 1;
  std::vector<StagePlan> plans;  // one per stage
  int global_chunk(int stage, int local_chunk) const { return local_chunk * stages + stage; }
};

// All forwards, then all backwards (backwards in reverse microbatch order is not needed:
// each stage runs them in order 0..m-1). Activations held: m per stage.
Schedule gpipe_schedule(int p, int m);
// One forward, one backward: stage s warms up with min(p - s - 1, m) forwards, then
// alternates, then drains. Activations held: at most p - s per stage.
Schedule one_f_one_b_schedule(int p, int m);
// Interleaved 1F1B with v chunks per stage (needs m % p == 0): the bubble shrinks by v.
Expected<Schedule> interleaved_schedule(int p, int m, int v);
Expected<Schedule> make_schedule(const std::string& name, int p, int m, int v);

// Theoretical bubble fraction (idle / total stage time) with uniform chunk costs:
// (p - 1) / (m + p - 1) for GPipe and 1F1B, (p - 1) / (v m + p - 1) interleaved.
double theoretical_bubble(const Schedule& s);

// Runs the plans as a dependency-driven simulation: F(mb, g) needs F(mb, g - 1);
// B(mb, g) needs B(mb, g + 1), or F(mb, g) on the last chunk; each stage executes its
// list in order, one instruction at a time. Costs are per instruction of one chunk.
struct Simulation {
  double makespan = 0;
  double bubble = 0;               // 1 - busy / (stages * makespan)
  std::vector<int> peak_in_flight; // per stage: most microbatch-chunks forwarded, not yet backwarded
};
Expected<Simulation> simulate(const Schedule& s, double forward_cost = 1.0, double backward_cost = 2.0);

// Checks that every (microbatch, chunk) is forwarded and backwarded exactly once on the
// stage that owns it and that the plans cannot deadlock; names the first problem.
Expected<void> validate(const Schedule& s);

std::string to_string(const StagePlan& plan);  // "F0 F1 B0 F2 B1 ..."; chunk as F0.1

}  // namespace troupe::pipeline
