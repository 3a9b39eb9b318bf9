#include "apps/console_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <fstream>
#include <map>

#include "actors/supervisor.h"
#include "apps/console_commands.h"
#include "ops/model/generate.h"

namespace troupe::app {

using namespace actors;
using nlohmann::json;

namespace {

struct Child {
  std::string name, supervisor;
  caf::actor handle;
  int restarts = 0;
  bool alive = false;
};

// The children of the job's two supervisors, in start order ("training" first).
Expected<std::vector<Child>> children(caf::actor_system& sys, const CoordinatorInfo& info) {
  std::vector<Child> out;
  caf::scoped_actor self{sys};
  for (auto [name, sup] : {std::pair<const char*, caf::actor>{"training", info.training_supervisor},
                           {"checkpoint", info.checkpoint_supervisor}}) {
    if (!sup) continue;
    std::string err;
    self->request(sup, std::chrono::seconds(5), which_children_atom::value)
        .receive(
            [&](ChildList& l) {
              for (auto& c : l.children) out.push_back({c.name, name, c.handle, c.restarts, c.alive});
            },
            [&](caf::error& e) { err = describe_reason(e); });
    if (!err.empty()) return make_error(std::string(name) + " supervisor: " + err);
  }
  return out;
}

// Asks every live stage actor at once (each answers between two of its instructions), so
// the wait is the slowest answer, not the sum; nullopt for an actor that is down or did
// not answer within a second.
std::vector<std::optional<StageStatus>> stage_statuses(caf::actor_system& sys, const std::vector<Child>& kids) {
  caf::scoped_actor self{sys};
  using handle = decltype(self->request(caf::actor{}, std::chrono::seconds(1), actor_status_atom::value));
  std::vector<std::optional<handle>> pending;
  for (auto& c : kids)
    pending.push_back(c.alive && c.handle && c.supervisor == "training"
                          ? std::optional<handle>(self->request(c.handle, std::chrono::seconds(1), actor_status_atom::value))
                          : std::nullopt);
  std::vector<std::optional<StageStatus>> out(kids.size());
  for (size_t i = 0; i < kids.size(); i++)
    if (pending[i]) pending[i]->receive([&](StageStatus& s) { out[i] = std::move(s); }, [&](caf::error&) {});
  return out;
}

// The child named `name`, or an error that lists the close ones.
Expected<Child> find_child(const std::vector<Child>& kids, const std::string& name) {
  std::vector<std::string> close;
  for (auto& c : kids) {
    if (c.name == name) return c;
    if (LogBook::matches(c.name, name) || console::edit_distance(c.name, name) <= 2) close.push_back(c.name);
  }
  std::string s = "no actor named '" + name + "'";
  if (!close.empty()) {
    s += "; did you mean ";
    for (size_t i = 0; i < close.size(); i++) s += (i ? ", " : "") + close[i];
    s += "?";
  } else {
    s += " (ps lists them)";
  }
  return make_error(s);
}

// Kills a child through its supervisor and waits (up to 30 s) until the supervisor has
// started its successor. Returns the restart's wall time as the supervisor measured it.
Expected<double> kill_and_wait(caf::actor_system& sys, const CoordinatorInfo& info, const std::string& name) {
  auto kids = children(sys, info);
  if (!kids) return kids.error();
  auto c = find_child(*kids, name);
  if (!c) return c.error();
  caf::actor sup = c->supervisor == "training" ? info.training_supervisor : info.checkpoint_supervisor;
  caf::scoped_actor self{sys};
  std::string err;
  int64_t seq_before = 0;
  self->request(sup, std::chrono::seconds(5), restart_history_atom::value)
      .receive([&](RestartHistory& h) { seq_before = h.restarts.empty() ? 0 : h.restarts.back().sequence; },
               [&](caf::error& e) { err = describe_reason(e); });
  if (!err.empty()) return make_error(err);
  self->request(sup, std::chrono::seconds(5), kill_child_atom::value, name)
      .receive([](bool) {}, [&](caf::error& e) { err = describe_reason(e); });
  if (!err.empty()) return make_error(err);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    std::optional<RestartNotice> last;
    self->request(sup, std::chrono::seconds(5), restart_history_atom::value)
        .receive(
            [&](RestartHistory& h) {
              if (!h.restarts.empty() && h.restarts.back().sequence > seq_before) last = h.restarts.back();
            },
            [&](caf::error& e) { err = describe_reason(e); });
    if (!err.empty()) return make_error(c->supervisor + " supervisor: " + err);
    if (last) return last->seconds;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return make_error("the " + c->supervisor + " supervisor did not restart " + name + " within 30 s");
}

std::string human_bytes(double b) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, u++;
  return u == 0 ? strformat("%.0f B", b) : strformat("%.1f %s", b, unit[u]);
}

int64_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  long long size = 0, rss = 0;
  in >> size >> rss;
  return int64_t(rss) * int64_t(sysconf(_SC_PAGESIZE));
}

