// The supervisor on a real actor system: each strategy restarts exactly the children it
// should, in order; restart types decide what an exit restarts; the restart intensity
// makes a supervisor give up with a reason that names it and the child, and its parent
// restarts it (escalation); the listener hears of every restart.
//
// Workers log "start:NAME" when their factory runs (on the supervisor's thread) and
// "stop:NAME" when told to exit (before they quit, so before the supervisor sees them
// down). A restart notice therefore arrives after every log line of its restart, and the
// tests compare whole logs. They wait on messages (notices, replies, down messages) with
// timeouts, never on sleeps.

#include "actors/supervisor.h"

#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "test_util.h"

using namespace troupe;
using namespace troupe::actors;
using namespace std::chrono_literals;

namespace {

using crash_atom = caf::atom_constant<caf::atom("crash")>;
using throw_atom = caf::atom_constant<caf::atom("throw")>;
using finish_atom = caf::atom_constant<caf::atom("finish")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;

// crash: quit with an error; throw: an exception escapes the handler; finish: normal exit;
// ping: answers its name.
using worker_actor = caf::typed_actor<caf::reacts_to<crash_atom>, caf::reacts_to<throw_atom>,
                                      caf::reacts_to<finish_atom>, caf::replies_to<ping_atom>::with<std::string>>;

constexpr auto kWait = 10s;  // generous: only a broken supervisor ever waits this long

// Start and stop events, in the order they happened, from any thread.
class EventLog {
 public:
  void add(std::string e) {
    std::lock_guard<std::mutex> lock(m_);
    events_.push_back(std::move(e));
  }
  // The events since the last take.
  std::vector<std::string> take() {
    std::lock_guard<std::mutex> lock(m_);
    return std::exchange(events_, {});
  }

 private:
  std::mutex m_;
  std::vector<std::string> events_;
};

// `stubborn` workers ignore user_shutdown (the supervisor must kill them after the timeout).
worker_actor::behavior_type worker_fn(worker_actor::pointer self, std::string name, std::shared_ptr<EventLog> log,
                                      bool stubborn) {
  self->set_exit_handler([self, name, log, stubborn](caf::exit_msg& em) {
    log->add((stubborn ? "ignore:" : "stop:") + name);
    if (!stubborn) self->quit(em.reason);
  });
  return {
      [self, name](crash_atom) { self->quit(caf::make_error(caf::sec::runtime_error, name + " crashed on command")); },
      [name](throw_atom) { throw std::runtime_error(name + " threw on command"); },
      [self](finish_atom) { self->quit(); },
      [name](ping_atom) { return name; },
  };
}

ChildSpec worker(const std::string& name, std::shared_ptr<EventLog> log, RestartType restart = RestartType::permanent,
                 bool stubborn = false) {
  ChildSpec c;
  c.name = name;
  c.restart = restart;
  c.start = [name, log, stubborn](caf::actor_system& sys) {
    log->add("start:" + name);
    return caf::actor_cast<caf::actor>(sys.spawn(worker_fn, name, log, stubborn));
  };
  return c;
}

SupervisorSpec supervisor_spec(const std::string& name, RestartStrategy strategy, std::vector<ChildSpec> children,
                               int max_restarts = 10, double within_seconds = 60) {
  SupervisorSpec s;
  s.name = name;
  s.strategy = strategy;
  s.max_restarts = max_restarts;
  s.within_seconds = within_seconds;
  s.children = std::move(children);
  return s;
}

struct Harness {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  std::shared_ptr<EventLog> log = std::make_shared<EventLog>();

  caf::actor me() { return caf::actor_cast<caf::actor>(self); }

