// The console: its command language (splitting, scripts, typos), and a console session
// over a real socket against a job driven by a JobDriver — token refusal, ps, a wrong
// command that changes nothing, set lr, scale dp, kill — ending with the losses of a job
// that was configured that way from the start (so steering changed nothing else).

#include <caf/all.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "apps/console_commands.h"
#include "apps/console_net.h"
#include "apps/console_server.h"
#include "apps/job_driver.h"
#include "small_job.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::app;
using nlohmann::json;

TEST_CASE("console words: blanks separate, quotes group, errors name the column", "[console]") {
  auto w = console::split_words("generate 'It is a truth' --max-tokens 8").value();
  REQUIRE(w.size() == 4);
  CHECK(w[1] == "It is a truth");
  CHECK(console::split_words(R"(set "a b"\ c x)").value() == std::vector<std::string>{"set", "a b c", "x"});
  CHECK(console::split_words("   ").value().empty());
  auto bad = console::split_words("generate \"open");
  REQUIRE(!bad);
  CHECK(bad.error().message == "unterminated \" quote at column 10");
  CHECK(console::split_script("ps; metrics stage0 ;; ") == std::vector<std::string>{"ps", "metrics stage0"});
  CHECK(console::split_script("generate 'a; b'; ps") == std::vector<std::string>{"generate 'a; b'", "ps"});
}

TEST_CASE("console typos: the nearest valid command, or none", "[console]") {
  CHECK(console::nearest_command("metrcs") == "metrics");
  CHECK(console::nearest_command("sclae") == "scale");
  CHECK(console::nearest_command("kil") == "kill");
  CHECK(console::nearest_command("chekpoint") == "checkpoint");
  CHECK(console::nearest_command("xyzzy").empty());
  CHECK(console::unknown_command_error("metrcs") == "unknown command 'metrcs'; did you mean 'metrics'? (help lists all)");
  CHECK(console::unknown_command_error("xyzzy") == "unknown command 'xyzzy' (help lists all)");
  CHECK(console::edit_distance("abcd", "abdc") == 1);
  CHECK(console::edit_distance("", "abc") == 3);
  std::string all = console::help_text();
  for (auto& c : console::commands()) CHECK(all.find(c.usage) != std::string::npos);
  CHECK(console::help_text("kill").rfind("usage: kill ACTOR", 0) == 0);
}

TEST_CASE("console addresses", "[console]") {
  CHECK(console::parse_host_port("127.0.0.1:4000").value().str() == "127.0.0.1:4000");
  CHECK(console::parse_host_port("4000").value().str() == "127.0.0.1:4000");
  CHECK(console::parse_host_port(":0").value().port == 0);
  CHECK(console::parse_host_port("host:99999").error().message.find("'host:99999'") != std::string::npos);
  CHECK(console::same_token("abc", "abc"));
  CHECK(!console::same_token("abc", "abd"));
  CHECK(!console::same_token("abc", "abcd"));
  CHECK(!console::same_token("", ""));
}