std::string layers_text(const json& node) {
  std::string s;
  if (node.contains("layers"))
    for (auto& r : node["layers"]) s += strformat("%s%d-%d", s.empty() ? "" : ",", r[0].get<int>(), r[1].get<int>() - 1);
  return s;
}

// Parses a positive integer option; the error names the option.
Expected<long> parse_int(const std::string& what, const std::string& v, long lo, long hi) {
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || x < lo || x > hi)
    return make_error(strformat("%s: expected an integer from %ld to %ld, got '%s'", what.c_str(), lo, hi, v.c_str()));
  return x;
}

}  // namespace

ConsoleServer::ConsoleServer(JobDriver& driver, console::HostPort listen, std::string token)
    : driver_(driver), listen_(std::move(listen)), token_(std::move(token)) {}

ConsoleServer::~ConsoleServer() { stop(); }

Expected<void> ConsoleServer::start() {
  auto fd = console::listen_on(listen_, &bound_);
  if (!fd) return fd.error();
  listen_fd_ = *fd;
  acceptor_ = std::thread([this] { accept_loop(); });
  return {};
}

void ConsoleServer::stop() {
  if (stopping_.exchange(true)) return;
  if (acceptor_.joinable()) acceptor_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_), listen_fd_ = -1;
  std::vector<std::unique_ptr<Session>> sessions;
  {
    std::lock_guard lk(mu_);
    for (auto& s : sessions_)
      if (s->sock) s->sock->shutdown();
    sessions.swap(sessions_);
  }
  for (auto& s : sessions)
    if (s->thread.joinable()) s->thread.join();
}

void ConsoleServer::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) != 1) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) continue;
    char host[64] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      port = ntohs(a->sin6_port);
    }
    std::lock_guard lk(mu_);
    // Reap finished sessions.
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if ((*it)->done) {
        (*it)->thread.join();
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
    auto s = std::make_unique<Session>();
    Session* sp = s.get();
    std::string peer = strformat("%s:%d", host, port);
    sp->thread = std::thread([this, sp, fd, peer] { serve(*sp, console::LineSocket(fd), peer); });
    sessions_.push_back(std::move(s));
  }
}