  ChildList children(const supervisor_actor& sup) {
    ChildList out;
    bool ok = false;
    self->request(sup, kWait, which_children_atom::value)
        .receive([&](ChildList& l) { out = std::move(l), ok = true; },
                 [&](caf::error& e) { FAIL("which_children: " << describe_reason(e)); });
    REQUIRE(ok);
    return out;
  }
  std::map<std::string, caf::actor> handles(const supervisor_actor& sup) {
    std::map<std::string, caf::actor> out;
    for (auto& c : children(sup).children) out[c.name] = c.handle;
    return out;
  }
  ChildInfo child(const supervisor_actor& sup, const std::string& name) {
    for (auto& c : children(sup).children)
      if (c.name == name) return c;
    FAIL("no child " << name);
    return {};
  }
  supervisor_actor child_supervisor(const supervisor_actor& sup, const std::string& name) {
    return caf::actor_cast<supervisor_actor>(child(sup, name).handle);
  }

  RestartNotice next_notice() {
    RestartNotice n;
    bool got = false;
    self->receive([&](restarted_atom, RestartNotice& x) { n = std::move(x), got = true; }, caf::after(kWait) >> [] {});
    REQUIRE(got);
    return n;
  }
  // Waits until the supervisor reports the child down (a restart would be visible by then:
  // the supervisor decides while it handles the down message).
  ChildInfo wait_down(const supervisor_actor& sup, const std::string& name) {
    auto deadline = std::chrono::steady_clock::now() + kWait;
    while (std::chrono::steady_clock::now() < deadline) {
      auto c = child(sup, name);
      if (!c.alive) return c;
      std::this_thread::yield();
    }
    FAIL(name << " never went down");
    return {};
  }
  caf::error wait_exit(const caf::actor& a) {
    caf::error reason;
    bool got = false;
    self->receive(
        [&](caf::down_msg& dm) {
          REQUIRE(dm.source == a.address());
          reason = dm.reason, got = true;
        },
        caf::after(kWait) >> [] {});
    REQUIRE(got);
    return reason;
  }
  // Stops a tree the way its owner would and waits until it is gone.
  void stop(const supervisor_actor& sup) {
    auto a = caf::actor_cast<caf::actor>(sup);
    self->monitor(a);
    self->send_exit(a, caf::exit_reason::user_shutdown);
    wait_exit(a);
  }
  RestartHistory history(const supervisor_actor& sup) {
    RestartHistory h;
    self->request(sup, kWait, restart_history_atom::value)
        .receive([&](RestartHistory& x) { h = std::move(x); },
                 [&](caf::error& e) { FAIL("restart_history: " << describe_reason(e)); });
    return h;
  }
};

enum class Crash { quit, exception };

void crash(Harness& h, const caf::actor& child, Crash how) {
  auto w = caf::actor_cast<worker_actor>(child);
  if (how == Crash::quit)
    h.self->send(w, crash_atom::value);
  else
    h.self->send(w, throw_atom::value);
}

std::vector<std::string> names(const RestartNotice& n) {
  std::vector<std::string> out;
  for (auto& c : n.restarted) out.push_back(c.name);
  return out;
}

// Four workers a, b, c, d; b fails. Checks which children got new handles, the order of
// stops and starts, and the notice.
void check_strategy(RestartStrategy strategy, Crash how, const std::vector<std::string>& restarted,
                    const std::vector<std::string>& events) {
  Harness h;
  auto spec = supervisor_spec("workers", strategy,
                              {worker("a", h.log), worker("b", h.log), worker("c", h.log), worker("d", h.log)});
  spec.listener = h.me();
  auto sup = spawn_supervisor(h.sys, spec);
  auto before = h.handles(sup);
  CHECK(h.log->take() == std::vector<std::string>{"start:a", "start:b", "start:c", "start:d"});

  crash(h, before["b"], how);
  auto n = h.next_notice();
  CHECK(n.supervisor == "workers");
  CHECK(n.failed_child == "b");
  CHECK(names(n) == restarted);
  if (how == Crash::quit)
    CHECK(n.reason == "b crashed on command");
  else  // CAF 0.17's default exception handler reports sec::runtime_error, without the what()
    CHECK(n.reason == caf::to_string(caf::make_error(caf::sec::runtime_error)));
  CHECK(n.sequence == 1);
  CHECK(n.seconds >= 0);
  CHECK(h.log->take() == events);

  // Exactly the restarted children have new handles; the notice carries them.
  auto after = h.handles(sup);
  for (auto& [name, handle] : after) {
    bool was_restarted = std::find(restarted.begin(), restarted.end(), name) != restarted.end();
    INFO("child " << name);
    CHECK((handle != before[name]) == was_restarted);
    CHECK(h.child(sup, name).restarts == (was_restarted ? 1 : 0));
  }
  for (auto& c : n.restarted) CHECK(c.handle == after[c.name]);
  // The new b works.
  h.self->request(caf::actor_cast<worker_actor>(after["b"]), kWait, ping_atom::value)
      .receive([](const std::string& name) { CHECK(name == "b"); },
               [](caf::error& e) { FAIL("ping: " << describe_reason(e)); });
  h.stop(sup);
  CHECK(h.log->take() == std::vector<std::string>{"stop:d", "stop:c", "stop:b", "stop:a"});
}

Crash crash_mode() {
#ifdef CAF_NO_EXCEPTIONS
  return Crash::quit;  // this CAF cannot report an exception as an exit
#else
  return GENERATE(Crash::quit, Crash::exception);
#endif
}

}  // namespace

