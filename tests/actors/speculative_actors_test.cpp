// Speculative decoding through a DraftActor and a VerifierActor: greedy output equals
// target-only greedy for each drafter, concurrent requests to one verifier stay apart,
// and errors come back as errors.

#include "actors/speculative.h"

#include "test_util.h"

using namespace troupe;
using namespace troupe::actors;
using namespace troupe::model;

TEST_CASE("speculative decoding as actors equals target-only greedy decoding", "[actors][speculative]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  const int V = 29;
  auto target = std::make_shared<Transformer>(ModelConfig::llama(3, 2, 1, 16, 32, V, 64));
  target->init_weights(8);
  target->set_training(false);
  std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 3, 1, 4, 1};
  std::vector<int32_t> want;
  {
    KvCache cache(target->config(), 16, 4);
    InferenceEngine eng(*target, cache);
    Sequence s;
    s.tokens = prompt;
    for (int i = 0; i < 25; i++) {
      want.push_back(sample_token(eng.step({&s}).value(), V, Sampling{}, 0));
      s.tokens.push_back(want.back());
    }
  }
  auto verifier = spawn_verifier_actor(sys, target, 32, 4);
  std::vector<std::shared_ptr<Drafter>> drafters = {std::make_shared<NgramDrafter>(),
                                                    std::make_shared<ModelDrafter>(*target, 1, 16, "self-1")};
  for (auto& d : drafters) {
    auto draft = spawn_draft_actor(sys, d);
    SpeculativeStats st;
    auto got = speculative_generate(sys, draft, verifier, prompt, 25, Sampling{}, 5, &st);
    REQUIRE(got);
    INFO("drafter " << d->name());
    CHECK(*got == want);
    CHECK(st.generated == 25);
    CHECK(st.rounds <= 25);
    caf::anon_send_exit(draft, caf::exit_reason::user_shutdown);
  }
  // Repetition penalty is refused, with the reason.
  auto draft = spawn_draft_actor(sys, drafters[0]);
  Sampling rp;
  rp.repetition_penalty = 1.3f;
  auto bad = speculative_generate(sys, draft, verifier, prompt, 5, rp, 4);
  REQUIRE(!bad);
  CHECK(bad.error().message.find("repetition_penalty is not supported") != std::string::npos);
  auto empty = speculative_generate(sys, draft, verifier, {}, 5, Sampling{}, 4);
  CHECK(empty.error().message == "verifier: empty prompt");
  caf::anon_send_exit(draft, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(verifier, caf::exit_reason::user_shutdown);
}