void ConsoleServer::serve(Session& s, console::LineSocket sock, std::string peer) {
  {
    std::lock_guard lk(mu_);
    s.sock = &sock;
  }
  auto& log = driver_.log();
  auto hello = sock.read_line(10000, 4096);
  json h;
  if (hello) h = json::parse(*hello, nullptr, false);
  std::string token = h.is_object() && h.contains("token") && h["token"].is_string() ? h["token"].get<std::string>() : "";
  if (!hello || !console::same_token(token, token_)) {
    std::string why = !hello ? "no greeting (" + hello.error().message + ")"
                      : token.empty() ? "no token" : "wrong token";
    log.add("console", "refused a connection from " + peer + ": " + why);
    (void)sock.write_line(json{{"ok", false}, {"error", "refused: " + why + " (the job's token is in its console file)"}}.dump());
  } else {
    log.add("console", "console attached from " + peer);
    (void)sock.write_line(json{{"ok", true},
                               {"job", driver_.job_path()},
                               {"actors", actor_names()},
                               {"commands", [] {
                                  json c = json::array();
                                  for (auto& x : console::commands()) c.push_back(x.name);
                                  return c;
                                }()}}
                              .dump());
    while (!stopping_) {
      auto line = sock.read_line(-1, 1 << 20);
      if (!line) break;
      json req = json::parse(*line, nullptr, false);
      if (!req.is_object() || !req.contains("line") || !req["line"].is_string()) {
        if (req.is_object() && req.contains("stop")) continue;  // a stop that crossed the end of a follow
        (void)sock.write_line(json{{"ok", false}, {"text", "malformed request: expected {\"line\": \"...\"}"}}.dump());
        continue;
      }
      std::string text = req["line"];
      auto words = console::split_words(text);
      // logs -f streams on this connection until the client says stop.
      if (words && !words->empty() && (*words)[0] == "logs" &&
          std::find(words->begin(), words->end(), "-f") != words->end()) {
        std::string actor;
        size_t n = 20;
        bool bad = false;
        for (size_t i = 1; i < words->size(); i++) {
          const auto& w = (*words)[i];
          if (w == "-f") continue;
          if (w == "-n" && i + 1 < words->size()) {
            auto v = parse_int("logs -n", (*words)[++i], 0, 100000);
            if (!v) {
              (void)sock.write_line(json{{"ok", false}, {"text", v.error().message}}.dump());
              bad = true;
              break;
            }
            n = size_t(*v);
          } else {
            actor = w;
          }
        }
        if (!bad) follow_logs(sock, actor, n);
        continue;
      }
      Reply r = execute(text);
      json out = {{"ok", r.ok}, {"text", r.text}, {"data", r.data}};
      if (words && !words->empty() && ((*words)[0] == "scale" || (*words)[0] == "ps")) out["actors"] = actor_names();
      if (!sock.write_line(out.dump())) break;
    }
    log.add("console", "console from " + peer + " detached");
  }
  {
    std::lock_guard lk(mu_);
    s.sock = nullptr;
  }
  s.done = true;
}

void ConsoleServer::follow_logs(console::LineSocket& sock, const std::string& source, size_t n) {
  auto& log = driver_.log();
  uint64_t seen = 0;
  auto send = [&](const std::vector<LogLine>& lines) {
    for (auto& l : lines) {
      seen = l.seq;
      if (!sock.write_line(json{{"log", LogBook::format(l)}}.dump())) return false;
    }
    return true;
  };
  if (!send(log.since(0, source, n))) return;
  seen = std::max(seen, log.last());
  while (!stopping_) {
    if (sock.readable(0)) {
      auto l = sock.read_line(1000);  // {"stop": true}, or the connection went away
      if (!l) return;
      break;
    }
    if (log.wait(seen, std::chrono::milliseconds(200))) {
      auto lines = log.since(seen, {}, SIZE_MAX);
      std::vector<LogLine> mine;
      for (auto& l : lines) {
        seen = l.seq;
        if (LogBook::matches(l.source, source)) mine.push_back(l);
      }
      if (!send(mine)) return;
    }
  }
  (void)sock.write_line(json{{"ok", true}, {"text", ""}, {"data", json::object()}}.dump());
}

std::vector<std::string> ConsoleServer::actor_names() {
  std::vector<std::string> out = {"coordinator", "training", "checkpoint"};
  auto kids = children(driver_.system(), driver_.view().info);
  if (kids)
    for (auto& c : *kids) out.push_back(c.name);
  return out;
}