TEST_CASE("supervisor strategies and restart types parse from their names", "[supervisor]") {
  for (auto s : {RestartStrategy::one_for_one, RestartStrategy::one_for_all, RestartStrategy::rest_for_one}) {
    auto parsed = parse_restart_strategy(to_string(s));
    REQUIRE(parsed.ok());
    CHECK(*parsed == s);
  }
  for (auto t : {RestartType::permanent, RestartType::transient, RestartType::temporary}) {
    auto parsed = parse_restart_type(to_string(t));
    REQUIRE(parsed.ok());
    CHECK(*parsed == t);
  }
  auto bad = parse_restart_strategy("one-for-all");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message == "supervision strategy 'one-for-all' is not one_for_one, one_for_all or rest_for_one");
  auto bad_type = parse_restart_type("forever");
  REQUIRE_FALSE(bad_type.ok());
  CHECK(bad_type.error().message == "restart type 'forever' is not permanent, transient or temporary");
}

TEST_CASE("a supervisor with a bad spec exits at once, naming the field", "[supervisor]") {
  Harness h;
  auto spec = supervisor_spec("workers", RestartStrategy::one_for_one, {worker("a", h.log), worker("a", h.log)});
  CHECK(validate_supervisor_spec(spec).error().message == "supervisor 'workers': children[1].name: 'a' is used twice");
  auto sup = caf::actor_cast<caf::actor>(spawn_supervisor(h.sys, spec));
  h.self->monitor(sup);
  CHECK(describe_reason(h.wait_exit(sup)) == "supervisor 'workers': children[1].name: 'a' is used twice");
  CHECK(h.log->take().empty());  // no child was started
  spec.children.pop_back();
  spec.max_restarts = -1;
  CHECK(validate_supervisor_spec(spec).error().message == "supervisor 'workers': max_restarts: must be >= 0, got -1");
}

TEST_CASE("one_for_one restarts only the failed child", "[supervisor]") {
  check_strategy(RestartStrategy::one_for_one, crash_mode(), {"b"}, {"start:b"});
}

TEST_CASE("one_for_all stops the others in reverse order, then restarts all in order", "[supervisor]") {
  check_strategy(RestartStrategy::one_for_all, crash_mode(), {"a", "b", "c", "d"},
                 {"stop:d", "stop:c", "stop:a", "start:a", "start:b", "start:c", "start:d"});
}

TEST_CASE("rest_for_one restarts the failed child and those started after it", "[supervisor]") {
  check_strategy(RestartStrategy::rest_for_one, crash_mode(), {"b", "c", "d"},
                 {"stop:d", "stop:c", "start:b", "start:c", "start:d"});
}

