#include "actors/coordinator.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/rng.h"

namespace troupe::actors {

void SupervisorInbox::push(const RestartNotice& n) {
  {
    std::lock_guard<std::mutex> lk(mu);
    notices.push_back(n);
  }
  cv.notify_all();
}

void SupervisorInbox::exit(std::string why) {
  {
    std::lock_guard<std::mutex> lk(mu);
    exited = std::move(why);
  }
  cv.notify_all();
}

bool SupervisorInbox::pending() {
  std::lock_guard lk(mu);
  return !notices.empty() || exited.has_value();
}

Expected<RestartNotice> SupervisorInbox::next(std::chrono::seconds timeout) {
  std::unique_lock<std::mutex> lk(mu);
  if (!cv.wait_for(lk, timeout, [&] { return !notices.empty() || exited; }))
    return make_error(strformat("no restart within %lld s", (long long)timeout.count()));
  if (notices.empty()) return make_error(*exited);
  RestartNotice n = std::move(notices.front());
  notices.pop_front();
  return n;
}

void Wiring::build(int p, int v, int dp, const std::function<std::string(int r, int g)>& chunk_name) {
  const int G = p * v;
  retired = std::move(channels);
  channels.clear();
  groups.clear();
  for (int g = 0; g < G; g++)
    groups.push_back(std::make_shared<transport::InprocAllReduce>(strformat("chunk%d.grads", g), dp));
  links.assign(size_t(dp), std::vector<std::vector<pipeline::StageLinks>>(size_t(p), std::vector<pipeline::StageLinks>(size_t(v))));
  for (int r = 0; r < dp; r++) {
    // Chunk g (on stage g % p) sends activations to chunk g + 1 on act[g] and receives
    // their gradient on grad[g]: one channel pair per edge, so each is FIFO in
    // microbatch order under every schedule. Slots bound the microbatches in flight
    // on an edge (1F1B needs at most p).
    std::vector<transport::InprocChannel*> act, grad;
    for (int g = 0; g + 1 < G; g++) {
      channels.push_back(std::make_unique<transport::InprocChannel>(chunk_name(r, g) + "->" + chunk_name(r, g + 1), p));
      act.push_back(channels.back().get());
      channels.push_back(std::make_unique<transport::InprocChannel>(chunk_name(r, g) + "<-" + chunk_name(r, g + 1), p));
      grad.push_back(channels.back().get());
    }
    for (int g = 0; g < G; g++) links[size_t(r)][size_t(g % p)][size_t(g / p)] = pipeline::chunk_links(act, grad, g);
  }
}

void Wiring::close_all() {
  for (auto& ch : channels) {  // no callbacks into actors that are gone
    ch->on_readable(nullptr);
    ch->on_writable(nullptr);
    ch->close();
  }
}

Coordinator::Coordinator(caf::actor_system& sys, JobConfig job) : sys_(sys), job_(std::move(job)) {}

Coordinator::~Coordinator() {
  if (write_) write_->result.wait();  // never leave a write half-done on purpose
  stop_graph();
  if (checkpoint_sup_) {
    caf::scoped_actor self{sys_};
    caf::anon_send_exit(checkpoint_sup_, caf::exit_reason::user_shutdown);
    self->wait_for(checkpoint_sup_);
  }
}

void Coordinator::stop_graph() {
  if (training_sup_) {
    // The supervisor stops its children (reverse order) before it exits.
    caf::scoped_actor self{sys_};
    caf::anon_send_exit(training_sup_, caf::exit_reason::user_shutdown);
    self->wait_for(training_sup_);
    training_sup_ = nullptr;
  }
  if (wiring_) wiring_->close_all();
  stages_.clear();
}

std::string Coordinator::node_name(int r, int s) const {
  return job_.parallel.dp > 1 ? strformat("stage%d.replica%d", s, r) : strformat("stage%d", s);
}

// Spawns a supervisor whose exit (it gave up, or was stopped) is reported to `inbox`.
static supervisor_actor spawn_supervised(caf::actor_system& sys, SupervisorSpec spec,
                                         const std::shared_ptr<SupervisorInbox>& inbox) {
  spec.on_restart = [inbox](const RestartNotice& n) { inbox->push(n); };
  auto sup = spawn_supervisor(sys, std::move(spec));
  caf::actor_cast<caf::strong_actor_ptr>(sup)->get()->attach_functor(
      [inbox](const caf::error& reason) { inbox->exit(describe_reason(reason)); });
  return sup;
}

static Expected<ChildList> children_of(caf::actor_system& sys, const supervisor_actor& sup) {
  caf::scoped_actor self{sys};
  ChildList out;
  std::string err;
  self->request(sup, caf::infinite, which_children_atom::value)
      .receive([&](ChildList& l) { out = std::move(l); }, [&](caf::error& e) { err = sys.render(e); });
  if (!err.empty()) return make_error(err);
  return out;
}

Expected<void> Coordinator::start_writers() {
  checkpoint_inbox_ = std::make_shared<SupervisorInbox>();
  SupervisorSpec spec;
  spec.name = "checkpoint";
  spec.strategy = RestartStrategy::one_for_one;
  spec.max_restarts = job_.supervision.max_restarts;
  spec.within_seconds = job_.supervision.within_seconds;
  for (const char* name : {"snapshotter", "writer"})  // detached: their work never holds a scheduler thread
    spec.children.push_back({name, [name](caf::actor_system& sys) {
                               return caf::actor_cast<caf::actor>(
                                   sys.spawn<caf::detached>(checkpoint_writer_fn, std::string(name)));
                             }});
  checkpoint_sup_ = spawn_supervised(sys_, std::move(spec), checkpoint_inbox_);
  return refresh_writers();
}

Expected<void> Coordinator::refresh_writers() {
  auto kids = children_of(sys_, checkpoint_sup_);
  if (!kids) return make_error("checkpoint writers: " + kids.error().message);
  for (auto& c : kids->children) {
    auto h = caf::actor_cast<checkpoint_writer>(c.handle);
    (c.name == "writer" ? writer_ : snapshotter_) = h;
  }
  return {};
}

Expected<CheckpointReport> Coordinator::after_step(int64_t steps_done, bool force_snapshot, bool force_disk) {
  auto t0 = std::chrono::steady_clock::now();
  const auto& c = job_.checkpoint;
  CheckpointReport report;
  report.disk = force_disk || (c.disk_every > 0 && steps_done > 0 && steps_done % c.disk_every == 0);
  report.snapshot = force_snapshot || report.disk || (c.snapshot_every > 0 && steps_done % c.snapshot_every == 0);
  // A finished write is reported now; a new one waits for the one in flight (one at a time).
  if (auto ok = collect_write(report, report.disk); !ok) return ok.error();
  if (report.snapshot && snapshot_step_ != steps_done) {
    // Pin replica 0's stages (replicas hold identical state after each step).
    caf::scoped_actor self{sys_};
    CheckpointOrder order;
    order.step = steps_done;
    std::string err;
    for (auto& a : stages_[0])
      self->request(a, caf::infinite, snapshot_atom::value)
          .receive([&](SnapshotSource& src) { order.sources.push_back(std::move(src)); },
                   [&](caf::error& e) { err = describe_reason(e); });
    if (!err.empty()) {  // release what was pinned
      for (auto& src : order.sources) caf::anon_send(src.owner, released_atom::value);
      return make_error("snapshot: " + err);
    }
    order.copied = std::make_shared<std::promise<SnapshotPtr>>();
    snapshot_ = order.copied->get_future().share();
    snapshot_step_ = steps_done;
    caf::anon_send(snapshotter_, checkpoint_atom::value, std::move(order));
  }
  if (report.disk) {
    write_ = PendingWrite{steps_done, snapshot_, {}, 0};
    start_write(*write_);
  }
  report.stall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  pin_stall_seconds_ += report.stall_seconds;
  return report;
}

void Coordinator::start_write(PendingWrite& w) {
  CheckpointOrder order;
  order.step = w.step;
  order.snapshot = w.snapshot;
  auto written = std::make_shared<std::promise<WriteResult>>();
  w.result = written->get_future();
  order.written = std::move(written);
  order.manifest.step = w.step;
  order.manifest.layout = strformat("pp=%d dp=%d", job_.parallel.pp, job_.parallel.dp);
  order.manifest.data_seed = job_.data.seed;
  order.dir = job_.checkpoint.dir;
  order.keep = job_.checkpoint.keep;
  for (auto& f : faults_)
    if (f.spec.phase == "checkpoint") order.faults.push_back(f);
  w.attempts++;
  caf::anon_send(writer_, checkpoint_atom::value, std::move(order));
}

Expected<void> Coordinator::collect_write(CheckpointReport& report, bool wait) {
  while (write_) {
    if (!wait && write_->result.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return {};
    WriteResult r;
    try {
      r = write_->result.get();
    } catch (const std::exception& e) {  // the writer died without answering
      r = {false, std::string("checkpoint writer died: ") + e.what(), 0};
    }
    if (r.ok) {
      report.published.push_back(r.path_or_error);
      write_.reset();
      return {};
    }
    if (r.path_or_error.rfind("checkpoint writer died", 0) != 0 || write_->attempts >= 3)
      return make_error(strformat("checkpoint of step %lld: %s", (long long)write_->step, r.path_or_error.c_str()));
    // The writer crashed mid-write: what it wrote stays unpublished (*.tmp). Restart it
    // (one_for_one: nothing else depends on it) and write the same host copy again.
    // Its supervisor (one_for_one) restarts it; take the new handle.
    auto notice = checkpoint_inbox_->next(std::chrono::seconds(30));
    if (!notice) return make_error("checkpoint writer not restarted: " + notice.error().message);
    if (auto ok = refresh_writers(); !ok) return ok;
    restarts_++;
    report.events.push_back(strformat("%s; restarted the checkpoint writer, writing step %lld again", r.path_or_error.c_str(),
                                      (long long)write_->step));
    start_write(*write_);
    wait = true;  // the retry is collected now: the failure is already on the caller's path
  }
  return {};
}

Expected<void> Coordinator::restore_all(std::shared_ptr<const std::map<std::string, Tensor>> tensors,
                                       int optimizer_steps) {
  caf::scoped_actor self{sys_};
  std::string err;
  for (auto& replica : stages_)
    for (auto& a : replica)
      self->request(a, caf::infinite, restore_atom::value, RestoreMsg{tensors, optimizer_steps})
          .receive([](bool) {}, [&](caf::error& e) { err = describe_reason(e); });
  if (!err.empty()) return make_error(err);
  return {};
}

Expected<SnapshotPtr> Coordinator::latest_snapshot() {
  if (!snapshot_.valid()) return make_error("no snapshot to restore from (checkpoint.snapshot_every = 0)");
  try {
    return snapshot_.get();  // the copy of the stages as they were (it may still be running)
  } catch (const std::exception& e) {
    return make_error(strformat("the snapshot of step %lld was lost: %s", (long long)snapshot_step_, e.what()));
  }
}

Expected<void> Coordinator::restore_all(const SnapshotPtr& snap) {
  return restore_all(std::shared_ptr<const std::map<std::string, Tensor>>(snap, &snap->tensors), snap->optimizer_steps);
}

Expected<void> Coordinator::scale_dp(int n, int64_t steps_done) {
  // The microbatch size stays (memory per microbatch does not change) and so does the
  // global batch: n replicas run batch_size / (n B) microbatches each.
  JobConfig next = job_;
  const int B = train_->B();
  if (n < 1 || job_.data.batch_size % (n * B) != 0)
    return make_error(strformat("scale dp %d: the batch of %d sequences does not split into %d replicas of "
                                "microbatches of %d", n, job_.data.batch_size, n, B));
  next.parallel.dp = n;
  next.parallel.microbatches = job_.data.batch_size / (n * B);
  if (auto ok = next.validate(); !ok) return make_error("scale dp " + std::to_string(n) + ": " + ok.error().message);
  auto sched = pipeline::make_schedule(next.parallel.schedule, next.parallel.pp, next.parallel.microbatches,
                                       schedule_.chunks);
  if (!sched) return make_error("scale dp " + std::to_string(n) + ": " + sched.error().message);
  auto rep = after_step(steps_done, true);
  if (!rep) return rep.error();
  auto snap = latest_snapshot();
  if (!snap) return make_error("scale dp: " + snap.error().message);
  stop_graph();
  job_ = std::move(next);
  schedule_ = std::move(*sched);
  train_ = std::make_unique<data::BatchSampler>(*dataset_, data::Split::Train,
                                                job_.data.batch_size / (n * job_.parallel.microbatches),
                                                job_.data.seq_len, uint64_t(job_.data.seed));
  if (auto ok = spawn_graph(); !ok) return make_error("scale dp: " + ok.error().message);
  if (auto ok = restore_all(*snap); !ok) return make_error("scale dp: restore: " + ok.error().message);
  return {};
}

Expected<CheckpointReport> Coordinator::flush_checkpoints() {
  CheckpointReport report;
  if (auto ok = collect_write(report, true); !ok) return ok.error();
  return report;
}

Expected<int64_t> Coordinator::recover(int64_t failed_step) {
  // The training supervisor has seen the failure: it stops the rest of the gang, rebuilds
  // the wiring and starts new stage actors, or gives up (restart intensity exceeded).
  auto notice = training_inbox_->next(std::chrono::seconds(60));
  if (!notice) return make_error(notice.error().message);
  for (auto& c : notice->restarted)
    for (int r = 0; r < int(stages_.size()); r++)
      for (int s = 0; s < int(stages_[size_t(r)].size()); s++)
        if (node_name(r, s) == c.name) stages_[size_t(r)][size_t(s)] = caf::actor_cast<stage_actor>(c.handle);
  restarts_++;
  last_restart_seconds_ = notice->seconds;
  last_failed_child_ = notice->failed_child;
  last_failure_reason_ = notice->reason;
  auto snap = latest_snapshot();
  if (!snap) return snap.error();
  if (auto ok = restore_all(*snap); !ok) return make_error("restore: " + ok.error().message);
  return (*snap)->step;
}

Expected<void> Coordinator::start() {
  const auto& j = job_;
  if (j.model.arch == "gpt2" && j.parallel.pp > 1)
    return make_error(j.source + ": model.arch: GPT-2's tied embeddings across pipeline stages are not "
                                 "synchronized yet; use arch = \"llama\" (untied) with pp > 1");
  auto file = data::TokenFile::open(j.data.tokens);
  if (!file) return make_error(file.error().message + " (data.tokens; run scripts/setup.sh)");
  int vocab = j.model.vocab_size ? j.model.vocab_size : int(file->vocab_size());
  if (uint32_t(vocab) < file->vocab_size())
    return make_error(strformat("%s: model.vocab_size: %d is smaller than the token file's %u", j.source.c_str(),
                                vocab, file->vocab_size()));
  auto cfg = model_config_for(j, vocab);
  if (!cfg) return cfg.error();
  model_cfg_ = *cfg;

  const int p = j.parallel.pp, m = j.parallel.microbatches, dp = j.parallel.dp;
  dataset_ = std::make_unique<data::TokenDataset>(std::move(*file), j.data.val_fraction);
  // Each replica runs m microbatches of batch_size / (dp m) sequences per step.
  train_ = std::make_unique<data::BatchSampler>(*dataset_, data::Split::Train, j.data.batch_size / (dp * m),
                                                j.data.seq_len, uint64_t(j.data.seed));
  const int v = j.parallel.schedule == "interleaved" ? j.parallel.virtual_stages : 1;
  auto sched = pipeline::make_schedule(j.parallel.schedule, p, m, v);
  if (!sched) return make_error(j.source + ": parallel.schedule: " + sched.error().message);
  if (model_cfg_.n_layer < p * v)
    return make_error(strformat("%s: parallel: %d stages x %d virtual stages need at least %d layers (model.n_layer = %d)",
                                j.source.c_str(), p, v, p * v, model_cfg_.n_layer));
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
  oc_ = oc;
  for (auto& k : j.fault.kill) {
    FaultSpec f = parse_fault_spec(k).value();
    if (f.phase == "checkpoint" && (j.checkpoint.disk_every <= 0 || f.step % j.checkpoint.disk_every != 0))
      return make_error(strformat("%s: fault.kill: '%s': no checkpoint is written after step %d "
                                  "(checkpoint.disk_every = %d)", j.source.c_str(), k.c_str(), f.step,
                                  j.checkpoint.disk_every));
    faults_.push_back({f});
  }
  // A seeded random plan: fault.random_count kills at distinct steps in [2, steps], each
  // on a random stage actor in a random phase. The same seed gives the same plan.
  if (j.fault.random_count > 0) {
    if (j.fault.random_count > j.train.steps - 1)
      return make_error(strformat("%s: fault.random_count: %d kills need at least %d steps", j.source.c_str(),
                                  j.fault.random_count, j.fault.random_count + 1));
    RngStream r(uint64_t(j.fault.random_seed), {0x6661756c74ull});  // "fault"
    std::vector<int> steps;
    for (uint64_t i = 0; int(steps.size()) < j.fault.random_count; i += 4) {
      int step = 2 + int(r.bits(i) % uint32_t(j.train.steps - 1));
      if (std::find(steps.begin(), steps.end(), step) != steps.end()) continue;
      steps.push_back(step);
      static const char* phases[] = {"forward", "backward", "optimizer"};
      int s = int(r.bits(i + 1) % uint32_t(p)), rep = int(r.bits(i + 2) % uint32_t(dp));
      FaultSpec f{dp > 1 ? strformat("stage%d.replica%d", s, rep) : strformat("stage%d", s), step,
                  phases[r.bits(i + 3) % 3]};
      faults_.push_back({f});
    }
  }
  if (j.supervision.strategy != "one_for_all" && p * dp > 1)
    return make_error(j.source + ": supervision.strategy: the stage actors of a pipeline and its replicas are "
                                 "gang-coupled (a failure poisons the channels and the all-reduce the others wait on), "
                                 "so they are restarted together: use one_for_all with pp * dp > 1");
  if (auto ok = start_writers(); !ok) return ok;
  return spawn_graph();
}

stage_actor Coordinator::spawn_stage(int r, int s) {
  const int p = job_.parallel.pp, v = schedule_.chunks;
  StageSpec spec;
  spec.name = strformat("stage%d", s);
  spec.model = model_cfg_;
  spec.stage = s;
  spec.stages = p;
  spec.optim = oc_;
  spec.seed = uint64_t(job_.data.seed);
  spec.dp_rank = r;
  for (int c = 0; c < v; c++) {
    int g = c * p + s;
    spec.chunks.push_back(pipeline::chunk_layers(model_cfg_.n_layer, p, v, g));
    spec.links.push_back(wiring_->links[size_t(r)][size_t(s)][size_t(c)]);
    spec.dp_groups.push_back(wiring_->groups[size_t(g)]);
  }
  for (auto& f : faults_)
    if (f.spec.phase != "checkpoint" && (f.spec.target == spec.name || f.spec.target == node_name(r, s)))
      spec.faults.push_back(f);
  return sys_.spawn(stage_actor_fn, spec);
}

Expected<void> Coordinator::spawn_graph() {
  const int p = job_.parallel.pp, dp = job_.parallel.dp, v = schedule_.chunks, G = p * v;
  auto chunk_name = [this, p, v](int r, int g) {
    return v > 1 ? strformat("%s.chunk%d", node_name(r, g % p).c_str(), g / p) : node_name(r, g);
  };
  nodes_.clear();
  edges_.clear();
  for (int r = 0; r < dp; r++) {
    for (int g = 0; g + 1 < G; g++) {
      edges_.push_back({node_name(r, g % p), node_name(r, (g + 1) % p),
                        v > 1 ? strformat("activations (chunk %d)", g) : "activations", p});
      edges_.push_back({node_name(r, (g + 1) % p), node_name(r, g % p),
                        v > 1 ? strformat("gradients (chunk %d)", g + 1) : "gradients", p});
    }
    for (int s = 0; s < p; s++) {
      GraphNode n{node_name(r, s), dp > 1 ? "replica" : "stage", "cpu", {}};
      for (int c = 0; c < v; c++) {
        auto range = pipeline::chunk_layers(model_cfg_.n_layer, p, v, c * p + s);
        n.layers.push_back({range.first_layer, range.last_layer});
      }
      nodes_.push_back(std::move(n));
      if (r > 0) edges_.push_back({node_name(r, s), node_name(0, s), "all-reduce", 0});
    }
  }
  // The gang's supervisor. Its first child rebuilds the wiring at every (re)start: a
  // one_for_all restart has stopped every stage before it starts the first again.
  wiring_ = std::make_shared<Wiring>();
  training_inbox_ = std::make_shared<SupervisorInbox>();
  SupervisorSpec spec;
  spec.name = "training";
  spec.strategy = RestartStrategy::one_for_all;
  spec.max_restarts = job_.supervision.max_restarts;
  spec.within_seconds = job_.supervision.within_seconds;
  for (int r = 0; r < dp; r++)
    for (int s = 0; s < p; s++)
      spec.children.push_back({node_name(r, s), [this, r, s, p, v, dp, chunk_name](caf::actor_system&) {
                                 if (r == 0 && s == 0) wiring_->build(p, v, dp, chunk_name);
                                 return caf::actor_cast<caf::actor>(spawn_stage(r, s));
                               }});
  training_sup_ = spawn_supervised(sys_, std::move(spec), training_inbox_);
  auto kids = children_of(sys_, training_sup_);
  if (!kids) return make_error("training supervisor: " + kids.error().message);
  stages_.assign(size_t(dp), {});
  for (size_t k = 0; k < kids->children.size(); k++)
    stages_[k / size_t(p)].push_back(caf::actor_cast<stage_actor>(kids->children[k].handle));
  return {};
}

Expected<int64_t> Coordinator::restore_latest(std::vector<std::string>* warnings) {
  auto loaded = ckpt::load_latest_checkpoint(job_.checkpoint.dir);
  if (!loaded) return loaded.error();
  if (warnings) *warnings = loaded->warnings;
  if (loaded->manifest.data_seed != job_.data.seed)
    return make_error(strformat("%s: written with data.seed %lld, the job has %lld", loaded->path.c_str(),
                                (long long)loaded->manifest.data_seed, (long long)job_.data.seed));
  auto tensors = std::make_shared<const std::map<std::string, Tensor>>(std::move(loaded->tensors));
  if (auto ok = restore_all(tensors, loaded->manifest.optimizer_steps); !ok) return make_error(loaded->path + ": " + ok.error().message);
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
  std::vector<double> chunk_sq(static_cast<size_t>(schedule_.stages * schedule_.chunks), 0.0);
  std::vector<float> losses;
  int64_t first_ns = INT64_MAX, last_ns = INT64_MIN, busy_ns = 0;
  std::string failure;  // the first stage error; every stage answers (peers fail too)
  int failure_rank = -1;  // 0: stopped by the supervisor, 1: a peer's failure seen, 2: a root cause
  size_t k = 0;
  for (auto& h : pending) {
    size_t actor = k++;
    bool replica0 = actor < stages_[0].size();
    h.receive(
        [&](StepDone& d) {
          // After the all-reduce every replica holds the same gradients: count one.
          if (replica0)
            for (auto& [g, x] : d.grad_sum_squares) chunk_sq[size_t(g)] = x;
          losses.insert(losses.end(), d.losses.begin(), d.losses.end());  // replica order
          for (auto& sp : d.spans) {
            first_ns = std::min(first_ns, sp.start_ns);
            last_ns = std::max(last_ns, sp.end_ns);
            busy_ns += sp.end_ns - sp.start_ns;
          }
          if (tracing_) trace_step(step, int(actor), d);
        },
        [&](caf::error& e) {
          // Report the root cause, not the peers that failed because of it.
          std::string why = describe_reason(e);
          int rank = why.find(": stopped (") != std::string::npos ? 0
                     : why.find("a peer stage failed") != std::string::npos ||
                             why.find("data-parallel peer failed") != std::string::npos
                         ? 1
                         : 2;
          if (rank > failure_rank) failure = why, failure_rank = rank;
        });
  }
  if (!failure.empty()) return make_error(failure);
  for (double x : chunk_sq) sq += x;  // in model order, whatever the layout: deterministic
  StepMetrics mt;
  if (last_ns > first_ns)
    mt.bubble_fraction = 1.0 - double(busy_ns) / (double(k) * double(last_ns - first_ns));
  mt.step = step;
  mt.grad_norm = std::sqrt(sq);
  float lr = lr_override_ ? *lr_override_
                         : model::lr_schedule(int(step), float(job_.optimizer.lr), float(job_.optimizer.min_lr),
                                              job_.optimizer.warmup_steps, job_.train.steps);
  float clip = model::clip_scale(float(job_.optimizer.grad_clip), mt.grad_norm);
  std::vector<decltype(self->request(stages_[0][0], caf::infinite, apply_atom::value, int64_t{}, 0.0f, 0.0f))>
      applied;
  for (auto& replica : stages_)
    for (auto& a : replica) applied.push_back(self->request(a, caf::infinite, apply_atom::value, step, lr, clip));
  int64_t stall_ns = 0;
  for (auto& h : applied)
    h.receive([&](Applied& a) { stall_ns = std::max(stall_ns, a.stall_ns); },
              [&](caf::error& e) {
                if (failure.empty()) failure = describe_reason(e);
              });
  mt.checkpoint_stall_seconds = pin_stall_seconds_ + double(stall_ns) * 1e-9;
  pin_stall_seconds_ = 0;
  if (!failure.empty()) return make_error(failure);
  double sum = 0;
  for (float l : losses) sum += l;
  mt.loss = losses.empty() ? NAN : sum / double(losses.size());
  mt.lr = lr;
  mt.step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  mt.tokens_per_second = double(tokens) / mt.step_seconds;
  return mt;
}

Expected<model::ModelConfig> model_config_for(const JobConfig& j, int vocab) {
  int kv = j.model.n_kv_head ? j.model.n_kv_head : j.model.n_head;
  int ff = j.model.d_ff ? j.model.d_ff : 4 * j.model.d_model;
  auto cfg = j.model.arch == "gpt2"
                 ? model::ModelConfig::gpt2(j.model.n_layer, j.model.n_head, j.model.d_model, vocab, j.model.max_seq_len)
                 : model::ModelConfig::llama(j.model.n_layer, j.model.n_head, kv, j.model.d_model, ff, vocab,
                                             j.model.max_seq_len);
  cfg.norm_eps = float(j.model.norm_eps);
  cfg.rope_theta = float(j.model.rope_theta);
  if (auto ok = cfg.validate(); !ok) return make_error(j.source + ": model." + ok.error().message);
  return cfg;
}

Expected<SnapshotPtr> Coordinator::weights(int64_t steps_done) {
  if (snapshot_step_ != steps_done)
    if (auto ok = after_step(steps_done, true); !ok) return ok.error();
  return latest_snapshot();
}

const std::vector<std::string>& Coordinator::live_keys() {
  static const std::vector<std::string> keys = {"optimizer.lr", "optimizer.grad_clip", "checkpoint.snapshot_every",
                                                "checkpoint.disk_every"};
  return keys;
}

Expected<std::string> Coordinator::set_live(const std::string& key_in, const std::string& value) {
  std::string key = key_in == "lr" ? "optimizer.lr" : key_in == "grad_clip" ? "optimizer.grad_clip" : key_in;
  if (key == "optimizer.lr" && value == "schedule") {
    lr_override_.reset();
    return std::string("optimizer.lr follows the job's schedule again");
  }
  const auto& keys = live_keys();
  if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
    std::string list;
    for (auto& k : keys) list += (list.empty() ? "" : ", ") + k;
    return make_error("'" + key_in + "' cannot change while the job runs (live keys: " + list + ")");
  }
  JobConfig next = job_;  // parsed and checked as in a job file, applied only if valid
  if (auto ok = next.set(key + "=" + value); !ok) return ok.error();
  if (key == "optimizer.lr") {
    if (!(next.optimizer.lr > 0)) return make_error("optimizer.lr: must be > 0, got " + value);
    lr_override_ = float(next.optimizer.lr);
    return strformat("optimizer.lr = %g from the next step (constant; 'set lr schedule' restores the schedule)",
                     next.optimizer.lr);
  }
  if (key == "optimizer.grad_clip") {
    if (next.optimizer.grad_clip < 0) return make_error("optimizer.grad_clip: must be >= 0 (0: off), got " + value);
    job_.optimizer.grad_clip = next.optimizer.grad_clip;
    return strformat("optimizer.grad_clip = %g from the next step", job_.optimizer.grad_clip);
  }
  int n = key == "checkpoint.snapshot_every" ? next.checkpoint.snapshot_every : next.checkpoint.disk_every;
  if (n < 0) return make_error(key + ": must be >= 0 (0: off), got " + value);
  (key == "checkpoint.snapshot_every" ? job_.checkpoint.snapshot_every : job_.checkpoint.disk_every) = n;
  return strformat("%s = %d", key.c_str(), n);
}

void Coordinator::trace_step(int64_t step, int actor, const StepDone& d) {
  if (d.spans.empty()) return;
  if (trace_epoch_ns_ < 0) trace_epoch_ns_ = d.spans.front().start_ns;
  auto event = [&](const std::string& name, const char* cat, int64_t start, int64_t end) {
    trace_events_.push_back(nlohmann::json{{"name", name}, {"cat", cat}, {"ph", "X"}, {"pid", 1}, {"tid", actor},
                                           {"ts", double(start - trace_epoch_ns_) / 1e3},
                                           {"dur", double(end - start) / 1e3}, {"args", {{"step", step}}}}
                                .dump());
  };
  int64_t prev_end = 0;
  for (auto& sp : d.spans) {
    // A gap between two instructions: the stage waited for an input or for credit.
    if (prev_end && sp.start_ns > prev_end) event("idle", "idle", prev_end, sp.start_ns);
    bool fwd = sp.op == pipeline::Op::Forward;
    event(strformat("%c%d", fwd ? 'F' : 'B', sp.microbatch), fwd ? "forward" : "backward", sp.start_ns, sp.end_ns);
    prev_end = sp.end_ns;
  }
  if (d.reduce_start_ns) event("all-reduce", "communication", d.reduce_start_ns, d.reduce_end_ns);
}

std::string Coordinator::graph_json() const {
  nlohmann::json j = {{"nodes", nlohmann::json::array()}, {"edges", nlohmann::json::array()}};
  for (auto& n : nodes_)
    j["nodes"].push_back({{"name", n.name}, {"role", n.role}, {"device", n.device}, {"layers", n.layers}});
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
  for (auto& n : nodes_) {
    std::string layers;
    for (auto& [a, b] : n.layers) layers += strformat("%s[%d, %d)", layers.empty() ? "" : " ", a, b);
    s += strformat("  \"%s\" [shape=box, label=\"%s\\n%s, layers %s\"];\n", n.name.c_str(), n.name.c_str(),
                   n.device.c_str(), layers.c_str());
  }
  for (auto& e : edges_) {
    std::string label = e.slots ? strformat("%s (%d slots)", e.kind.c_str(), e.slots) : e.kind;
    const char* style = e.kind.rfind("gradients", 0) == 0 ? ", style=dashed"
                        : e.kind == "all-reduce"          ? ", style=dotted, dir=both"
                                                          : "";
    s += strformat("  \"%s\" -> \"%s\" [label=\"%s\"%s];\n", e.from.c_str(), e.to.c_str(), label.c_str(), style);
  }
  return s + "}\n";
}

}  // namespace troupe::actors