Reply ConsoleServer::execute(const std::string& line) {
  auto parsed = console::split_words(line);
  if (!parsed) return Reply::error(parsed.error().message);
  auto& w = *parsed;
  if (w.empty()) return Reply{};
  const std::string& cmd = w[0];
  const console::CommandSpec* spec = console::find_command(cmd);
  if (!spec) return Reply::error(console::unknown_command_error(cmd));
  auto usage = [&] { return Reply::error(std::string("usage: ") + spec->usage); };
  auto args = w.size() - 1;
  std::string name = spec->name;
  try {
    if (name == "help") {
      if (args > 1) return usage();
      std::string h = console::help_text(args ? w[1] : "");
      while (!h.empty() && h.back() == '\n') h.pop_back();
      return Reply{true, h, json::object()};
    }
    if (name == "quit") return Reply{true, "bye", json::object()};
    if (name == "ps") return args ? usage() : ps();
    if (name == "status") return args ? usage() : status();
    if (name == "graph") {
      if (args > 1 || (args == 1 && w[1] != "--dot")) return usage();
      return graph(args == 1);
    }
    if (name == "metrics") return args > 1 ? usage() : metrics(args ? w[1] : "");
    if (name == "logs") {
      std::string actor;
      size_t n = 20;
      for (size_t i = 1; i < w.size(); i++) {
        if (w[i] == "-n" && i + 1 < w.size()) {
          auto v = parse_int("logs -n", w[++i], 0, 100000);
          if (!v) return Reply::error(v.error().message);
          n = size_t(*v);
        } else if (!w[i].empty() && w[i][0] == '-') {
          return usage();
        } else {
          actor = w[i];
        }
      }
      return logs(actor, n);
    }
    if (name == "pause") return args ? usage() : driver_.pause();
    if (name == "resume") return args ? usage() : driver_.resume();
    if (name == "kill") return args != 1 ? usage() : kill(w[1]);
    if (name == "restart") return args != 1 ? usage() : restart(w[1]);
    if (name == "scale") {
      if (args != 2 || w[1] != "dp") return usage();
      auto n = parse_int("scale dp", w[2], 1, 1024);
      if (!n) return Reply::error(n.error().message);
      int replicas = int(*n);
      return driver_.at_boundary([replicas](JobDriver& d) { return d.scale(replicas); });
    }
    if (name == "checkpoint") {
      if (args != 1 || w[1] != "now") return usage();
      return driver_.at_boundary([](JobDriver& d) { return d.checkpoint_now(); });
    }
    if (name == "set") {
      if (args != 2) return usage();
      std::string key = w[1], value = w[2];
      return driver_.at_boundary([key, value](JobDriver& d) { return d.set(key, value); });
    }
    if (name == "trace") {
      if (args == 1 && w[1] == "start") return driver_.at_boundary([](JobDriver& d) { return d.trace(true, ""); });
      if (args == 2 && w[1] == "stop") {
        std::string file = w[2];
        return driver_.at_boundary([file](JobDriver& d) { return d.trace(false, file); });
      }
      return usage();
    }
    if (name == "generate") return args < 1 ? usage() : generate(w);
  } catch (const std::exception& e) {
    return Reply::error(cmd + ": " + e.what());
  }
  return Reply::error("'" + cmd + "' is not implemented");
}

Reply ConsoleServer::status() {
  JobView v = driver_.view();
  Reply r;
  r.text = strformat("%s: step %lld/%d, dp=%d pp=%d, restarts %d", v.state.c_str(), (long long)v.steps_done,
                     v.total_steps, v.info.job.parallel.dp, v.info.job.parallel.pp, v.restarts);
  if (v.last) r.text += strformat(", loss %.4f, lr %.3g, %.0f tok/s", v.last->loss, v.last->lr, v.last->tokens_per_second);
  if (!v.error.empty()) r.text += "; " + v.error;
  r.data = {{"state", v.state},    {"steps_done", v.steps_done},      {"total_steps", v.total_steps},
            {"restarts", v.restarts}, {"dp", v.info.job.parallel.dp}, {"pp", v.info.job.parallel.pp}};
  if (v.last) r.data["loss"] = v.last->loss, r.data["lr"] = v.last->lr;
  return r;
}

