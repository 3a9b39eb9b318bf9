#include "actors/speculative.h"

#include <climits>
#include <map>

#include "actors/checkpoint.h"
#include "actors/coordinator.h"
#include "actors/supervisor.h"
#include "ops/model/generate.h"

namespace troupe::actors {

namespace {

caf::error failure(const Error& e) { return caf::make_error(caf::sec::runtime_error, e.message); }

struct DraftState {
  std::shared_ptr<model::Drafter> drafter;
  static inline const char* name = "draft";
};

struct VerifierState {
  std::shared_ptr<const model::Transformer> target;
  std::unique_ptr<model::KvCache> cache;
  std::unique_ptr<model::InferenceEngine> engine;
  std::map<uint64_t, model::Sequence> seqs;
  ~VerifierState() {
    if (engine)
      for (auto& [id, s] : seqs) engine->release(s);
  }
  static inline const char* name = "verifier";
};

}  // namespace

Expected<std::shared_ptr<model::Drafter>> make_drafter(const std::string& spec,
                                                       std::shared_ptr<const model::Transformer> target, int max_seq_len) {
  if (spec.rfind("job:", 0) != 0) return model::make_drafter(spec, std::move(target), max_seq_len);
  const std::string path = spec.substr(4);
  auto job = JobConfig::load(path);
  if (!job) return make_error("--draft '" + spec + "': " + job.error().message);
  const int vocab = target->config().vocab_size;
  if (job->model.vocab_size && job->model.vocab_size != vocab)
    return make_error(strformat("--draft '%s': model.vocab_size is %d, the model's vocabulary has %d", spec.c_str(),
                                job->model.vocab_size, vocab));
  auto cfg = model_config_for(*job, vocab);
  if (!cfg) return make_error("--draft '" + spec + "': " + cfg.error().message);
  if (cfg->arch != model::Arch::Llama) return make_error("--draft '" + spec + "': the draft model must be a llama");
  // RoPE has no learned positions: the drafter may run past the length it trained on.
  cfg->max_seq_len = std::max(cfg->max_seq_len, max_seq_len);
  auto ckpt = ckpt::load_latest_checkpoint(job->checkpoint.dir);
  if (!ckpt)
    return make_error("--draft '" + spec + "': no checkpoint in " + job->checkpoint.dir + " (" + ckpt.error().message +
                      "; train it with `troupe run " + path + "`)");
  auto m = std::make_shared<model::Transformer>(*cfg);
  if (auto ok = model::load_params(*m, ckpt->tensors); !ok)
    return make_error("--draft '" + spec + "': " + ckpt->path + ": " + ok.error().message);
  m->set_training(false);
  const int blocks = (max_seq_len + 15) / 16 + 1;
  return std::shared_ptr<model::Drafter>(
      std::make_shared<model::ModelDrafter>(std::shared_ptr<const model::Transformer>(m), -1, blocks, spec));
}

draft_actor spawn_draft_actor(caf::actor_system& sys, std::shared_ptr<model::Drafter> drafter) {
  auto fn = [](draft_actor::stateful_pointer<DraftState> self,
               std::shared_ptr<model::Drafter> d) -> draft_actor::behavior_type {
    self->state.drafter = std::move(d);
    return {
        [self](propose_atom, const std::vector<int32_t>& ctx, int k, const model::Sampling& s,
               uint64_t round) -> caf::result<model::Draft> {
          auto d = self->state.drafter->propose(ctx, k, s, round);
          if (!d) return failure(d.error());
          return *d;
        },
    };
  };
  return sys.spawn<caf::detached>(fn, std::move(drafter));
}

verifier_actor spawn_verifier_actor(caf::actor_system& sys, std::shared_ptr<const model::Transformer> target,
                                    int kv_blocks, int block_tokens) {
  auto fn = [](verifier_actor::stateful_pointer<VerifierState> self, std::shared_ptr<const model::Transformer> t,
               int blocks, int bt) -> verifier_actor::behavior_type {
    auto& st = self->state;
    st.target = std::move(t);
    st.cache = std::make_unique<model::KvCache>(st.target->config(), blocks, bt);
    st.engine = std::make_unique<model::InferenceEngine>(*st.target, *st.cache);
    return {
        [self](open_atom, uint64_t id, const std::vector<int32_t>& prompt) -> caf::result<bool> {
          auto& st = self->state;
          if (prompt.empty()) return caf::make_error(caf::sec::invalid_argument, "verifier: empty prompt");
          if (st.seqs.count(id))
            return caf::make_error(caf::sec::invalid_argument, strformat("verifier: sequence %llu is open", (unsigned long long)id));
          auto& s = st.seqs[id];
          s.tokens = prompt;
          st.engine->reuse_prefix(s);
          return true;
        },
        [self](verify_atom, uint64_t id, const model::Draft& d, const model::Sampling& s,
               uint64_t round) -> caf::result<model::Verdict> {
          auto& st = self->state;
          auto it = st.seqs.find(id);
          if (it == st.seqs.end())
            return caf::make_error(caf::sec::invalid_argument, strformat("verifier: no sequence %llu", (unsigned long long)id));
          auto v = model::verify_on_target(*st.engine, it->second, d, s, round);
          if (!v) return failure(v.error());
          return *v;
        },
        [self](close_atom, uint64_t id) {
          auto& st = self->state;
          if (auto it = st.seqs.find(id); it != st.seqs.end()) {
            st.engine->release(it->second);
            st.seqs.erase(it);
          }
        },
    };
  };
  return sys.spawn<caf::detached>(fn, std::move(target), kv_blocks, block_tokens);
}

Expected<std::vector<int32_t>> speculative_generate(caf::actor_system& sys, const draft_actor& drafter,
                                                    const verifier_actor& verifier, const std::vector<int32_t>& prompt,
                                                    int max_new, const model::Sampling& s, int k_max,
                                                    model::SpeculativeStats* stats,
                                                    const std::function<bool(int32_t)>& on_token) {
  if (auto ok = model::check_speculative_sampling(s); !ok) return ok.error();
  static std::atomic<uint64_t> next_id{1};
  const uint64_t id = next_id++;
  caf::scoped_actor self{sys};
  std::string err;
  auto on_error = [&](caf::error& e) { err = describe_reason(e); };
  self->request(verifier, caf::infinite, open_atom::value, id, prompt).receive([](bool) {}, on_error);
  if (!err.empty()) return make_error(err);
  model::AdaptiveK k{k_max, std::min(4, k_max), 0.5};
  model::SpeculativeStats local;
  // The verifier bounds the context itself (its error says so).
  auto out = model::speculative_rounds(
      prompt, max_new, INT_MAX, k, local,
      [&](const std::vector<int32_t>& ctx, int kr, uint64_t r) -> Expected<model::Draft> {
        model::Draft d;
        self->request(drafter, caf::infinite, propose_atom::value, ctx, kr, s, r)
            .receive([&](model::Draft& x) { d = std::move(x); }, on_error);
        if (!err.empty()) return make_error(err);
        return d;
      },
      [&](const model::Draft& d, uint64_t r) -> Expected<model::Verdict> {
        model::Verdict v;
        self->request(verifier, caf::infinite, verify_atom::value, id, d, s, r)
            .receive([&](model::Verdict& x) { v = std::move(x); }, on_error);
        if (!err.empty()) return make_error(err);
        return v;
      },
      on_token);
  self->send(verifier, close_atom::value, id);
  if (stats) *stats = local;
  return out;
}

}  // namespace troupe::actors
