// `troupe bench pipeline`: the bubble fraction measured by running the stage actors
// (idle = waiting for inputs; see Coordinator's StepMetrics) against theory,
// (p-1)/(m+p-1) for GPipe and 1F1B and (p-1)/(v m+p-1) for interleaved 1F1B with v = 2,
// for several p and m. Kernels run one thread each so
// that stages do not fight over cores; on a machine with fewer cores than stages the
// measurement cannot reach theory, and the JSON says how many cores there were.

#include <omp.h>

#include <caf/all.hpp>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "actors/coordinator.h"
#include "apps/commands.h"
#include "core/data.h"
#include "core/rng.h"
#include "ops/ops.h"

namespace troupe::app {

int cmd_bench_pipeline(int argc, char** argv) {
  bool as_json = false;
  int steps = 8;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--json") as_json = true;
    else if (a == "--steps" && i + 1 < argc) steps = std::max(2, std::atoi(argv[++i]));
    else throw std::runtime_error("troupe bench pipeline: unknown option '" + a + "' (--json, --steps N)");
  }
  // A synthetic corpus: the bench measures scheduling, not learning. Theory assumes
  // stages of equal cost, so the vocabulary is small (V = 256: the head costs about a
  // fifth of a layer) and does not make the last stage the slowest.
  auto dir = std::filesystem::temp_directory_path() / "troupe_bench_pipeline";
  std::filesystem::create_directories(dir);
  std::string tok = (dir / "tokens.tok").string();
  std::vector<int32_t> ids(200000);
  RngStream rng(3, {1});
  const int V = 256;
  for (size_t i = 0; i < ids.size(); i++) ids[i] = int32_t(rng.bits(i) % uint32_t(V));
  if (auto ok = data::write_token_file(tok, ids, V); !ok) throw std::runtime_error(ok.error().message);

  ops::set_num_threads(1);
  nlohmann::json results = nlohmann::json::array();
  for (std::string sched : {"gpipe", "1f1b", "interleaved"})
    for (int p : {2, 4})
      for (int m : {4, 8}) {
        JobConfig job;
        job.model.arch = "llama";
        job.model.n_layer = 8;
        job.model.n_head = 4;
        job.model.n_kv_head = 2;
        job.model.d_model = 128;
        job.model.d_ff = 352;
        job.model.max_seq_len = 64;
        job.data.tokens = tok;
        job.data.seq_len = 64;
        job.data.batch_size = 2 * m;
        job.parallel.pp = p;
        job.parallel.microbatches = m;
        job.parallel.schedule = sched;
        const int v = sched == "interleaved" ? 2 : 1;  // 2 model chunks per stage
        job.parallel.virtual_stages = v;
        job.train.steps = steps;
        job.checkpoint.snapshot_every = 0;
        if (auto ok = job.validate(); !ok) throw std::runtime_error(ok.error().message);
        caf::actor_system_config cfg;
        caf::actor_system sys{cfg};
        actors::Coordinator coord(sys, job);
        if (auto ok = coord.start(); !ok) throw std::runtime_error(ok.error().message);
        double sum = 0;
        for (int s = 0; s < steps; s++) {
          auto mt = coord.run_step(s);
          if (!mt) throw std::runtime_error(mt.error().message);
          if (s > 0) sum += mt->bubble_fraction;  // step 0 warms up
        }
        // (p-1)/(m+p-1) for GPipe and 1F1B; (p-1)/(v m+p-1) interleaved.
        double measured = sum / (steps - 1), theory = double(p - 1) / double(v * m + p - 1);
        if (!as_json)
          std::printf("%-11s p=%d m=%d v=%d: bubble %.3f measured, %.3f theory (%+.1f points)\n", sched.c_str(), p, m,
                      v, measured, theory, 100 * (measured - theory));
        results.push_back(
            {{"schedule", sched}, {"p", p}, {"m", m}, {"v", v}, {"measured", measured}, {"theory", theory}});
      }
  nlohmann::json out = {{"bench", "pipeline"}, {"cores", omp_get_num_procs()}, {"steps", steps}, {"results", results}};
  std::printf("%s\n", out.dump(as_json ? -1 : 2).c_str());
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace troupe::app