Reply ConsoleServer::ps() {
  JobView v = driver_.view();
  auto& sys = driver_.system();
  auto kids = children(sys, v.info);
  if (!kids) return Reply::error(kids.error().message);
  json graph = json::parse(v.info.graph_json.empty() ? "{}" : v.info.graph_json, nullptr, false);
  std::map<std::string, json> nodes;
  if (graph.is_object() && graph.contains("nodes"))
    for (auto& n : graph["nodes"]) nodes[n["name"].get<std::string>()] = n;
  auto statuses = stage_statuses(sys, *kids);
  struct Row {
    std::string tree, name, role, device, state, restarts, mailbox, layers;
  };
  std::vector<Row> rows;
  json data = json::array();
  rows.push_back({"coordinator", "coordinator", "coordinator", "cpu", v.state, "-", "-", ""});
  data.push_back({{"name", "coordinator"}, {"role", "coordinator"}, {"state", v.state}, {"parent", nullptr}});
  for (const char* sup : {"training", "checkpoint"}) {
    bool training = std::string(sup) == "training";
    std::string strategy = training ? "one_for_all" : "one_for_one";
    rows.push_back({std::string("`- ") + sup, sup, "supervisor (" + strategy + ")", "cpu", "running", "-", "-", ""});
    data.push_back({{"name", sup}, {"role", "supervisor"}, {"strategy", strategy}, {"state", "running"}, {"parent", "coordinator"}});
    std::vector<size_t> mine;
    for (size_t k = 0; k < kids->size(); k++)
      if ((*kids)[k].supervisor == sup) mine.push_back(k);
    for (size_t i = 0; i < mine.size(); i++) {
      const Child& c = (*kids)[mine[i]];
      Row row;
      row.tree = std::string(i + 1 < mine.size() ? "   |- " : "   `- ") + c.name;
      row.name = c.name;
      auto n = nodes.find(c.name);
      std::string node_role = n != nodes.end() ? n->second.value("role", "stage") : "stage";
      row.role = !training ? "checkpoint writer" : node_role == "replica" ? "pipeline stage (dp replica)" : "pipeline stage";
      row.device = n != nodes.end() ? n->second.value("device", "cpu") : "cpu";
      row.layers = n != nodes.end() ? layers_text(n->second) : "";
      row.restarts = std::to_string(c.restarts);
      json d = {{"name", c.name}, {"role", row.role}, {"device", row.device}, {"restarts", c.restarts},
                {"parent", sup},  {"alive", c.alive}};
      if (!c.alive) {
        row.state = "down";
        row.mailbox = "-";
      } else if (training) {
        const auto& st = statuses[mine[i]];
        if (st) {
          row.state = st->running ? "running" : "idle";
          row.mailbox = std::to_string(st->mailbox);
          d["mailbox"] = st->mailbox;
          d["step"] = st->step + 1;
        } else {
          row.state = "busy";
          row.mailbox = "?";
        }
      } else {
        row.state = "idle";
        row.mailbox = "-";
      }
      d["state"] = row.state;
      if (!row.layers.empty()) d["layers"] = row.layers;
      data.push_back(d);
      rows.push_back(row);
    }
  }
  size_t wt = 5;
  for (auto& r : rows) wt = std::max(wt, r.tree.size());
  std::string text = strformat("%-*s  %-28s %-6s %-8s %8s %7s  %s\n", int(wt), "ACTOR", "ROLE", "DEVICE", "STATE",
                               "RESTARTS", "MAILBOX", "LAYERS");
  for (auto& r : rows)
    text += strformat("%-*s  %-28s %-6s %-8s %8s %7s  %s\n", int(wt), r.tree.c_str(), r.role.c_str(), r.device.c_str(),
                      r.state.c_str(), r.restarts.c_str(), r.mailbox.c_str(), r.layers.c_str());
  text.pop_back();
  return Reply{true, text, json{{"actors", data}}};
}

