#pragma once
// ConsoleServer: the job's side of `troupe console`. It listens on loopback unless told
// otherwise, admits a connection only with the job's token (a refusal is logged, with
// the peer), and runs each session on its own thread. A session parses command lines
// (apps/console_commands.h) and answers each with a Reply: reads (ps, metrics, logs,
// graph, status) come from the supervisors, the stage actors and the JobDriver's view
// without waiting for a step; changes (scale, set, checkpoint, restart, trace, generate)
// run on the driver between two steps; kill goes straight to the actor's supervisor. A
// bad command gets an error and changes nothing.
//
// Wire (one JSON object per line): the client sends {"token": T} and gets {"ok": true,
// "job": ..., "actors": [...]} or {"ok": false, "error": ...} (then the server closes);
// then {"line": "ps"} -> {"ok": bool, "text": ..., "data": {...}}. `logs -f` answers
// {"log": LINE} objects until the client sends {"stop": true}, then the final reply.

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "apps/console_net.h"
#include "apps/job_driver.h"
#include "core/tokenizer.h"

namespace troupe::app {

class ConsoleServer {
 public:
  ConsoleServer(JobDriver& driver, console::HostPort listen, std::string token);
  ~ConsoleServer();
  Expected<void> start();
  const console::HostPort& address() const { return bound_; }
  void stop();
  // One command line, as a session runs it (tests, --json one-shots).
  Reply execute(const std::string& line);

 private:
  JobDriver& driver_;
  console::HostPort listen_, bound_;
  std::string token_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  struct Session {
    std::thread thread;
    console::LineSocket* sock = nullptr;
    std::atomic<bool> done{false};
  };
  std::vector<std::unique_ptr<Session>> sessions_;
  std::mutex tok_mu_;
  std::unique_ptr<Tokenizer> tokenizer_;

  void accept_loop();
  void serve(Session& s, console::LineSocket sock, std::string peer);
  void follow_logs(console::LineSocket& sock, const std::string& source, size_t n);
  Reply ps();
  Reply graph(bool dot);
  Reply metrics(const std::string& actor);
  Reply logs(const std::string& actor, size_t n);
  Reply status();
  Reply kill(const std::string& actor);
  Reply restart(const std::string& actor);
  Reply generate(const std::vector<std::string>& words);
  std::vector<std::string> actor_names();
};

}  // namespace troupe::app