TEST_CASE("restart types decide which exits restart a child", "[supervisor]") {
  Harness h;
  auto spec =
      supervisor_spec("workers", RestartStrategy::one_for_one,
                      {worker("perm", h.log, RestartType::permanent), worker("trans", h.log, RestartType::transient),
                       worker("trans2", h.log, RestartType::transient), worker("temp", h.log, RestartType::temporary),
                       worker("temp2", h.log, RestartType::temporary)});
  spec.listener = h.me();
  auto sup = spawn_supervisor(h.sys, spec);
  auto w = h.handles(sup);
  h.log->take();
  auto send = [&](const std::string& name, auto atom) { h.self->send(caf::actor_cast<worker_actor>(w[name]), atom); };

  // permanent: even a normal exit restarts it.
  send("perm", finish_atom::value);
  auto n = h.next_notice();
  CHECK(names(n) == std::vector<std::string>{"perm"});
  CHECK(n.reason == "normal");
  // transient: a normal exit leaves it down, an abnormal one restarts it.
  send("trans", finish_atom::value);
  CHECK(h.wait_down(sup, "trans").restarts == 0);
  send("trans2", crash_atom::value);
  n = h.next_notice();
  CHECK(names(n) == std::vector<std::string>{"trans2"});
  CHECK(n.reason == "trans2 crashed on command");
  // temporary: never restarted, whatever the exit.
  send("temp", crash_atom::value);
  CHECK(h.wait_down(sup, "temp").restarts == 0);
  send("temp2", finish_atom::value);
  CHECK(h.wait_down(sup, "temp2").restarts == 0);

  CHECK(h.log->take() == std::vector<std::string>{"start:perm", "start:trans2"});
  auto hist = h.history(sup);
  REQUIRE(hist.restarts.size() == 2);
  CHECK(hist.restarts[0].failed_child == "perm");
  CHECK(hist.restarts[1].failed_child == "trans2");
  h.stop(sup);
}

TEST_CASE("a group restart stops temporary siblings without restarting them", "[supervisor]") {
  Harness h;
  auto spec = supervisor_spec("gang", RestartStrategy::one_for_all,
                              {worker("a", h.log), worker("tmp", h.log, RestartType::temporary), worker("b", h.log)});
  spec.listener = h.me();
  auto sup = spawn_supervisor(h.sys, spec);
  auto w = h.handles(sup);
  h.log->take();
  crash(h, w["a"], Crash::quit);
  auto n = h.next_notice();
  CHECK(names(n) == std::vector<std::string>{"a", "b"});
  CHECK(h.log->take() == std::vector<std::string>{"stop:b", "stop:tmp", "start:a", "start:b"});
  CHECK_FALSE(h.child(sup, "tmp").alive);
  h.stop(sup);
}

TEST_CASE("a child that ignores the shutdown is killed after its timeout", "[supervisor]") {
  Harness h;
  auto stubborn = worker("stubborn", h.log, RestartType::permanent, true);
  stubborn.shutdown_timeout = 50ms;
  auto spec = supervisor_spec("gang", RestartStrategy::one_for_all, {stubborn, worker("b", h.log)});
  spec.listener = h.me();
  auto sup = spawn_supervisor(h.sys, spec);
  auto w = h.handles(sup);
  h.log->take();
  crash(h, w["b"], Crash::quit);
  auto n = h.next_notice();
  CHECK(names(n) == std::vector<std::string>{"stubborn", "b"});
  CHECK(n.seconds >= 0.05);  // the restart waited out the timeout
  CHECK(h.log->take() == std::vector<std::string>{"ignore:stubborn", "start:stubborn", "start:b"});
  CHECK(h.handles(sup)["stubborn"] != w["stubborn"]);
  h.stop(sup);
}

TEST_CASE("more restarts than the intensity allows stop the supervisor with a named reason", "[supervisor]") {
  Harness h;
  auto spec = supervisor_spec("workers", RestartStrategy::one_for_one, {worker("a", h.log), worker("b", h.log)},
                              /*max_restarts=*/2, /*within_seconds=*/60);
  spec.listener = h.me();
  auto sup = spawn_supervisor(h.sys, spec);
  h.self->monitor(sup);
  auto b = h.handles(sup)["b"];
  h.log->take();
  for (int i = 0; i < 2; i++) {
    crash(h, h.handles(sup)["a"], Crash::quit);
    CHECK(h.next_notice().sequence == i + 1);
  }
  crash(h, h.handles(sup)["a"], Crash::quit);  // the third restart in the window is one too many
  auto reason = h.wait_exit(caf::actor_cast<caf::actor>(sup));
  CHECK(describe_reason(reason) ==
        "workers exceeded restart intensity 2 in 60 s: child a failed: a crashed on command");
  // It stopped its other child before it exited.
  CHECK(h.log->take() == std::vector<std::string>{"start:a", "start:a", "stop:b"});
  h.self->monitor(b);
  CHECK(h.wait_exit(b) == caf::exit_reason::user_shutdown);
}