Reply ConsoleServer::graph(bool dot) {
  JobView v = driver_.view();
  if (dot) return Reply{true, v.info.graph_dot, json{{"dot", v.info.graph_dot}}};
  json g = json::parse(v.info.graph_json.empty() ? "{}" : v.info.graph_json, nullptr, false);
  if (!g.is_object() || !g.contains("nodes")) return Reply::error("the job has no graph yet");
  std::string text = "nodes:\n";
  for (auto& n : g["nodes"])
    text += strformat("  %-18s %-16s %-5s layers %s\n", n["name"].get<std::string>().c_str(),
                      n.value("role", "").c_str(), n.value("device", "").c_str(), layers_text(n).c_str());
  text += "channels:\n";
  for (auto& e : g["edges"]) {
    int slots = e.value("slots", 0);
    text += strformat("  %s -> %s  %s%s\n", e["from"].get<std::string>().c_str(), e["to"].get<std::string>().c_str(),
                      e.value("kind", "").c_str(), slots ? strformat(" (%d slots)", slots).c_str() : "");
  }
  text.pop_back();
  return Reply{true, text, g};
}

Reply ConsoleServer::metrics(const std::string& actor) {
  JobView v = driver_.view();
  auto& sys = driver_.system();
  auto kids = children(sys, v.info);
  if (!kids) return Reply::error(kids.error().message);
  std::vector<Child> stages;
  for (auto& c : *kids)
    if (c.supervisor == "training") stages.push_back(c);
  if (!actor.empty()) {
    auto c = find_child(*kids, actor);
    if (!c) return Reply::error(c.error().message);
    if (c->supervisor != "training") return Reply::error(actor + " is a checkpoint writer: metrics are per stage actor");
    stages = {*c};
  }
  Reply r;
  std::string text;
  if (actor.empty()) {
    if (v.last) {
      const auto& m = *v.last;
      // Means over the recent steps smooth the noise of one step.
      double step_s = 0, tps = 0, bubble = 0;
      for (auto& x : v.recent) step_s += x.step_seconds, tps += x.tokens_per_second, bubble += x.bubble_fraction;
      double n = double(v.recent.size());
      text = strformat("job: step %lld/%d (%s)  loss %.4f  lr %.3g  grad norm %.3f\n"
                       "     step %.1f ms  %.0f tok/s  bubble %.3f  ckpt stall %.2f ms  (last step)\n"
                       "     step %.1f ms  %.0f tok/s  bubble %.3f  (mean of the last %d steps)\n",
                       (long long)(m.step + 1), v.total_steps, v.state.c_str(), m.loss, m.lr, m.grad_norm,
                       m.step_seconds * 1e3, m.tokens_per_second, m.bubble_fraction,
                       m.checkpoint_stall_seconds * 1e3, step_s / n * 1e3, tps / n, bubble / n, int(n));
      r.data["job"] = {{"step", m.step + 1},         {"loss", m.loss},
                       {"lr", m.lr},                 {"grad_norm", m.grad_norm},
                       {"step_s", m.step_seconds},   {"tokens_per_s", m.tokens_per_second},
                       {"bubble_fraction", m.bubble_fraction}, {"ckpt_stall_s", m.checkpoint_stall_seconds},
                       {"mean_step_s", step_s / n},  {"mean_tokens_per_s", tps / n},
                       {"mean_bubble_fraction", bubble / n}, {"state", v.state}};
    } else {
      text = strformat("job: no step finished yet (%s)\n", v.state.c_str());
      r.data["job"] = {{"state", v.state}};
    }
    int64_t rss = resident_bytes();
    text += strformat("     memory: %s resident (this process)\n", human_bytes(double(rss)).c_str());
    r.data["job"]["resident_bytes"] = rss;
  }
  text += strformat("%-18s %10s %10s %10s %12s %10s %6s\n", "ACTOR", "PARAMS", "WEIGHTS", "ADAM", "ACTIVATIONS",
                    "COMPUTE", "BUSY");
  json per = json::array();
  double step_s = v.last ? v.last->step_seconds : 0;
  auto statuses = stage_statuses(sys, stages);
  for (size_t k = 0; k < stages.size(); k++) {
    const Child& c = stages[k];
    const auto& st = statuses[k];
    if (!st) {
      text += strformat("%-18s %s\n", c.name.c_str(), c.alive ? "(busy: no answer within 1 s)" : "(down)");
      per.push_back({{"name", c.name}, {"state", c.alive ? "busy" : "down"}});
      continue;
    }
    double busy = step_s > 0 ? st->busy_seconds / step_s : 0;
    text += strformat("%-18s %10lld %10s %10s %12s %8.1fms %5.0f%%\n", c.name.c_str(), (long long)st->params,
                      human_bytes(double(st->param_bytes)).c_str(), human_bytes(double(st->optimizer_bytes)).c_str(),
                      human_bytes(double(st->activation_bytes)).c_str(), st->busy_seconds * 1e3, busy * 100);
    per.push_back({{"name", c.name},
                   {"params", st->params},
                   {"param_bytes", st->param_bytes},
                   {"optimizer_bytes", st->optimizer_bytes},
                   {"activation_bytes", st->activation_bytes},
                   {"compute_s", st->busy_seconds},
                   {"busy_fraction", busy},
                   {"steps", st->steps}});
  }
  text.pop_back();
  r.text = text;
  r.data["actors"] = per;
  return r;
}

