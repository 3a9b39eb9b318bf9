// The coordinator as an actor and as the owner of the supervision tree, on a small
// synthetic corpus: typed requests drive steps and change the graph; an actor killed from
// outside (as a console's `kill` does) is restarted by its supervisor and the coordinator
// restores it, so the losses are those of a run where nothing happened.

#include "actors/coordinator_actor.h"

#include <cmath>
#include <filesystem>

#include "core/data.h"
#include "core/rng.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::actors;

namespace {

JobConfig small_job(const std::string& tokens) {
  JobConfig job;
  job.model.arch = "llama";
  job.model.n_layer = 4;
  job.model.n_head = 4;
  job.model.n_kv_head = 2;
  job.model.d_model = 32;
  job.model.d_ff = 64;
  job.model.max_seq_len = 16;
  job.data.tokens = tokens;
  job.data.seq_len = 16;
  job.data.batch_size = 8;
  job.parallel.pp = 2;
  job.parallel.microbatches = 4;
  job.train.steps = 6;
  job.checkpoint.snapshot_every = 1;
  job.validate().value();
  return job;
}

std::string token_file() {
  auto dir = std::filesystem::temp_directory_path() / "troupe_coordinator_test";
  std::filesystem::create_directories(dir);
  std::string path = (dir / "tokens.tok").string();
  std::vector<int32_t> ids(20000);
  RngStream r(12, {3});
  for (size_t i = 0; i < ids.size(); i++) ids[i] = int32_t(r.bits(i) % 97);
  data::write_token_file(path, ids, 97).value();
  return path;
}

}  // namespace

TEST_CASE("coordinator actor: typed requests run steps and scale the replica group", "[actors][coordinator]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  JobConfig job = small_job(token_file());
  CoordinatorClient coord(sys, spawn_coordinator(sys, job));
  auto info = coord.call<CoordinatorInfo>(start_atom::value);
  REQUIRE(info);
  CHECK(info->actors == 2);
  CHECK(info->graph_json.find("stage1") != std::string::npos);
  for (int64_t step = 0; step < 2; step++) {
    auto m = coord.call<StepMetrics>(run_step_atom::value, step);
    REQUIRE(m);
    CHECK(std::isfinite(m->loss));
    REQUIRE(coord.call<CheckpointReport>(checkpoint_atom::value, step + 1, false, false));
  }
  auto scaled = coord.call<CoordinatorInfo>(scale_atom::value, 2, int64_t(2));
  REQUIRE(scaled);
  CHECK(scaled->actors == 4);
  CHECK(scaled->job.parallel.dp == 2);
  CHECK(scaled->job.parallel.microbatches == 2);  // microbatches of 2 sequences stay
  REQUIRE(coord.call<StepMetrics>(run_step_atom::value, int64_t(2)));
  // A bad request is an error naming the problem; the coordinator keeps serving.
  auto bad = coord.call<CoordinatorInfo>(scale_atom::value, 3, int64_t(3));
  REQUIRE(!bad);
  CHECK(bad.error().message.find("does not split into 3 replicas") != std::string::npos);
  CHECK(coord.call<StepMetrics>(run_step_atom::value, int64_t(3)));
}

TEST_CASE("a stage killed between steps is restarted by its supervisor, with unchanged losses",
          "[actors][coordinator][supervisor]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  JobConfig job = small_job(token_file());
  std::vector<double> want, got;
  {
    Coordinator ref(sys, job);
    REQUIRE(ref.start());
    for (int64_t s = 0; s < 4; s++) want.push_back(ref.run_step(s).value().loss);
  }
  Coordinator coord(sys, job);
  REQUIRE(coord.start());
  REQUIRE(coord.after_step(0, true));
  for (int64_t s = 0; s < 4; s++) {
    if (s == 2) {  // kill stage1 from outside, as a console would
      caf::scoped_actor self{sys};
      bool killed = false;
      self->request(coord.training_supervisor(), caf::infinite, kill_child_atom::value, std::string("stage1"))
          .receive([&](bool ok) { killed = ok; }, [&](caf::error& e) { FAIL(describe_reason(e)); });
      REQUIRE(killed);
    }
    auto m = coord.run_step(s);
    if (!m) {  // the old actors are gone: recover, then replay from the snapshot
      auto back = coord.recover(s);
      REQUIRE(back);
      CHECK(*back == s);  // a snapshot is taken after every step
      m = coord.run_step(s);
    }
    REQUIRE(m);
    got.push_back(m->loss);
    REQUIRE(coord.after_step(s + 1));
  }
  CHECK(coord.restarts() == 1);
  CHECK(got == want);
  // Unknown child: an error naming it.
  caf::scoped_actor self{sys};
  std::string err;
  self->request(coord.training_supervisor(), caf::infinite, kill_child_atom::value, std::string("stage9"))
      .receive([](bool) {}, [&](caf::error& e) { err = describe_reason(e); });
  CHECK(err.find("no child named 'stage9'") != std::string::npos);
}