TEST_CASE("restarts older than the intensity window do not count", "[supervisor]") {
  Harness h;
  auto spec = supervisor_spec("workers", RestartStrategy::one_for_one, {worker("a", h.log)}, /*max_restarts=*/1,
                              /*within_seconds=*/0.05);
  spec.listener = h.me();
  auto sup = spawn_supervisor(h.sys, spec);
  for (int i = 0; i < 3; i++) {
    crash(h, h.handles(sup)["a"], Crash::quit);
    CHECK(h.next_notice().sequence == i + 1);
    std::this_thread::sleep_for(100ms);  // let the window pass (time is what is tested here)
  }
  CHECK(h.child(sup, "a").alive);
  h.stop(sup);
}

TEST_CASE("a child supervisor that gives up is restarted by its parent", "[supervisor]") {
  Harness h;
  auto inner = supervisor_spec("inner", RestartStrategy::one_for_all, {worker("w1", h.log), worker("w2", h.log)},
                               /*max_restarts=*/1);
  inner.listener = h.me();
  auto root_spec =
      supervisor_spec("root", RestartStrategy::one_for_one, {supervisor_child(inner), worker("w3", h.log)});
  root_spec.listener = h.me();
  auto root = spawn_supervisor(h.sys, root_spec);
  auto top = h.handles(root);
  auto inner1 = h.child_supervisor(root, "inner");
  auto low = h.handles(inner1);  // answered after inner1 started its children
  // inner starts its children on its own thread, concurrently with root starting w3.
  auto started = h.log->take();
  CHECK(std::erase(started, "start:w3") == 1);
  CHECK(started == std::vector<std::string>{"start:w1", "start:w2"});

  // The first failure is inner's to handle: it restarts its gang.
  crash(h, low["w1"], Crash::quit);
  auto n = h.next_notice();
  CHECK(n.supervisor == "inner");
  CHECK(names(n) == std::vector<std::string>{"w1", "w2"});
  CHECK(h.log->take() == std::vector<std::string>{"stop:w2", "start:w1", "start:w2"});

  // The second exceeds inner's intensity: it stops w2 and exits; root restarts it.
  crash(h, h.handles(inner1)["w1"], Crash::quit);
  n = h.next_notice();
  CHECK(n.supervisor == "root");
  CHECK(n.failed_child == "inner");
  CHECK(n.reason == "inner exceeded restart intensity 1 in 60 s: child w1 failed: w1 crashed on command");
  CHECK(names(n) == std::vector<std::string>{"inner"});
  auto inner2 = h.child_supervisor(root, "inner");
  CHECK(n.restarted[0].handle == caf::actor_cast<caf::actor>(inner2));
  CHECK(inner2 != inner1);
  auto low2 = h.children(inner2);  // answered after inner2 started its children
  CHECK(h.log->take() == std::vector<std::string>{"stop:w2", "start:w1", "start:w2"});
  for (auto& c : low2.children) {
    CHECK(c.alive);
    CHECK(c.restarts == 0);  // a fresh supervisor
    CHECK(c.handle != low[c.name]);
  }
  // w3, under one_for_one, was left alone.
  CHECK(h.handles(root)["w3"] == top["w3"]);
  CHECK(h.child(root, "inner").restarts == 1);
  CHECK(h.child(root, "w3").restarts == 0);

  // Stopping the tree stops it depth-first in reverse start order.
  h.stop(root);
  CHECK(h.log->take() == std::vector<std::string>{"stop:w3", "stop:w2", "stop:w1"});
}