Reply ConsoleServer::logs(const std::string& actor, size_t n) {
  auto lines = driver_.log().since(0, actor, n);
  Reply r;
  json arr = json::array();
  for (auto& l : lines) {
    r.text += LogBook::format(l) + "\n";
    arr.push_back({{"seq", l.seq}, {"t", l.seconds}, {"source", l.source}, {"text", l.text}});
  }
  if (r.text.empty()) r.text = actor.empty() ? "(no log lines yet)" : "(no log lines about " + actor + ")";
  else r.text.pop_back();
  r.data = {{"lines", arr}};
  return r;
}

Reply ConsoleServer::kill(const std::string& actor) {
  JobView v = driver_.view();
  if (v.state == "finished" || v.state == "failed") return Reply::error("the job has " + v.state);
  auto secs = kill_and_wait(driver_.system(), v.info, actor);
  if (!secs) return Reply::error(secs.error().message);
  driver_.log().add(actor, "killed by a console");
  // The coordinator restores the restarted actors before the next step (or the step that
  // was running fails and is replayed); a paused driver does it now.
  driver_.post([](JobDriver& d) -> Reply {
    auto r = d.recover_if_restarted();
    return r ? Reply{} : Reply::error("after a console kill: " + r.error().message);
  });
  Reply r;
  r.text = strformat("killed %s; its supervisor restarted it in %.1f ms; the coordinator restores the latest "
                     "snapshot before the next step",
                     actor.c_str(), *secs * 1e3);
  r.data = {{"killed", actor}, {"restart_s", *secs}};
  return r;
}

