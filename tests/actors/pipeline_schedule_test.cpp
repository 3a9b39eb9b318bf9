#include "actors/pipeline_schedule.h"

#include "test_util.h"

using namespace troupe::pipeline;

TEST_CASE("1F1B and GPipe plans have the textbook shape", "[pipeline]") {
  Schedule s = one_f_one_b_schedule(4, 8);
  CHECK(to_string(s.plans[0]) == "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7");
  CHECK(to_string(s.plans[3]) == "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7");
  CHECK(to_string(gpipe_schedule(2, 3).plans[1]) == "F0 F1 F2 B0 B1 B2");
  auto il = interleaved_schedule(2, 4, 2);
  REQUIRE(il.ok());
  // Microbatches 0,1 through chunk 0, then through chunk 1, ...
  CHECK(to_string(il->plans[0]).rfind("F0 F1 F0.1 F1.1", 0) == 0);
}

TEST_CASE("every schedule is complete, deadlock-free and bounded in memory", "[pipeline]") {
  for (int p : {1, 2, 3, 4})
    for (int m = 1; m <= 9; m++) {
      INFO("p=" << p << " m=" << m);
      for (auto& s : {gpipe_schedule(p, m), one_f_one_b_schedule(p, m)}) {
        INFO(s.name);
        REQUIRE(validate(s).ok());
        auto sim = simulate(s);
        REQUIRE(sim.ok());
        for (int st = 0; st < p; st++)
          CHECK(sim->peak_in_flight[size_t(st)] == (s.name == "gpipe" ? m : std::min(m, p - st)));
      }
      for (int v : {2, 3}) {
        if (m % p) continue;
        auto s = interleaved_schedule(p, m, v);
        REQUIRE(s.ok());
        INFO("interleaved v=" << v);
        auto ok = validate(*s);
        INFO((ok.ok() ? std::string() : ok.error().message));
        CHECK(ok.ok());
      }
    }
}

TEST_CASE("simulated bubbles match theory; interleaving shrinks them", "[pipeline]") {
  for (int p : {2, 4})
    for (int m : {4, 8, 16}) {
      INFO("p=" << p << " m=" << m);
      // With uniform costs GPipe and 1F1B are exactly (p-1)/(m+p-1).
      for (auto& s : {gpipe_schedule(p, m), one_f_one_b_schedule(p, m)}) {
        auto sim = simulate(s, 1.0, 2.0);
        REQUIRE(sim.ok());
        CHECK(sim->bubble == Approx(theoretical_bubble(s)).margin(1e-12));
      }
      auto il = interleaved_schedule(p, m, 2);
      REQUIRE(il.ok());
      auto sim = simulate(*il, 1.0, 2.0);
      REQUIRE(sim.ok());
      CHECK(std::abs(sim->bubble - theoretical_bubble(*il)) < 0.03);
      CHECK(sim->bubble < simulate(one_f_one_b_schedule(p, m))->bubble);
    }
}

TEST_CASE("bad plans are caught with the stage and instruction named", "[pipeline]") {
  Schedule s = one_f_one_b_schedule(2, 2);
  s.plans[1] = {{Op::Forward, 1, 0}, {Op::Forward, 0, 0}, {Op::Backward, 0, 0}, {Op::Backward, 1, 0}};
  s.plans[0] = {{Op::Forward, 0, 0}, {Op::Backward, 0, 0}, {Op::Forward, 1, 0}, {Op::Backward, 1, 0}};
  auto v = validate(s);
  REQUIRE_FALSE(v.ok());
  CHECK_THAT(v.error().message, Catch::Contains("deadlocks") && Catch::Contains("stage 1 waits at F1.0"));
  Schedule t = gpipe_schedule(2, 2);
  t.plans[0].pop_back();
  CHECK_THAT(validate(t).error().message, Catch::Contains("stage 0: microbatch 1 chunk 0 has 1 forwards and 0 backwards"));
  CHECK_THAT(interleaved_schedule(4, 6, 2).error().message, Catch::Contains("not a multiple of 4 stages"));
  CHECK_THAT(make_schedule("zigzag", 2, 2, 1).error().message, Catch::Contains("not gpipe, 1f1b or interleaved"));
}
