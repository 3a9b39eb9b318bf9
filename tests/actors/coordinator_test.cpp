// The coordinator as an actor and as the owner of the supervision tree, on a small
// synthetic corpus: typed requests drive steps and change the graph; an actor killed from
// outside (as a console's `kill` does) is restarted by its supervisor and the coordinator
// restores it, so the losses are those of a run where nothing happened.

#include "actors/coordinator_actor.h"

#include <cmath>
#include <filesystem>

#include "small_job.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::actors;

namespace {

std::string token_file() {
  return testing::synthetic_token_file(std::filesystem::temp_directory_path() / "troupe_coordinator_test", 3);
}

}  // namespace

TEST_CASE("coordinator actor: typed requests run steps and scale the replica group", "[actors][coordinator]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  JobConfig job = testing::small_job(token_file());
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
  JobConfig job = testing::small_job(token_file());
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
