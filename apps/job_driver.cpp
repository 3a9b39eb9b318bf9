#include "apps/job_driver.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "core/file_io.h"
#include "core/progress.h"

namespace troupe::app {

using namespace actors;

namespace {
double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

JobDriver::JobDriver(caf::actor_system& sys, JobConfig job, DriverOptions opts, std::shared_ptr<LogBook> log)
    : sys_(sys), job_(std::move(job)), opts_(std::move(opts)), log_(std::move(log)) {
  paused_ = opts_.start_paused;
  view_.total_steps = job_.train.steps;
}

JobDriver::~JobDriver() {
  {
    std::lock_guard lk(mu_);
    ended_ = true;
    for (auto& t : tasks_) t->done.set_value(Reply::error("the job has ended"));
    tasks_.clear();
  }
  if (metrics_) std::fclose(metrics_);
}

JobView JobDriver::view() const {
  std::lock_guard lk(mu_);
  return view_;
}

void JobDriver::set_state(const std::string& s) {
  std::lock_guard lk(mu_);
  view_.state = s;
}

void JobDriver::say(const std::string& source, const std::string& text) {
  log_->add(source, text);
  if (opts_.progress) {
    std::printf("%s%s\n", isatty(1) ? "\n" : "", text.c_str());
    std::fflush(stdout);
  }
}

void JobDriver::refresh_info() {
  auto info = coord_->call<CoordinatorInfo>(status_atom::value);
  if (!info) return;
  std::lock_guard lk(mu_);
  view_.info = std::move(*info);
}

Reply JobDriver::at_boundary(std::function<Reply(JobDriver&)> f) {
  auto task = std::make_shared<Task>();
  task->f = std::move(f);
  auto done = task->done.get_future();
  {
    std::lock_guard lk(mu_);
    if (ended_) return Reply::error("the job has ended");
    tasks_.push_back(task);
  }
  cv_.notify_all();
  return done.get();
}

void JobDriver::post(std::function<Reply(JobDriver&)> f) {
  auto task = std::make_shared<Task>();
  task->f = [f = std::move(f)](JobDriver& d) {
    Reply r = f(d);
    if (!r.ok) d.log().add("coordinator", r.text);
    return r;
  };
  {
    std::lock_guard lk(mu_);
    if (ended_) return;
    tasks_.push_back(task);
  }
  cv_.notify_all();
}

void JobDriver::run_tasks() {
  for (;;) {
    std::shared_ptr<Task> t;
    {
      std::lock_guard lk(mu_);
      if (tasks_.empty()) return;
      t = tasks_.front();
      tasks_.pop_front();
    }
    Reply r;
    try {
      r = t->f(*this);
    } catch (const std::exception& e) {
      r = Reply::error(e.what());
    }
    t->done.set_value(std::move(r));
  }
}

Reply JobDriver::pause() {
  {
    std::lock_guard lk(mu_);
    if (ended_ || view_.state == "finished") return Reply::error("the job has finished");
    if (paused_) return Reply{true, strformat("already paused after step %lld", (long long)view_.steps_done), {}};
    paused_ = true;
  }
  log_->add("coordinator", "paused by a console");
  // Answers once the running step has finished: the job is then between two steps.
  return at_boundary([](JobDriver& d) {
    std::lock_guard lk(d.mu_);
    d.view_.state = "paused";
    return Reply{true, strformat("paused after step %lld", (long long)d.step_), {{"paused", true}, {"after_step", d.step_}}};
  });
}

Reply JobDriver::resume() {
  {
    std::lock_guard lk(mu_);
    if (!paused_) return Reply{true, "not paused", {{"paused", false}}};
    paused_ = false;
  }
  cv_.notify_all();
  log_->add("coordinator", "resumed by a console");
  return Reply{true, "resumed", {{"paused", false}}};
}

void JobDriver::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

bool JobDriver::wait_while_paused() {
  for (;;) {
    run_tasks();
    std::unique_lock lk(mu_);
    if (stopping_) return false;
    if (!paused_ && tasks_.empty()) {
      view_.state = "running";
      return true;
    }
    if (paused_) view_.state = "paused";
    cv_.wait(lk, [&] { return stopping_ || !tasks_.empty() || !paused_; });
  }
}

void JobDriver::recovered(const RecoverInfo& back, double ms) {
  restarts_ = back.restarts;
  if (!back.failed_child.empty())
    log_->add(back.failed_child, "failed (" + back.reason + "); restarted by the training supervisor (one_for_all)");
  std::string what = back.failed_child.empty() ? "" : " (" + back.failed_child + " failed: " + back.reason + ")";
  say("training", strformat("recovered: the supervisor restarted the stage actors (one_for_all) in %.1f ms%s; restored "
                            "the snapshot of step %lld; training resumed %.1f ms after the failed step; replaying "
                            "from step %lld (restart %d)",
                            back.restart_seconds * 1e3, what.c_str(), (long long)back.step, ms,
                            (long long)(back.step + 1), back.restarts));
  if (metrics_ && metrics_at_.count(back.step)) {
    std::fflush(metrics_);
    std::filesystem::resize_file(opts_.metrics_out, std::uintmax_t(metrics_at_[back.step]));
    std::fseek(metrics_, 0, SEEK_END);
  }
  step_ = back.step;
  std::lock_guard lk(mu_);
  view_.steps_done = step_;
  view_.restarts = restarts_;
  while (!view_.recent.empty() && view_.recent.back().step >= step_) view_.recent.pop_back();
}

Expected<bool> JobDriver::recover_if_restarted() {
  auto pending = coord_->call<bool>(pending_atom::value);
  if (!pending) return pending.error();
  if (!*pending) return false;
  auto t0 = std::chrono::steady_clock::now();
  auto back = coord_->call<RecoverInfo>(recover_atom::value, step_);
  if (!back) return make_error("cannot recover: " + back.error().message);
  recovered(*back, ms_since(t0));
  return true;
}

void JobDriver::checkpoints(int64_t steps_done, bool force_snapshot, bool force_disk) {
  auto rep = coord_->call<CheckpointReport>(checkpoint_atom::value, steps_done, force_snapshot, force_disk);
  if (!rep) throw std::runtime_error("troupe run: " + rep.error().message);
  for (auto& e : rep->events) say("writer", "checkpoint writer: " + e);
  for (auto& p : rep->published) say("writer", "checkpoint " + p);
}

void JobDriver::record(const StepMetrics& mt) {
  if (metrics_) {
    metrics_at_[mt.step] = std::ftell(metrics_);
    nlohmann::json j = {{"step", mt.step + 1},
                        {"loss", mt.loss},
                        {"lr", mt.lr},
                        {"grad_norm", mt.grad_norm},
                        {"tokens_per_s", mt.tokens_per_second},
                        {"step_s", mt.step_seconds},
                        {"bubble_fraction", mt.bubble_fraction},
                        {"ckpt_stall_s", mt.checkpoint_stall_seconds},
                        {"restarts", restarts_},
                        {"dp", job_.parallel.dp}};
    std::fprintf(metrics_, "%s\n", j.dump().c_str());
    std::fflush(metrics_);
  }
  std::lock_guard lk(mu_);
  view_.last = mt;
  view_.recent.push_back(mt);
  if (view_.recent.size() > 100) view_.recent.pop_front();
  view_.steps_done = mt.step + 1;
}

Reply JobDriver::scale(int replicas) {
  if (auto r = recover_if_restarted(); !r) return Reply::error(r.error().message);
  auto t0 = std::chrono::steady_clock::now();
  auto scaled = coord_->call<CoordinatorInfo>(scale_atom::value, replicas, step_);
  if (!scaled) return Reply::error(scaled.error().message);
  job_.parallel = scaled->job.parallel;
  std::string text = strformat("scaled to dp=%d after step %lld in %.1f ms: %zu actors, %d microbatches per replica",
                               replicas, (long long)step_, ms_since(t0), scaled->actors,
                               scaled->job.parallel.microbatches);
  say("coordinator", text);
  {
    std::lock_guard lk(mu_);
    view_.info = *scaled;
  }
  Reply r;
  r.text = text;
  r.data = {{"dp", replicas}, {"after_step", step_}, {"actors", scaled->actors}};
  return r;
}

Reply JobDriver::set(const std::string& key, const std::string& value) {
  auto r = coord_->call<std::string>(set_atom::value, key, value);
  if (!r) return Reply::error(r.error().message);
  say("coordinator", "set after step " + std::to_string(step_) + ": " + *r);
  refresh_info();
  Reply out;
  out.text = *r;
  out.data = {{"key", key}, {"value", value}, {"after_step", step_}};
  return out;
}

Reply JobDriver::checkpoint_now() {
  if (auto r = recover_if_restarted(); !r) return Reply::error(r.error().message);
  auto t0 = std::chrono::steady_clock::now();
  auto rep = coord_->call<CheckpointReport>(checkpoint_atom::value, step_, true, true);
  if (!rep) return Reply::error(rep.error().message);
  auto flushed = coord_->call<CheckpointReport>(flush_atom::value);
  if (!flushed) return Reply::error(flushed.error().message);
  std::vector<std::string> published = rep->published;
  published.insert(published.end(), flushed->published.begin(), flushed->published.end());
  for (auto& e : flushed->events) say("writer", "checkpoint writer: " + e);
  for (auto& p : published) say("writer", "checkpoint " + p);
  Reply r;
  r.text = strformat("checkpoint of step %lld written in %.1f ms", (long long)step_, ms_since(t0));
  for (auto& p : published) r.text += "\n  " + p;
  r.data = {{"step", step_}, {"published", published}};
  return r;
}

Reply JobDriver::trace(bool start, const std::string& file) {
  auto text = coord_->call<std::string>(trace_atom::value, start);
  if (!text) return Reply::error(text.error().message);
  if (start) return Reply{true, "tracing from step " + std::to_string(step_ + 1), {{"tracing", true}}};
  auto ok = write_file_atomic(file, {{text->data(), text->size()}});
  if (!ok) return Reply::error(ok.error().message);
  Reply r;
  r.text = "trace written to " + file + " (open in Perfetto or chrome://tracing)";
  r.data = {{"file", file}, {"bytes", text->size()}};
  return r;
}

void JobDriver::run() {
  try {
    run_job();
  } catch (const std::exception& e) {
    // Consoles waiting on a task get the reason instead of waiting forever.
    log_->add("coordinator", std::string("the job failed: ") + e.what());
    std::lock_guard lk(mu_);
    view_.state = "failed";
    view_.error = e.what();
    ended_ = true;
    for (auto& t : tasks_) t->done.set_value(Reply::error(std::string("the job failed: ") + e.what()));
    tasks_.clear();
    throw;
  }
}

void JobDriver::run_job() {
  coord_ = std::make_unique<CoordinatorClient>(sys_, spawn_coordinator(sys_, job_));
  auto started = coord_->call<CoordinatorInfo>(start_atom::value);
  if (!started) throw std::runtime_error(started.error().message);
  {
    std::lock_guard lk(mu_);
    view_.info = *started;
  }
  say("coordinator",
      strformat("troupe run %s: %s; pp=%d dp=%d, %d microbatches (%s), batch %d x %d tokens, %d steps",
                opts_.job_path.c_str(), started->model.str().c_str(), job_.parallel.pp, job_.parallel.dp,
                job_.parallel.microbatches, job_.parallel.schedule.c_str(), job_.data.batch_size, job_.data.seq_len,
                job_.train.steps));
  if (auto& faults = started->faults; !faults.empty()) {
    std::string plan;
    for (auto& f : faults)
      plan += strformat("%s%s@step%d:%s", plan.empty() ? "" : ", ", f.target.c_str(), f.step, f.phase.c_str());
    say("coordinator", "fault injection: " + plan);
  }
  if (const auto& g = opts_.graph_out; !g.empty()) {
    bool dot = g.size() > 4 && g.compare(g.size() - 4, 4, ".dot") == 0;
    const std::string& text = dot ? started->graph_dot : started->graph_json;
    if (auto ok = write_file_atomic(g, {{text.data(), text.size()}}); !ok)
      throw std::runtime_error("troupe run: --graph-out: " + ok.error().message);
  }
  if (!opts_.trace_out.empty()) coord_->call<std::string>(trace_atom::value, true);
  if (opts_.resume) {
    auto at = coord_->call<ResumeInfo>(resume_atom::value);
    if (!at) throw std::runtime_error(at.error().message);
    for (auto& w : at->warnings) {
      std::fprintf(stderr, "troupe run: warning: %s\n", w.c_str());
      log_->add("coordinator", "warning: " + w);
    }
    step_ = at->step;
    say("coordinator", strformat("resumed from %s at step %lld", job_.checkpoint.dir.c_str(), (long long)step_));
  }
  // A resumed run appends to the metrics of the run it continues.
  if (!opts_.metrics_out.empty() && !(metrics_ = std::fopen(opts_.metrics_out.c_str(), opts_.resume ? "a" : "w")))
    throw std::runtime_error("troupe run: --metrics-out " + opts_.metrics_out + ": cannot open for writing");
  {
    std::lock_guard lk(mu_);
    view_.steps_done = step_;
  }
  const bool tty = opts_.progress && isatty(1);
  auto t_start = std::chrono::steady_clock::now();
  const int64_t first = step_;
  if (job_.checkpoint.snapshot_every > 0) checkpoints(step_, true, false);
  if (opts_.start_paused) say("coordinator", "paused before the first step: waiting for a console's resume");
  for (;;) {
    if (!wait_while_paused()) break;
    if (step_ >= job_.train.steps) break;
    if (auto r = recover_if_restarted(); !r) throw std::runtime_error("troupe run: " + r.error().message);
    if (auto it = opts_.scale_at.find(step_); it != opts_.scale_at.end()) {
      int n = it->second;
      opts_.scale_at.erase(it);
      if (auto r = scale(n); !r.ok) throw std::runtime_error("troupe run: " + r.text);
    }
    int64_t step = step_;
    auto result = coord_->call<StepMetrics>(run_step_atom::value, step);
    if (!result) {
      auto t_fail = std::chrono::steady_clock::now();
      say("coordinator", strformat("step %lld: %s", (long long)(step + 1), result.error().message.c_str()));
      auto back = coord_->call<RecoverInfo>(recover_atom::value, step);
      if (!back) throw std::runtime_error("troupe run: cannot recover: " + back.error().message);
      recovered(*back, ms_since(t_fail));
      continue;
    }
    record(*result);
    const StepMetrics& mt = *result;
    step_ = step + 1;
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    double eta = elapsed / double(step_ - first) * double(job_.train.steps - step_);
    bool last = step_ == job_.train.steps;
    std::string line = strformat("step %5lld/%d  loss %.4f  lr %.2e  norm %.3f  %6.0f tok/s  ETA %s", (long long)step_,
                                 job_.train.steps, mt.loss, mt.lr, mt.grad_norm, mt.tokens_per_second,
                                 format_eta(eta).c_str());
    log_->add("coordinator", line);
    if (opts_.progress && (tty || last || step % 10 == 0)) {
      std::printf("%s%s%s", tty ? "\r" : "", line.c_str(), tty && !last ? "" : "\n");
      std::fflush(stdout);
    }
    {
      std::lock_guard lk(mu_);
      view_.elapsed_seconds = elapsed;
    }
    checkpoints(step_, false, false);
  }
  auto rep = coord_->call<CheckpointReport>(flush_atom::value);
  if (!rep) throw std::runtime_error("troupe run: " + rep.error().message);
  for (auto& e : rep->events) say("writer", "checkpoint writer: " + e);
  for (auto& p : rep->published) say("writer", "checkpoint " + p);
  if (metrics_) std::fclose(metrics_), metrics_ = nullptr;
  if (!opts_.trace_out.empty()) {
    auto r = trace(false, opts_.trace_out);
    if (!r.ok) throw std::runtime_error("troupe run: --trace-out: " + r.text);
    if (opts_.progress) std::printf("%s\n", r.text.c_str());
  }
  set_state("finished");
  log_->add("coordinator", strformat("finished after step %lld", (long long)step_));
  if (opts_.stay) {  // keep answering consoles (generate, metrics) until they stop the job
    std::unique_lock lk(mu_);
    for (;;) {
      lk.unlock();
      run_tasks();
      lk.lock();
      if (stopping_) break;
      cv_.wait(lk, [&] { return stopping_ || !tasks_.empty(); });
    }
  }
  std::lock_guard lk(mu_);
  ended_ = true;
  for (auto& t : tasks_) t->done.set_value(Reply::error("the job has ended"));
  tasks_.clear();
}

}  // namespace troupe::app
