#include "core/job.h"

#include "test_util.h"

using namespace troupe;

TEST_CASE("job files parse into the config", "[job]") {
  auto j = JobConfig::parse(R"(
[model]
arch = "llama"
n_layer = 8
n_head = 4
n_kv_head = 2
d_model = 64
[parallel]
dp = 2
pp = 2
microbatches = 4
schedule = "interleaved"
virtual_stages = 2
[data]
batch_size = 16
[fault]
kill = ["stage1@step7:backward", "stage0@step3:forward"]
)",
                            "job.toml");
  REQUIRE(j.ok());
  CHECK(j->model.arch == "llama");
  CHECK(j->model.n_kv_head == 2);
  CHECK(j->parallel.schedule == "interleaved");
  CHECK(j->fault.kill.size() == 2);
  CHECK(j->optimizer.lr == 1e-3);  // default kept
  auto f = parse_fault_spec(j->fault.kill[0]);
  REQUIRE(f.ok());
  CHECK(f->target == "stage1");
  CHECK(f->step == 7);
  CHECK(f->phase == "backward");

  // The printed form parses back to the same config.
  auto again = JobConfig::parse(j->to_toml(), "roundtrip.toml");
  REQUIRE(again.ok());
  CHECK(again->to_toml() == j->to_toml());
}

TEST_CASE("job file errors name file, line and field", "[job]") {
  auto err = [](const std::string& text) {
    auto j = JobConfig::parse(text, "job.toml");
    REQUIRE_FALSE(j.ok());
    return j.error().message;
  };
  CHECK(err("[model]\nn_layer = \"four\"\n") == "job.toml:2: model.n_layer: expected an integer, got a string");
  CHECK_THAT(err("[model]\nn_layers = 4\n"), Catch::StartsWith("job.toml:2: model.n_layers: unknown key"));
  CHECK_THAT(err("[modle]\nn_layer = 4\n"), Catch::StartsWith("job.toml:1: modle: unknown section"));
  CHECK_THAT(err("[model]\nn_layer = \n"), Catch::StartsWith("job.toml:2:"));
  CHECK_THAT(err("[parallel]\nschedule = \"zigzag\"\n"),
             Catch::StartsWith("job.toml:2: parallel.schedule: 'zigzag' is not"));
  CHECK_THAT(err("[data]\nbatch_size = 6\n[parallel]\ndp = 4\n"),
             Catch::Contains("data.batch_size: 6 must divide evenly"));
  CHECK_THAT(err("[fault]\nkill = \"stage1@7:backward\"\n"), Catch::StartsWith("job.toml:2: fault.kill: 'stage1@7"));
  CHECK_THAT(err("[fault]\nkill = [\"stage1@step7:sideways\"]\n"), Catch::Contains("phase 'sideways'"));
  CHECK_THAT(err("[train]\nsteps = 0\n"), Catch::Contains("train.steps: must be positive"));
  CHECK_THAT(err("[model]\nn_layer = 99999999999\n"), Catch::Contains("out of range"));
  CHECK_THAT(err("model = 3\n"), Catch::Contains("model: expected a table"));
}

TEST_CASE("job overrides (--set) go through the same checks", "[job]") {
  JobConfig j;
  REQUIRE(j.set("parallel.pp=2").ok());
  CHECK(j.parallel.pp == 2);
  REQUIRE(j.set("optimizer.lr=3e-4").ok());
  CHECK(j.optimizer.lr == 3e-4);
  REQUIRE(j.set("parallel.schedule=gpipe").ok());  // bare word -> string
  CHECK(j.parallel.schedule == "gpipe");
  REQUIRE(j.set("fault.kill=[\"stage0@step2:optimizer\"]").ok());
  CHECK(j.fault.kill == std::vector<std::string>{"stage0@step2:optimizer"});
  CHECK_THAT(j.set("parallel.dp=two").error().message, Catch::Contains("parallel.dp: expected an integer"));
  CHECK_THAT(j.set("parallel.ddp=2").error().message, Catch::Contains("unknown field"));
  CHECK_THAT(j.set("pp=2").error().message, Catch::Contains("expected section.key=value"));
}
