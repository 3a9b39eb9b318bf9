// `troupe console [HOST:PORT] [-c "CMD; CMD"] [--json] [--token T] [--console-file F]`:
// attaches to a running job's console (see apps/console_server.h), with line editing,
// history and Tab completion of commands and actor names (GNU readline).

#include "apps/console.h"

#include <poll.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "apps/commands.h"
#include "apps/console_commands.h"

namespace troupe::app {

using nlohmann::json;

namespace {

const char* kConsoleUsage =
    "usage: troupe console [HOST:PORT] [-c \"CMD; CMD...\"] [--json] [--token T] [--console-file FILE]\n"
    "  attaches to a job started with `troupe run JOB.toml --listen [HOST:]PORT` (or --console)\n"
    "  HOST:PORT       the job's console address (default: from the console file)\n"
    "  -c SCRIPT       run these commands (separated by ';') and exit\n"
    "  --json          print each reply as one JSON object per line (for scripts)\n"
    "  --token T       the job's token (default: $TROUPE_CONSOLE_TOKEN, else the console file's)\n"
    "  --console-file  the file the job wrote its address and token to (default out/console.json)\n"
    "  --retries N     reconnection attempts after a lost connection, 1 s apart (default 10)\n";

volatile std::sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

class Client {
 public:
  explicit Client(const ConsoleOptions& o) : opt_(o) {}

  Expected<void> connect() {
    auto s = console::LineSocket::connect(opt_.address, 3000);
    if (!s) return s.error();
    sock_ = std::move(*s);
    if (auto ok = sock_.write_line(json{{"token", opt_.token}}.dump()); !ok) return ok.error();
    auto hello = sock_.read_line(10000);
    if (!hello) return make_error("no answer from " + opt_.address.str() + ": " + hello.error().message);
    json h = json::parse(*hello, nullptr, false);
    if (!h.is_object() || !h.value("ok", false)) {
      sock_.close();
      return make_error(h.is_object() ? h.value("error", "refused") : "not a Troupe console: " + *hello);
    }
    job_ = h.value("job", "");
    set_actors(h["actors"]);
    return {};
  }

  // Reconnects after a lost connection; false after opt_.retries attempts.
  bool reconnect(const std::string& why) {
    std::fprintf(stderr, "console: connection to %s lost (%s)\n", opt_.address.str().c_str(), why.c_str());
    for (int i = 1; i <= opt_.retries; i++) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      auto ok = connect();
      if (ok) {
        std::fprintf(stderr, "console: reconnected to %s (attempt %d)\n", opt_.address.str().c_str(), i);
        return true;
      }
      std::fprintf(stderr, "console: reconnecting to %s: attempt %d/%d failed: %s\n", opt_.address.str().c_str(), i,
                   opt_.retries, ok.error().message.c_str());
      if (ok.error().message.find("refused:") == 0) return false;  // the token was refused: retrying will not help
    }
    return false;
  }

  // Runs one command line; false if it failed (or the job could not be reached).
  bool run(const std::string& line) {
    auto words = console::split_words(line);
    if (words && !words->empty() && ((*words)[0] == "quit" || (*words)[0] == "exit")) {
      quit_ = true;
      return true;
    }
    bool follow = words && !words->empty() && (*words)[0] == "logs" &&
                  std::find(words->begin(), words->end(), "-f") != words->end();
    if (!sock_.valid() && !reconnect("not connected")) return false;
    if (auto ok = sock_.write_line(json{{"line", line}}.dump()); !ok) {
      // The request never left: send it again on the new connection.
      if (!reconnect(ok.error().message)) return false;
      if (!sock_.write_line(json{{"line", line}}.dump())) return false;
    }
    for (;;) {
      auto got = follow ? read_following() : sock_.read_line(-1);
      if (!got) {
        std::string why = got.error().message;
        sock_.close();
        std::fprintf(stderr, "console: '%s' may or may not have run: the connection was lost\n", line.c_str());
        reconnect(why);
        return false;
      }
      json r = json::parse(*got, nullptr, false);
      if (!r.is_object()) {
        std::fprintf(stderr, "console: malformed reply: %s\n", got->c_str());
        return false;
      }
      if (r.contains("log")) {
        if (opt_.json) std::printf("%s\n", r.dump().c_str());
        else std::printf("%s\n", r["log"].get<std::string>().c_str());
        std::fflush(stdout);
        continue;
      }
      if (r.contains("actors")) set_actors(r["actors"]);
      bool ok = r.value("ok", false);
      std::string text = r.value("text", "");
      if (opt_.json) {
        json out = ok ? r.value("data", json::object()) : json{{"error", text}};
        out["ok"] = ok;
        out["command"] = line;
        std::printf("%s\n", out.dump().c_str());
      } else if (!ok) {
        std::fprintf(stderr, "error: %s\n", text.c_str());
      } else if (!text.empty()) {
        std::printf("%s\n", text.c_str());
      }
      std::fflush(stdout);
      return ok;
    }
  }