TEST_CASE("the listener and the callback hear of each restart; children can be listed and killed", "[supervisor]") {
  Harness h;
  std::mutex m;
  std::vector<RestartNotice> seen;  // by the callback, on the supervisor's thread
  auto spec = supervisor_spec("workers", RestartStrategy::rest_for_one,
                              {worker("a", h.log), worker("b", h.log), worker("c", h.log)});
  spec.listener = h.me();
  spec.on_restart = [&](const RestartNotice& n) {
    std::lock_guard<std::mutex> lock(m);
    seen.push_back(n);
  };
  auto sup = spawn_supervisor(h.sys, spec);

  auto list = h.children(sup).children;
  REQUIRE(list.size() == 3);
  for (size_t i = 0; i < 3; i++) {
    CHECK(list[i].name == std::string(1, char('a' + i)));
    CHECK(list[i].alive);
    CHECK(list[i].handle);
    CHECK(list[i].restarts == 0);
    CHECK(list[i].restart == RestartType::permanent);
  }

  bool killed = false;
  h.self->request(sup, kWait, kill_child_atom::value, std::string("b"))
      .receive([&](bool ok) { killed = ok; }, [](caf::error& e) { FAIL("kill: " << describe_reason(e)); });
  CHECK(killed);
  auto n = h.next_notice();
  CHECK(n.failed_child == "b");
  CHECK(n.reason == caf::to_string(caf::make_error(caf::exit_reason::kill)));
  CHECK(names(n) == std::vector<std::string>{"b", "c"});
  {
    std::lock_guard<std::mutex> lock(m);  // the callback ran before the listener was told
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].sequence == n.sequence);
    CHECK(names(seen[0]) == names(n));
    CHECK(seen[0].restarted[0].handle == n.restarted[0].handle);
  }
  auto after = h.handles(sup);
  CHECK(after["b"] == n.restarted[0].handle);
  CHECK(after["c"] == n.restarted[1].handle);
  CHECK(after["a"] == list[0].handle);
  auto hist = h.history(sup);
  REQUIRE(hist.restarts.size() == 1);
  CHECK(hist.restarts[0].seconds == n.seconds);
  CHECK(n.seconds > 0);  // it stopped c and spawned two actors

  std::string error;
  h.self->request(sup, kWait, kill_child_atom::value, std::string("zzz"))
      .receive([](bool) { FAIL("killed a child that does not exist"); },
               [&](caf::error& e) { error = describe_reason(e); });
  CHECK(error == "workers: no child named 'zzz'");
  h.stop(sup);
}

TEST_CASE("a child that fails to start stops the supervisor, or counts as a failure on restart", "[supervisor]") {
  Harness h;
  auto failing = [&](int good_starts) {
    auto c = worker("b", h.log);
    auto inner = c.start;
    auto starts = std::make_shared<int>(0);
    c.start = [inner, starts, good_starts](caf::actor_system& sys) -> caf::actor {
      if ((*starts)++ >= good_starts) throw std::runtime_error("no device");
      return inner(sys);
    };
    return c;
  };

  SECTION("at spawn: the children started before it are stopped") {
    auto sup = caf::actor_cast<caf::actor>(spawn_supervisor(
        h.sys, supervisor_spec("workers", RestartStrategy::one_for_one, {worker("a", h.log), failing(0)})));
    h.self->monitor(sup);
    CHECK(describe_reason(h.wait_exit(sup)) == "workers: child b failed to start: no device");
    CHECK(h.log->take() == std::vector<std::string>{"start:a", "stop:a"});
  }
  SECTION("at a restart: each failed start counts toward the intensity") {
    auto sup = spawn_supervisor(
        h.sys, supervisor_spec("workers", RestartStrategy::one_for_one, {worker("a", h.log), failing(1)}, 2));
    h.self->monitor(sup);
    crash(h, h.handles(sup)["b"], Crash::quit);
    CHECK(describe_reason(h.wait_exit(caf::actor_cast<caf::actor>(sup))) ==
          "workers exceeded restart intensity 2 in 60 s: child b failed: failed to start: no device");
    CHECK(h.log->take() == std::vector<std::string>{"start:a", "start:b", "stop:a"});
  }
}