Reply ConsoleServer::restart(const std::string& actor) {
  auto& sys = driver_.system();
  return driver_.at_boundary([&sys, actor](JobDriver& d) -> Reply {
    JobView v = d.view();
    int64_t at = d.steps_done();
    auto secs = kill_and_wait(sys, v.info, actor);
    if (!secs) return Reply::error(secs.error().message);
    d.log().add(actor, "restarted by a console");
    auto rec = d.recover_if_restarted();
    if (!rec) return Reply::error(rec.error().message);
    Reply r;
    r.text = strformat("restarted %s after step %lld in %.1f ms%s", actor.c_str(), (long long)at, *secs * 1e3,
                       *rec ? strformat("; restored the snapshot of step %lld", (long long)d.steps_done()).c_str() : "");
    r.data = {{"restarted", actor}, {"after_step", at}, {"restart_s", *secs}, {"resumes_at", d.steps_done()}};
    return r;
  });
}

Reply ConsoleServer::generate(const std::vector<std::string>& w) {
  std::string prompt;
  int max_tokens = 32;
  model::Sampling s;
  for (size_t i = 1; i < w.size(); i++) {
    auto value = [&](const char* opt) -> Expected<std::string> {
      if (i + 1 >= w.size()) return make_error(std::string("generate: ") + opt + " needs a value");
      return w[++i];
    };
    if (w[i] == "--max-tokens") {
      auto v = value("--max-tokens");
      if (!v) return Reply::error(v.error().message);
      auto n = parse_int("generate --max-tokens", *v, 1, 4096);
      if (!n) return Reply::error(n.error().message);
      max_tokens = int(*n);
    } else if (w[i] == "--temperature") {
      auto v = value("--temperature");
      if (!v) return Reply::error(v.error().message);
      char* end = nullptr;
      s.temperature = std::strtof(v->c_str(), &end);
      if (v->empty() || *end || s.temperature < 0)
        return Reply::error("generate --temperature: expected a number >= 0, got '" + *v + "'");
    } else if (w[i] == "--seed") {
      auto v = value("--seed");
      if (!v) return Reply::error(v.error().message);
      auto n = parse_int("generate --seed", *v, 0, LONG_MAX);
      if (!n) return Reply::error(n.error().message);
      s.seed = uint64_t(*n);
    } else {
      prompt += (prompt.empty() ? "" : " ") + w[i];
    }
  }
  if (prompt.empty()) return Reply::error("usage: generate PROMPT [--max-tokens N] [--temperature T] [--seed S]");
  // The weights as they are now: a snapshot taken between two steps.
  SnapshotPtr snap;
  int64_t at = 0;
  Reply got = driver_.at_boundary([&snap, &at](JobDriver& d) -> Reply {
    if (auto r = d.recover_if_restarted(); !r) return Reply::error(r.error().message);
    at = d.steps_done();
    auto w = d.coord().call<SnapshotPtr>(weights_atom::value, at);
    if (!w) return Reply::error(w.error().message);
    snap = *w;
    return Reply{};
  });
  if (!got.ok) return got;
  JobView v = driver_.view();
  {
    std::lock_guard lk(tok_mu_);
    if (!tokenizer_) {
      auto t = Tokenizer::from_gguf_file(v.info.job.data.tokenizer);
      if (!t) return Reply::error("generate: data.tokenizer: " + t.error().message);
      tokenizer_ = std::make_unique<Tokenizer>(std::move(*t));
    }
  }
  model::Transformer m(v.info.model);
  if (auto ok = model::load_params(m, snap->tensors); !ok) return Reply::error("generate: " + ok.error().message);
  auto ids = tokenizer_->encode(prompt);
  auto t0 = std::chrono::steady_clock::now();
  auto out = model::generate_plain(m, ids, max_tokens, s);
  if (!out) return Reply::error(out.error().message);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string text = tokenizer_->decode(*out);
  Reply r;
  r.text = prompt + text + strformat("\n(weights after step %lld; %zu tokens in %.2f s)", (long long)at, out->size(), secs);
  r.data = {{"prompt", prompt}, {"completion", text}, {"tokens", *out}, {"step", at}, {"seconds", secs}};
  return r;
}

}  // namespace troupe::app