namespace {

std::filesystem::path scratch() {
  auto dir = std::filesystem::temp_directory_path() / "troupe_console_test";
  std::filesystem::create_directories(dir);
  return dir;
}

JobConfig small_job() {
  auto dir = scratch();
  JobConfig job = testing::small_job(testing::synthetic_token_file(dir, 4));
  job.checkpoint.dir = (dir / "ckpt").string();
  return job;
}

std::vector<json> read_metrics(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

struct Session {
  console::LineSocket sock;
  json hello;
  json ask(const std::string& line) {
    REQUIRE(sock.write_line(json{{"line", line}}.dump()));
    auto r = sock.read_line(60000);
    REQUIRE(r);
    return json::parse(*r);
  }
};

Session attach(const console::HostPort& at, const std::string& token) {
  Session s;
  s.sock = console::LineSocket::connect(at, 3000).value();
  REQUIRE(s.sock.write_line(json{{"token", token}}.dump()));
  auto h = s.sock.read_line(10000);
  REQUIRE(h);
  s.hello = json::parse(*h);
  return s;
}

}  // namespace

TEST_CASE("a console steers a running job: refusal, ps, typo, set lr, scale dp, kill", "[console][actors]") {
  auto dir = scratch();
  JobConfig job = small_job();
  // The reference: the same job with a constant lr of 4e-3 and two replicas from the start.
  std::string ref_metrics = (dir / "ref.jsonl").string(), metrics = (dir / "steered.jsonl").string();
  {
    caf::actor_system_config cfg;
    caf::actor_system sys{cfg};
    JobConfig ref = job;
    ref.optimizer.lr = ref.optimizer.min_lr = 4e-3;
    ref.optimizer.warmup_steps = 0;
    ref.parallel.dp = 2;
    ref.parallel.microbatches = 2;
    DriverOptions o;
    o.metrics_out = ref_metrics;
    o.progress = false;
    JobDriver d(sys, ref, o, std::make_shared<LogBook>());
    d.run();
  }
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  DriverOptions o;
  o.metrics_out = metrics;
  o.progress = false;
  o.start_paused = true;
  o.stay = true;  // after the last step, keep serving the console until stop()
  auto log = std::make_shared<LogBook>();
  JobDriver driver(sys, job, o, log);
  ConsoleServer server(driver, {"127.0.0.1", 0}, "s3cret");
  REQUIRE(server.start());
  std::string failure;
  std::thread runner([&] {
    try {
      driver.run();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  // Wait until the job has started (paused before step 1).
  for (int i = 0; i < 500 && driver.view().state != "paused"; i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(driver.view().state == "paused");

  {  // A wrong token is refused, and the refusal logged with the peer.
    auto bad = attach(server.address(), "guess");
    CHECK(bad.hello["ok"] == false);
    CHECK(bad.hello["error"].get<std::string>().find("wrong token") != std::string::npos);
    auto lines = log->since(0, "console");
    REQUIRE(!lines.empty());
    CHECK(lines.back().text.find("refused a connection from 127.0.0.1:") == 0);
  }
  auto s = attach(server.address(), "s3cret");
  REQUIRE(s.hello["ok"] == true);
  auto names = s.hello["actors"].get<std::vector<std::string>>();
  CHECK(std::find(names.begin(), names.end(), "stage1") != names.end());

  auto ps = s.ask("ps");
  REQUIRE(ps["ok"] == true);
  CHECK(ps["text"].get<std::string>().find("stage1") != std::string::npos);
  int stages = 0;
  for (auto& a : ps["data"]["actors"])
    if (a["role"] == "pipeline stage" || a.value("parent", json()) == "training") {
      stages++;
      CHECK(a["restarts"] == 0);
      CHECK(a["state"] == "idle");
      CHECK(a["mailbox"] == 0);
    }
  CHECK(stages == 2);

  auto typo = s.ask("metrcs");
  CHECK(typo["ok"] == false);
  CHECK(typo["text"] == "unknown command 'metrcs'; did you mean 'metrics'? (help lists all)");
  auto bad_set = s.ask("set model.n_layer 3");
  CHECK(bad_set["ok"] == false);
  CHECK(bad_set["text"].get<std::string>().find("'model.n_layer' cannot change while the job runs") == 0);
  auto bad_lr = s.ask("set lr fast");
  CHECK(bad_lr["ok"] == false);
  CHECK(bad_lr["text"].get<std::string>().find("optimizer.lr") != std::string::npos);
  CHECK(s.ask("scale dp zero")["text"] == "scale dp: expected an integer from 1 to 1024, got 'zero'");
  CHECK(s.ask("kill stage7")["text"].get<std::string>().find("no actor named 'stage7'") == 0);

  CHECK(s.ask("set lr 4e-3")["ok"] == true);
  auto scaled = s.ask("scale dp 2");
  REQUIRE(scaled["ok"] == true);
  CHECK(scaled["data"]["dp"] == 2);
  CHECK(driver.view().info.job.parallel.dp == 2);
  auto killed = s.ask("kill stage1.replica0");
  REQUIRE(killed["ok"] == true);
  auto ps2 = s.ask("ps");
  for (auto& a : ps2["data"]["actors"])
    if (a.value("parent", json()) == "training") CHECK(a["restarts"] == 1);  // one_for_all: the whole gang
  // The orderly restart, a disk checkpoint, a trace, the graph, logs and metrics, all
  // while paused: none of them may change a loss.
  auto restarted = s.ask("restart stage0.replica1");
  REQUIRE(restarted["ok"] == true);
  CHECK(restarted["data"]["resumes_at"] == 0);
  auto ckpt = s.ask("checkpoint now");
  REQUIRE(ckpt["ok"] == true);
  REQUIRE(ckpt["data"]["published"].size() == 1);
  CHECK(std::filesystem::exists(ckpt["data"]["published"][0].get<std::string>() + "/manifest.json"));
  CHECK(s.ask("trace start")["ok"] == true);
  auto dot = s.ask("graph --dot");
  CHECK(dot["text"].get<std::string>().rfind("digraph troupe {", 0) == 0);
  CHECK(s.ask("graph")["text"].get<std::string>().find("stage0.replica1 -> stage0.replica0  all-reduce") !=
        std::string::npos);
  auto lg = s.ask("logs stage1 -n 5");
  REQUIRE(lg["ok"] == true);
  CHECK(lg["text"].get<std::string>().find("stage1.replica0: killed by a console") != std::string::npos);
  auto m = s.ask("metrics stage0.replica0");
  REQUIRE(m["ok"] == true);
  REQUIRE(m["data"]["actors"].size() == 1);
  CHECK(m["data"]["actors"][0]["params"].get<int64_t>() > 0);
  CHECK(s.ask("metrics writer")["text"] == "writer is a checkpoint writer: metrics are per stage actor");
  CHECK(s.ask("help kill")["text"].get<std::string>().rfind("usage: kill ACTOR", 0) == 0);
  CHECK(s.ask("scale dp")["text"] == "usage: scale dp N");
  CHECK(s.ask("resume")["ok"] == true);
  for (int i = 0; i < 3000 && driver.view().state != "finished" && failure.empty(); i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(failure.empty());
  CHECK(s.ask("status")["text"].get<std::string>().rfind("finished: step 6/6, dp=2 pp=2, restarts 2", 0) == 0);
  std::string trace_file = (dir / "trace.json").string();
  REQUIRE(s.ask("trace stop " + trace_file)["ok"] == true);
  int forward = 0;
  json trace = json::parse(std::ifstream(trace_file));
  for (auto& e : trace["traceEvents"]) forward += e.value("cat", "") == "forward";
  CHECK(forward == 6 * 4 * 2);  // steps x stage actors (pp 2 x dp 2) x microbatches per replica
  CHECK(s.ask("pause")["text"] == "the job has finished");
  driver.stop();
  runner.join();
  auto got = read_metrics(metrics), want = read_metrics(ref_metrics);
  REQUIRE(got.size() == 6);
  REQUIRE(want.size() == 6);
  for (size_t i = 0; i < got.size(); i++) {
    CHECK(got[i]["lr"].get<double>() == Approx(4e-3).epsilon(1e-6));
    CHECK(got[i]["dp"] == 2);
    CHECK(got[i]["restarts"] == 2);  // the kill and the restart
    double a = got[i]["loss"], b = want[i]["loss"];
    CHECK(std::fabs(a - b) <= 1e-6 * std::fabs(b));
  }
  server.stop();
}