  // During logs -f: the next message, sending {"stop": true} once on Ctrl-C or Enter.
  Expected<std::string> read_following() {
    for (;;) {
      if (sock_.readable(100)) return sock_.read_line(-1);
      bool enter = false;
      if (isatty(0)) {
        pollfd p{0, POLLIN, 0};
        if (::poll(&p, 1, 0) == 1) {
          char buf[256];
          enter = ::read(0, buf, sizeof buf) > 0;
        }
      }
      if ((g_interrupted || enter) && !stop_sent_) {
        g_interrupted = 0;
        stop_sent_ = true;
        if (auto ok = sock_.write_line(json{{"stop", true}}.dump()); !ok) return ok.error();
      }
      if (stop_sent_ && sock_.readable(1000)) {
        stop_sent_ = false;
        return sock_.read_line(-1);
      }
    }
  }

  const std::vector<std::string>& actors() const { return actors_; }
  bool quit() const { return quit_; }
  const std::string& job() const { return job_; }

 private:
  void set_actors(const json& a) {
    if (!a.is_array()) return;
    actors_.clear();
    for (auto& x : a)
      if (x.is_string()) actors_.push_back(x);
  }
  ConsoleOptions opt_;
  console::LineSocket sock_;
  std::vector<std::string> actors_;
  std::string job_;
  bool quit_ = false, stop_sent_ = false;
};

Client* g_client = nullptr;

// Candidates for the word being completed, given the words before it.
std::vector<std::string> candidates(const std::vector<std::string>& before) {
  std::vector<std::string> out;
  if (before.empty()) {
    for (auto& c : console::commands()) out.push_back(c.name);
    return out;
  }
  const console::CommandSpec* c = console::find_command(before[0]);
  if (!c) return out;
  std::string what = c->completes;
  size_t pos = before.size();  // 1: first argument
  if (what == "actor" && g_client) {
    for (auto& a : g_client->actors())
      if (std::string(c->name) == "logs" || std::string(c->name) == "metrics" ||
          (a != "coordinator" && a != "training" && a != "checkpoint"))
        out.push_back(a);
    if (std::string(c->name) == "logs") out.push_back("-f");
  } else if (what == "dp" && pos == 1) {
    out = {"dp"};
  } else if (what == "now" && pos == 1) {
    out = {"now"};
  } else if (what == "trace" && pos == 1) {
    out = {"start", "stop"};
  } else if (what == "graph" && pos == 1) {
    out = {"--dot"};
  } else if (what == "set" && pos == 1) {
    out = {"lr", "grad_clip", "checkpoint.snapshot_every", "checkpoint.disk_every"};
  } else if (what == "command" && pos == 1) {
    for (auto& k : console::commands()) out.push_back(k.name);
  }
  return out;
}

std::vector<std::string> g_matches;

char* completion_generator(const char* text, int state) {
  static size_t next;
  if (state == 0) next = 0;
  std::string t = text;
  while (next < g_matches.size()) {
    const std::string& m = g_matches[next++];
    if (m.compare(0, t.size(), t) == 0) return strdup(m.c_str());
  }
  return nullptr;
}

char** complete(const char* text, int start, int) {
  rl_attempted_completion_over = 1;  // never fall back to file names
  auto before = console::split_words(std::string(rl_line_buffer, size_t(start)));
  g_matches = before ? candidates(*before) : std::vector<std::string>{};
  return rl_completion_matches(text, completion_generator);
}

std::string history_file() {
  const char* home = std::getenv("HOME");
  return home ? std::string(home) + "/.troupe_history" : std::string();
}

}  // namespace

