#pragma once
// JobDriver: the client of a job's coordinator actor that drives the training loop —
// resume, steps, checkpoint policy, recovery after a failed step, scheduled dp changes,
// the metrics file — and lets console sessions steer it. Consoles read a JobView (a copy
// of the job's state, updated after every step) at any time, and hand the driver tasks
// that run on its thread between two steps (or at once while it is paused), so that a
// graph change never races a step.

#include <caf/all.hpp>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "actors/coordinator_actor.h"
#include "core/log.h"

namespace troupe::app {

// What a console command answers: text for people, data for --json.
struct Reply {
  bool ok = true;
  std::string text;
  nlohmann::json data = nlohmann::json::object();
  static Reply error(std::string msg) {
    Reply r;
    r.ok = false;
    r.text = std::move(msg);
    return r;
  }
};

struct DriverOptions {
  std::string job_path;
  std::string metrics_out, trace_out;
  std::string graph_out;  // JSON, or Graphviz if it ends in .dot
  bool resume = false;
  std::map<int64_t, int> scale_at;  // steps done -> replicas (--scale-dp)
  bool progress = true;             // progress lines on stdout (off when a console owns the terminal)
  bool start_paused = false;        // wait for a console's resume before the first step
  bool stay = false;                // after the last step, keep serving consoles until stop()
};

struct JobView {
  std::string state = "starting";  // starting | running | paused | finished | failed
  int64_t steps_done = 0;
  int total_steps = 0;
  std::optional<actors::StepMetrics> last;
  std::deque<actors::StepMetrics> recent;  // the last 100 steps
  actors::CoordinatorInfo info;
  int restarts = 0;
  double elapsed_seconds = 0;
  std::string error;  // why the job failed
};

class JobDriver {
 public:
  JobDriver(caf::actor_system& sys, JobConfig job, DriverOptions opts, std::shared_ptr<LogBook> log);
  ~JobDriver();
  // Runs the job on this thread: start, resume, the steps, the final flush. Throws on an
  // unrecoverable failure (after recording it in the view and the log).
  void run();

  // --- from any thread (console sessions) ---
  JobView view() const;
  LogBook& log() { return *log_; }
  const std::string& job_path() const { return opts_.job_path; }
  caf::actor_system& system() { return sys_; }
  // Runs f on the driver's thread at the next step boundary (at once while paused or
  // after the last step) and returns its reply; an error if the job ended first.
  Reply at_boundary(std::function<Reply(JobDriver&)> f);
  // The same without waiting for it (its reply goes to the log if it fails).
  void post(std::function<Reply(JobDriver&)> f);
  Reply pause();
  Reply resume();
  void stop();  // end the job at the next step boundary (console quit in --console mode)

  // --- on the driver's thread (inside at_boundary tasks) ---
  actors::CoordinatorClient& coord() { return *coord_; }
  int64_t steps_done() const { return step_; }
  // The supervisor restarted the gang (a console kill, a failure between steps): wait for
  // it, restore the latest snapshot and rewind to its step. No-op when nothing happened.
  Expected<bool> recover_if_restarted();
  Reply scale(int replicas);
  Reply set(const std::string& key, const std::string& value);
  Reply checkpoint_now();
  Reply trace(bool start, const std::string& file);

 private:
  caf::actor_system& sys_;
  JobConfig job_;
  DriverOptions opts_;
  std::shared_ptr<LogBook> log_;
  std::unique_ptr<actors::CoordinatorClient> coord_;
  int64_t step_ = 0;  // steps done (the next step to run)
  std::FILE* metrics_ = nullptr;
  std::map<int64_t, long> metrics_at_;  // file offset of each step's line (rewound on replay)
  int restarts_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Task {
    std::function<Reply(JobDriver&)> f;
    std::promise<Reply> done;
  };
  std::deque<std::shared_ptr<Task>> tasks_;
  bool paused_ = false, stopping_ = false, ended_ = false;
  JobView view_;

  void run_job();
  void run_tasks();
  // Waits while paused (running tasks as they come); false once stop() was called.
  bool wait_while_paused();
  void recovered(const actors::RecoverInfo& back, double ms_since_failure);
  void checkpoints(int64_t steps_done, bool force_snapshot, bool force_disk);
  void record(const actors::StepMetrics& m);
  void set_state(const std::string& s);
  void refresh_info();
  void say(const std::string& source, const std::string& text);  // log (and stdout when progress is on)
};

}  // namespace troupe::app
