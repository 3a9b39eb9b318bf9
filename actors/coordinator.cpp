#include "actors/coordinator.h"

#include <chrono>
#include <climits>
#include <cmath>

#include <nlohmann/json.hpp>

namespace troupe::actors {

Coordinator::Coordinator(caf::actor_system& sys, JobConfig job) : sys_(sys), job_(std::move(job)) {}

Coordinator::~Coordinator() { stop_graph(); }

void Coordinator::stop_graph() {
  for (auto& ch : channels_) {  // no callbacks into actors that are going away
    ch->on_readable(nullptr);
    ch->on_writable(nullptr);
    ch->close();
  }
  caf::scoped_actor self{sys_};
  for (auto& replica : stages_) {
    for (auto& a : replica) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    self->wait_for(replica);
  }
  stages_.clear();
}

Expected<void> Coordinator::snapshot(int64_t steps_done) {
  caf::scoped_actor self{sys_};
  auto snap = std::make_shared<std::map<std::string, Tensor>>();
  std::string err;
  int opt_steps = 0;
  for (auto& a : stages_[0])
    self->request(a, caf::infinite, snapshot_atom::value)
        .receive(
            [&](SnapshotMsg& m) {
              for (auto& [name, t] : m.snapshot->tensors) (*snap)[name] = t;
              opt_steps = m.snapshot->optimizer_steps;
            },
            [&](caf::error& e) { err = sys_.render(e); });
  if (!err.empty()) return make_error("snapshot: " + err);
  snapshot_ = std::move(snap);
  snapshot_step_ = steps_done;
  snapshot_opt_steps_ = opt_steps;
  return {};
}

Expected<int64_t> Coordinator::recover(int64_t failed_step) {
  auto now = std::chrono::steady_clock::now();
  restart_times_.push_back(now);
  while (!restart_times_.empty() &&
         std::chrono::duration<double>(now - restart_times_.front()).count() > job_.supervision.within_seconds)
    restart_times_.erase(restart_times_.begin());
  if (int(restart_times_.size()) > job_.supervision.max_restarts)
    return make_error(strformat("restart intensity exceeded: more than %d restarts in %g s (supervision.max_restarts)",
                                job_.supervision.max_restarts, job_.supervision.within_seconds));
  // The fault that caused this, if injected, has fired: the restarted actors skip it.
  for (auto& f : faults_)
    if (f.first.step == failed_step + 1) f.second = true;
  // one_for_all: a pipeline (and its replicas, coupled by the all-reduce) is one gang.
  stop_graph();
  spawn_graph();
  restarts_++;
  if (!snapshot_) return make_error("no snapshot to restore from (checkpoint.snapshot_every = 0)");
  caf::scoped_actor self{sys_};
  std::string err;
  for (auto& replica : stages_)
    for (auto& a : replica)
      self->request(a, caf::infinite, restore_atom::value, RestoreMsg{snapshot_, snapshot_opt_steps_})
          .receive([](bool) {}, [&](caf::error& e) { err = sys_.render(e); });
  if (!err.empty()) return make_error("restore: " + err);
  return snapshot_step_;
}

Expected<void> Coordinator::start() {
  const auto& j = job_;
  if (j.parallel.schedule == "interleaved")
    return make_error(j.source + ": parallel.schedule: the interleaved schedule is not executed by stages yet");
  if (j.model.arch == "gpt2" && j.parallel.pp > 1)
    return make_error(j.source + ": model.arch: GPT-2's tied embeddings across pipeline stages are not "
                                 "synchronized yet; use arch = \"llama\" (untied) with pp > 1");
  auto file = data::TokenFile::open(j.data.tokens);
  if (!file) return make_error(file.error().message + " (data.tokens; run scripts/setup.sh)");
  int vocab = j.model.vocab_size ? j.model.vocab_size : int(file->vocab_size());
  if (uint32_t(vocab) < file->vocab_size())
    return make_error(strformat("%s: model.vocab_size: %d is smaller than the token file's %u", j.source.c_str(),
                                vocab, file->vocab_size()));
  int kv = j.model.n_kv_head ? j.model.n_kv_head : j.model.n_head;
  int ff = j.model.d_ff ? j.model.d_ff : 4 * j.model.d_model;
  model_cfg_ = j.model.arch == "gpt2"
                   ? model::ModelConfig::gpt2(j.model.n_layer, j.model.n_head, j.model.d_model, vocab, j.model.max_seq_len)
                   : model::ModelConfig::llama(j.model.n_layer, j.model.n_head, kv, j.model.d_model, ff, vocab,
                                               j.model.max_seq_len);
  model_cfg_.norm_eps = float(j.model.norm_eps);
  model_cfg_.rope_theta = float(j.model.rope_theta);
  if (auto ok = model_cfg_.validate(); !ok) return make_error(j.source + ": model." + ok.error().message);

  const int p = j.parallel.pp, m = j.parallel.microbatches, dp = j.parallel.dp;
  dataset_ = std::make_unique<data::TokenDataset>(std::move(*file), j.data.val_fraction);
  // Each replica runs m microbatches of batch_size / (dp m) sequences per step.
  train_ = std::make_unique<data::BatchSampler>(*dataset_, data::Split::Train, j.data.batch_size / (dp * m),
                                                j.data.seq_len, uint64_t(j.data.seed));
  auto sched = pipeline::make_schedule(j.parallel.schedule, p, m, 1);
  if (!sched) return sched.error();
  schedule_ = std::move(*sched);

  model::OptimConfig oc;
  oc.lr = float(j.optimizer.lr);
  oc.min_lr = float(j.optimizer.min_lr);
  oc.warmup_steps = j.optimizer.warmup_steps;
  oc.total_steps = j.train.steps;
  oc.beta1 = float(j.optimizer.beta1);
  oc.beta2 = float(j.optimizer.beta2);
  oc.eps = float(j.optimizer.eps);
  oc.weight_decay = float(j.optimizer.weight_decay);
  oc.grad_clip = float(j.optimizer.grad_clip);

  // Layers split as evenly as possible, earlier stages taking the remainder.
  std::vector<int> cut{0};
  for (int s = 0; s < p; s++) cut.push_back(cut.back() + model_cfg_.n_layer / p + (s < model_cfg_.n_layer % p));
  oc_ = oc;
  cut_ = cut;
  for (auto& k : j.fault.kill) {
    FaultSpec f = parse_fault_spec(k).value();
    if (f.phase == "checkpoint")
      return make_error(j.source + ": fault.kill: '" + k + "': faults during a checkpoint write are not injected yet");
    faults_.push_back({f, false});
  }
  spawn_graph();
  return {};
}

void Coordinator::spawn_graph() {
  const auto& j = job_;
  const int p = j.parallel.pp, dp = j.parallel.dp;
  const auto& cut = cut_;
  const auto& oc = oc_;
  channels_.clear();
  nodes_.clear();
  edges_.clear();
  stages_.clear();
  std::vector<std::shared_ptr<transport::InprocAllReduce>> groups;
  for (int s = 0; s < p; s++)
    groups.push_back(std::make_shared<transport::InprocAllReduce>(strformat("stage%d.grads", s), dp));
  auto node = [&](int r, int s) { return dp > 1 ? strformat("stage%d.replica%d", s, r) : strformat("stage%d", s); };
  stages_.resize(size_t(dp));
  for (int r = 0; r < dp; r++) {
    std::vector<transport::InprocChannel*> act(size_t(p), nullptr), grad(size_t(p), nullptr);
    for (int s = 0; s + 1 < p; s++) {
      // Slots bound the microbatches in flight between two stages (1F1B needs at most p).
      channels_.push_back(std::make_unique<transport::InprocChannel>(node(r, s) + "->" + node(r, s + 1), p));
      act[size_t(s)] = channels_.back().get();
      channels_.push_back(std::make_unique<transport::InprocChannel>(node(r, s) + "<-" + node(r, s + 1), p));
      grad[size_t(s)] = channels_.back().get();
      edges_.push_back({node(r, s), node(r, s + 1), "activations", p});
      edges_.push_back({node(r, s + 1), node(r, s), "gradients", p});
    }
    for (int s = 0; s < p; s++) {
      std::string name = strformat("stage%d", s);
      std::vector<FaultSpec> faults;
      for (auto& f : faults_)
        if (!f.second && (f.first.target == name || f.first.target == node(r, s))) faults.push_back(f.first);
      StageSpec spec{name, model_cfg_, model::StageRange{cut[size_t(s)], cut[size_t(s) + 1], s == 0, s == p - 1}, oc,
                     uint64_t(j.data.seed), {}, groups[size_t(s)], r, faults};
      if (s > 0) spec.links.act_in = act[size_t(s - 1)], spec.links.grad_out = grad[size_t(s - 1)];
      if (s + 1 < p) spec.links.act_out = act[size_t(s)], spec.links.grad_in = grad[size_t(s)];
      stages_[size_t(r)].push_back(sys_.spawn(stage_actor_fn, spec));
      nodes_.push_back({node(r, s), dp > 1 ? "replica" : "stage", "cpu", cut[size_t(s)], cut[size_t(s) + 1]});
      if (r > 0) edges_.push_back({node(r, s), node(0, s), "all-reduce", 0});
    }
  }
}

Expected<std::string> Coordinator::checkpoint(int64_t steps_done) {
  // Replicas hold identical parameters and moments after each step: save replica 0's.
  caf::scoped_actor self{sys_};
  std::vector<ckpt::StageSnapshot> snaps;
  std::string err;
  for (auto& a : stages_[0])
    self->request(a, caf::infinite, snapshot_atom::value)
        .receive([&](SnapshotMsg& m) { snaps.push_back(*m.snapshot); },
                 [&](caf::error& e) { err = sys_.render(e); });
  if (!err.empty()) return make_error("checkpoint: " + err);
  ckpt::Manifest mf;
  mf.step = steps_done;
  mf.layout = strformat("pp=%d dp=%d", job_.parallel.pp, job_.parallel.dp);
  mf.data_seed = job_.data.seed;
  mf.optimizer_steps = snaps.empty() ? 0 : snaps[0].optimizer_steps;
  return ckpt::write_checkpoint(job_.checkpoint.dir, mf, snaps, job_.checkpoint.keep);
}

Expected<int64_t> Coordinator::restore_latest(std::vector<std::string>* warnings) {
  auto loaded = ckpt::load_latest_checkpoint(job_.checkpoint.dir);
  if (!loaded) return loaded.error();
  if (warnings) *warnings = loaded->warnings;
  if (loaded->manifest.data_seed != job_.data.seed)
    return make_error(strformat("%s: written with data.seed %lld, the job has %lld", loaded->path.c_str(),
                                (long long)loaded->manifest.data_seed, (long long)job_.data.seed));
  auto tensors = std::make_shared<const std::map<std::string, Tensor>>(std::move(loaded->tensors));
  caf::scoped_actor self{sys_};
  std::string err;
  for (auto& replica : stages_)
    for (auto& a : replica)
      self->request(a, caf::infinite, restore_atom::value, RestoreMsg{tensors, loaded->manifest.optimizer_steps})
          .receive([](bool) {}, [&](caf::error& e) { err = sys_.render(e); });
  if (!err.empty()) return make_error(loaded->path + ": " + err);
  return loaded->manifest.step;
}

Expected<StepMetrics> Coordinator::run_step(int64_t step) {
  auto t0 = std::chrono::steady_clock::now();
  const int m = job_.parallel.microbatches, dp = job_.parallel.dp;
  // Replica r takes microbatches [r m, (r + 1) m) of the step's dp m: the same data in
  // the same order whatever the layout.
  std::vector<std::shared_ptr<const std::vector<pipeline::Microbatch>>> data;
  for (int r = 0; r < dp; r++) {
    auto mbs = std::make_shared<std::vector<pipeline::Microbatch>>();
    for (int k = 0; k < m; k++) {
      pipeline::Microbatch mb{train_->B(), train_->T(), {}, {}};
      train_->batch((step * dp + r) * m + k, mb.tokens, mb.targets);
      mbs->push_back(std::move(mb));
    }
    data.push_back(std::move(mbs));
  }
  const int64_t tokens = int64_t(dp) * m * train_->B() * train_->T();
  const float scale = 1.0f / float(tokens);
  caf::scoped_actor self{sys_};
  using handle_t = decltype(self->request(stages_[0][0], caf::infinite, run_step_atom::value, StepOrder{}));
  std::vector<handle_t> pending;
  for (int r = 0; r < dp; r++)
    for (size_t s = 0; s < stages_[size_t(r)].size(); s++)
      pending.push_back(self->request(stages_[size_t(r)][s], caf::infinite, run_step_atom::value,
                                      StepOrder{step, data[size_t(r)], schedule_.plans[s], scale}));
  double sq = 0;
  std::vector<float> losses;
  int64_t first_ns = INT64_MAX, last_ns = INT64_MIN, busy_ns = 0;
  std::string failure;  // the first stage error; every stage answers (peers fail too)
  bool failure_is_peer = false;
  size_t k = 0;
  for (auto& h : pending) {
    size_t actor = k++;
    bool replica0 = actor < stages_[0].size();
    h.receive(
        [&](StepDone& d) {
          // After the all-reduce every replica holds the same gradients: count one.
          if (replica0) sq += d.grad_sum_squares;  // in stage order: deterministic
          losses.insert(losses.end(), d.losses.begin(), d.losses.end());  // replica order
          for (auto& sp : d.spans) {
            first_ns = std::min(first_ns, sp.start_ns);
            last_ns = std::max(last_ns, sp.end_ns);
            busy_ns += sp.end_ns - sp.start_ns;
            if (tracing_) {
              if (trace_epoch_ns_ < 0) trace_epoch_ns_ = sp.start_ns;
              trace_events_.push_back(nlohmann::json{
                  {"name", strformat("%c%d", sp.op == pipeline::Op::Forward ? 'F' : 'B', sp.microbatch)},
                  {"cat", sp.op == pipeline::Op::Forward ? "forward" : "backward"},
                  {"ph", "X"}, {"pid", 1}, {"tid", actor},
                  {"ts", double(sp.start_ns - trace_epoch_ns_) / 1e3},
                  {"dur", double(sp.end_ns - sp.start_ns) / 1e3},
                  {"args", {{"step", step}}}}.dump());
            }
          }
        },
        [&](caf::error& e) {
          // Report the root cause, not the peers that failed because of it.
          std::string why = sys_.render(e);
          bool peer = why.find("a peer stage failed") != std::string::npos ||
                      why.find("data-parallel peer failed") != std::string::npos;
          if (failure.empty() || (!peer && failure_is_peer)) failure = why, failure_is_peer = peer;
        });
  }
  if (!failure.empty()) return make_error(failure);
  StepMetrics mt;
  if (last_ns > first_ns)
    mt.bubble_fraction = 1.0 - double(busy_ns) / (double(k) * double(last_ns - first_ns));
  mt.step = step;
  mt.grad_norm = std::sqrt(sq);
  float lr = model::lr_schedule(int(step), float(job_.optimizer.lr), float(job_.optimizer.min_lr),
                                job_.optimizer.warmup_steps, job_.train.steps);
  float clip = job_.optimizer.grad_clip > 0 && mt.grad_norm > 0
                   ? std::min(1.0f, float(job_.optimizer.grad_clip / (mt.grad_norm + 1e-6)))
                   : 1.0f;
  std::vector<decltype(self->request(stages_[0][0], caf::infinite, apply_atom::value, int64_t{}, 0.0f, 0.0f))>
      applied;
  for (auto& replica : stages_)
    for (auto& a : replica) applied.push_back(self->request(a, caf::infinite, apply_atom::value, step, lr, clip));
  for (auto& h : applied)
    h.receive([](int64_t) {}, [&](caf::error& e) {
      if (failure.empty()) failure = sys_.render(e);
    });
  if (!failure.empty()) return make_error(failure);
  double sum = 0;
  for (float l : losses) sum += l;
  mt.loss = losses.empty() ? NAN : sum / double(losses.size());
  mt.lr = lr;
  mt.step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  mt.tokens_per_second = double(tokens) / mt.step_seconds;
  return mt;
}

std::string Coordinator::graph_json() const {
  nlohmann::json j = {{"nodes", nlohmann::json::array()}, {"edges", nlohmann::json::array()}};
  for (auto& n : nodes_)
    j["nodes"].push_back({{"name", n.name}, {"role", n.role}, {"device", n.device}, {"layers", {n.first_layer, n.last_layer}}});
  for (auto& e : edges_) j["edges"].push_back({{"from", e.from}, {"to", e.to}, {"kind", e.kind}, {"slots", e.slots}});
  return j.dump(2);
}

std::string Coordinator::trace_json() const {
  std::string s = "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n";
  size_t actor = 0;
  for (auto& n : nodes_)
    s += nlohmann::json{{"name", "thread_name"}, {"ph", "M"}, {"pid", 1}, {"tid", actor++},
                        {"args", {{"name", n.name}}}}.dump() + ",\n";
  for (size_t i = 0; i < trace_events_.size(); i++) s += trace_events_[i] + (i + 1 < trace_events_.size() ? ",\n" : "\n");
  if (trace_events_.empty() && !nodes_.empty()) s.erase(s.size() - 2, 1);  // no trailing comma
  return s + "]}\n";
}

std::string Coordinator::graph_dot() const {
  std::string s = "digraph troupe {\n  rankdir=LR;\n";
  for (auto& n : nodes_)
    s += strformat("  \"%s\" [shape=box, label=\"%s\\n%s, layers [%d, %d)\"];\n", n.name.c_str(), n.name.c_str(),
                   n.device.c_str(), n.first_layer, n.last_layer);
  for (auto& e : edges_) {
    std::string label = e.slots ? strformat("%s (%d slots)", e.kind.c_str(), e.slots) : e.kind;
    const char* style = e.kind == "gradients" ? ", style=dashed" : e.kind == "all-reduce" ? ", style=dotted, dir=both" : "";
    s += strformat("  \"%s\" -> \"%s\" [label=\"%s\"%s];\n", e.from.c_str(), e.to.c_str(), label.c_str(), style);
  }
  return s + "}\n";
}

}  // namespace troupe::actors
