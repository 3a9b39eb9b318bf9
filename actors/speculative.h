#pragma once
// Speculative decoding as actors: a DraftActor owns a drafter (a small model, the
// target's first layers, or prompt lookup) and proposes k tokens; a VerifierActor owns
// the target model, its KV cache and the sequences it is decoding, scores a draft in one
// forward and answers with the verdict of the exact acceptance rule
// (ops/model/speculative.h). A client drives the rounds with typed requests and adapts k
// to the acceptance rate. Both actors are detached: a forward pass blocks a thread.

#include <caf/all.hpp>

#include <functional>
#include <memory>
#include <vector>

#include "ops/model/speculative.h"

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::model::Draft)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::model::Verdict)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::model::Sampling)

namespace troupe::actors {

using propose_atom = caf::atom_constant<caf::atom("propose")>;
using verify_atom = caf::atom_constant<caf::atom("verify")>;
using open_atom = caf::atom_constant<caf::atom("open")>;
using close_atom = caf::atom_constant<caf::atom("close")>;

// (propose, context, k, sampling, round) -> a draft of at most k tokens.
using draft_actor = caf::typed_actor<
    caf::replies_to<propose_atom, std::vector<int32_t>, int, model::Sampling, uint64_t>::with<model::Draft>>;

// (open, id, prompt) -> true: a new sequence; (verify, id, draft, sampling, round) -> the
// verdict, applied to that sequence; (close, id): its KV blocks go back to the pool.
using verifier_actor =
    caf::typed_actor<caf::replies_to<open_atom, uint64_t, std::vector<int32_t>>::with<bool>,
                     caf::replies_to<verify_atom, uint64_t, model::Draft, model::Sampling, uint64_t>::with<model::Verdict>,
                     caf::reacts_to<close_atom, uint64_t>>;

// model::make_drafter's specs, plus "job:FILE.toml": the model a Troupe job trained (its
// [model] section, its newest good checkpoint in checkpoint.dir), e.g. the distilled
// drafter of examples/jobs/draft_distill.toml.
Expected<std::shared_ptr<model::Drafter>> make_drafter(const std::string& spec,
                                                       std::shared_ptr<const model::Transformer> target, int max_seq_len);

draft_actor spawn_draft_actor(caf::actor_system& sys, std::shared_ptr<model::Drafter> drafter);
// The target must hold the whole model and outlive the actor.
verifier_actor spawn_verifier_actor(caf::actor_system& sys, std::shared_ptr<const model::Transformer> target,
                                    int kv_blocks, int block_tokens = 16);

// Drives speculative decoding of one prompt through the two actors: up to max_new tokens,
// k adapted between 1 and k_max; on_token may stop it.
Expected<std::vector<int32_t>> speculative_generate(caf::actor_system& sys, const draft_actor& drafter,
                                                    const verifier_actor& verifier, const std::vector<int32_t>& prompt,
                                                    int max_new, const model::Sampling& s, int k_max,
                                                    model::SpeculativeStats* stats = nullptr,
                                                    const std::function<bool(int32_t)>& on_token = nullptr);

}  // namespace troupe::actors
