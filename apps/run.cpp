// `troupe run JOB.toml`: runs a training job in this process (the embedded default):
// the coordinator actor builds the graph of stage actors; a JobDriver drives the steps;
// with --listen or --console a console server lets `troupe console` steer the job.

#include <sys/stat.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "apps/commands.h"
#include "apps/console.h"
#include "apps/console_server.h"
#include "apps/job_driver.h"
#include "core/file_io.h"
#include "ops/ops.h"

namespace troupe::app {

namespace {

const char* kRunUsage =
    "usage: troupe run JOB.toml [--set section.key=value]... [--metrics-out FILE] [--graph-out FILE] [--trace-out FILE]\n"
    "                  [--resume] [--scale-dp N@STEP]... [--listen [HOST:]PORT | --console] [--paused]\n"
    "  --set          override any job field (repeatable), e.g. --set parallel.pp=2\n"
    "  --metrics-out  one JSON object per step (step, loss, lr, grad_norm, tokens_per_s, step_s, bubble_fraction,\n"
    "                 ckpt_stall_s, restarts, dp)\n"
    "  --graph-out    the dataflow graph of actors and channels: JSON, or Graphviz if FILE ends in .dot\n"
    "  --trace-out    Chrome trace JSON (Perfetto, chrome://tracing): forward/backward spans per stage actor\n"
    "  --resume       continue from the newest good checkpoint in checkpoint.dir (any pp/dp layout)\n"
    "  --scale-dp N@STEP  after STEP steps, change to N data-parallel replicas (repeatable)\n"
    "  --listen [HOST:]PORT  serve `troupe console` (default host 127.0.0.1; port 0: any free one); the address\n"
    "                 and the job's token go to the console file, readable by this user only\n"
    "  --console      the same on a free loopback port, with a console in this terminal; quit stops the job\n"
    "  --console-file FILE  where to write the address and token (default out/console.json)\n"
    "  --paused       wait for a console's `resume` before the first step\n"
    "The token is $TROUPE_CONSOLE_TOKEN if set, else random.\n"
    "Checkpoints are written every checkpoint.disk_every steps (0: never), keeping checkpoint.keep.\n";

// Writes {address, token, pid, job} readable by this user only, atomically.
void write_console_file(const std::string& path, const console::HostPort& at, const std::string& token,
                        const std::string& job) {
  nlohmann::json j = {{"address", at.str()}, {"token", token}, {"pid", ::getpid()}, {"job", job}};
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir);
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) throw std::runtime_error("troupe run: --console-file " + path + ": cannot write");
    ::chmod(tmp.c_str(), 0600);
    out << j.dump() << "\n";
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace

int cmd_run(int argc, char** argv) {
  DriverOptions opt;
  std::string listen, console_file = kDefaultConsoleFile;
  bool console_here = false;
  std::vector<std::string> sets;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("troupe run: " + a + " needs a value\n" + kRunUsage);
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kRunUsage, stdout);
      return 0;
    } else if (a == "--set") {
      sets.push_back(value());
    } else if (a == "--metrics-out") {
      opt.metrics_out = value();
    } else if (a == "--graph-out") {
      opt.graph_out = value();
    } else if (a == "--trace-out") {
      opt.trace_out = value();
    } else if (a == "--resume") {
      opt.resume = true;
    } else if (a == "--listen") {
      listen = value();
    } else if (a == "--console") {
      console_here = true;
    } else if (a == "--console-file") {
      console_file = value();
    } else if (a == "--paused") {
      opt.start_paused = true;
    } else if (a == "--scale-dp") {
      std::string v = value();
      int n = 0;
      long long at = 0;
      char tail = 0;
      if (std::sscanf(v.c_str(), "%d@%lld%c", &n, &at, &tail) != 2 || n < 1 || at < 0)
        throw std::runtime_error("troupe run: --scale-dp '" + v + "': expected N@STEP, e.g. 2@10");
      opt.scale_at[at] = n;
    } else if (!a.empty() && a[0] == '-') {
      throw std::runtime_error("troupe run: unknown option " + a + "\n" + kRunUsage);
    } else if (opt.job_path.empty()) {
      opt.job_path = a;
    } else {
      throw std::runtime_error("troupe run: one job file only ('" + a + "' is a second)\n" + kRunUsage);
    }
  }
  if (opt.job_path.empty()) throw std::runtime_error(std::string("troupe run: no job file\n") + kRunUsage);
  if (console_here && !listen.empty()) throw std::runtime_error("troupe run: --console and --listen: choose one");
  if (opt.start_paused && listen.empty() && !console_here)
    throw std::runtime_error("troupe run: --paused needs --listen or --console (a console must resume the job)");
  auto job = JobConfig::load(opt.job_path);
  if (!job) throw std::runtime_error(job.error().message);
  for (auto& s : sets)
    if (auto ok = job->set(s); !ok) throw std::runtime_error(ok.error().message);
  ops::set_num_threads(job->train.threads);

  console::HostPort at{"127.0.0.1", 0};
  if (!listen.empty()) {
    auto hp = console::parse_host_port(listen);
    if (!hp) throw std::runtime_error("troupe run: --listen " + hp.error().message);
    at = *hp;
  }
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto log = std::make_shared<LogBook>();
  opt.progress = !console_here;
  opt.stay = console_here;
  JobDriver driver(sys, *job, opt, log);
  std::unique_ptr<ConsoleServer> server;
  std::string token;
  if (!listen.empty() || console_here) {
    const char* env = std::getenv("TROUPE_CONSOLE_TOKEN");
    token = env && *env ? env : console::random_token();
    server = std::make_unique<ConsoleServer>(driver, at, token);
    if (auto ok = server->start(); !ok) throw std::runtime_error("troupe run: --listen: " + ok.error().message);
    write_console_file(console_file, server->address(), token, opt.job_path);
    if (!console_here)
      std::printf("console: listening on %s (troupe console %s; token in %s)\n", server->address().str().c_str(),
                  server->address().str().c_str(), console_file.c_str());
    std::fflush(stdout);
  }
  auto cleanup = [&] {
    if (server) {
      server->stop();
      std::error_code ec;
      std::filesystem::remove(console_file, ec);
    }
  };
  int rc = 0;
  if (console_here) {
    std::string failure;
    std::thread runner([&] {
      try {
        driver.run();
      } catch (const std::exception& e) {
        failure = e.what();
        log->add("coordinator", std::string("the job failed: ") + e.what());
      }
    });
    ConsoleOptions co;
    co.address = server->address();
    co.token = token;
    co.owns_job = true;
    rc = run_console(co);
    driver.stop();
    runner.join();
    cleanup();
    if (!failure.empty()) throw std::runtime_error(failure);
    return rc;
  }
  try {
    driver.run();
  } catch (...) {
    cleanup();
    throw;
  }
  cleanup();
  return rc;
}

}  // namespace troupe::app