int run_console(const ConsoleOptions& opt) {
  Client client(opt);
  g_client = &client;
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  auto ok = client.connect();
  if (!ok) {
    std::fprintf(stderr, "troupe console: %s\n", ok.error().message.c_str());
    return 1;
  }
  if (!opt.script.empty()) {
    bool all = true;
    for (auto& line : console::split_script(opt.script)) all = client.run(line) && all;
    return all ? 0 : 1;
  }
  const bool tty = isatty(0);
  if (tty)
    std::printf("troupe console: attached to %s at %s (help lists the commands, Tab completes, Ctrl-D leaves%s)\n",
                client.job().c_str(), opt.address.str().c_str(), opt.owns_job ? " and stops the job" : "");
  rl_readline_name = "troupe";
  rl_attempted_completion_function = complete;
  rl_completer_word_break_characters = const_cast<char*>(" \t");
  std::string hist = history_file();
  if (!hist.empty()) read_history(hist.c_str());
  for (;;) {
    sigaction(SIGINT, &sa, nullptr);
    g_interrupted = 0;
    char* raw = readline(tty ? "troupe> " : "");
    if (!raw) {  // Ctrl-D
      if (tty) std::printf("\n");
      break;
    }
    std::string line = raw;
    std::free(raw);
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    add_history(line.c_str());
    for (auto& cmd : console::split_script(line)) client.run(cmd);
    if (client.quit()) break;
  }
  if (!hist.empty()) write_history(hist.c_str());
  g_client = nullptr;
  return 0;
}

int cmd_console(int argc, char** argv) {
  ConsoleOptions opt;
  std::string address, console_file = kDefaultConsoleFile, token;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("troupe console: " + a + " needs a value\n" + kConsoleUsage);
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kConsoleUsage, stdout);
      return 0;
    } else if (a == "-c") {
      opt.script = value();
    } else if (a == "--json") {
      opt.json = true;
    } else if (a == "--token") {
      token = value();
    } else if (a == "--console-file") {
      console_file = value();
    } else if (a == "--retries") {
      std::string v = value();
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || n < 0 || n > 100000)
        throw std::runtime_error("troupe console: --retries '" + v + "': expected a count >= 0");
      opt.retries = int(n);
    } else if (!a.empty() && a[0] == '-') {
      throw std::runtime_error("troupe console: unknown option " + a + "\n" + kConsoleUsage);
    } else if (address.empty()) {
      address = a;
    } else {
      throw std::runtime_error("troupe console: one address only ('" + a + "' is a second)\n" + kConsoleUsage);
    }
  }
  json file;
  if (std::ifstream in(console_file); in) {
    file = json::parse(in, nullptr, false);
    if (!file.is_object()) throw std::runtime_error("troupe console: " + console_file + ": not a console file (JSON)");
  }
  if (address.empty()) {
    if (!file.is_object() || !file.contains("address"))
      throw std::runtime_error("troupe console: no address given and no console file at " + console_file +
                               " (start the job with --listen or --console)\n" + kConsoleUsage);
    address = file["address"];
  }
  auto hp = console::parse_host_port(address);
  if (!hp) throw std::runtime_error("troupe console: " + hp.error().message);
  opt.address = *hp;
  if (token.empty())
    if (const char* env = std::getenv("TROUPE_CONSOLE_TOKEN")) token = env;
  if (token.empty() && file.is_object()) token = file.value("token", "");
  if (token.empty())
    throw std::runtime_error("troupe console: no token: pass --token, set TROUPE_CONSOLE_TOKEN, or point "
                             "--console-file at the job's console file");
  opt.token = token;
  return run_console(opt);
}

}  // namespace troupe::app
