#include "actors/supervisor.h"

#include <algorithm>
#include <set>

namespace troupe::actors {

using Clock = std::chrono::steady_clock;

Expected<RestartStrategy> parse_restart_strategy(std::string_view s) {
  if (s == "one_for_one") return RestartStrategy::one_for_one;
  if (s == "one_for_all") return RestartStrategy::one_for_all;
  if (s == "rest_for_one") return RestartStrategy::rest_for_one;
  return make_error("supervision strategy '" + std::string(s) + "' is not one_for_one, one_for_all or rest_for_one");
}

Expected<RestartType> parse_restart_type(std::string_view s) {
  if (s == "permanent") return RestartType::permanent;
  if (s == "transient") return RestartType::transient;
  if (s == "temporary") return RestartType::temporary;
  return make_error("restart type '" + std::string(s) + "' is not permanent, transient or temporary");
}

const char* to_string(RestartStrategy s) {
  switch (s) {
    case RestartStrategy::one_for_one:
      return "one_for_one";
    case RestartStrategy::one_for_all:
      return "one_for_all";
    case RestartStrategy::rest_for_one:
      return "rest_for_one";
  }
  return "?";
}

const char* to_string(RestartType t) {
  switch (t) {
    case RestartType::permanent:
      return "permanent";
    case RestartType::transient:
      return "transient";
    case RestartType::temporary:
      return "temporary";
  }
  return "?";
}

std::string describe_reason(const caf::error& reason) {
  if (!reason) return "normal";
  auto& ctx = reason.context();
  if (ctx.match_elements<std::string>()) return ctx.get_as<std::string>(0);
  return caf::to_string(reason);
}

Expected<void> validate_supervisor_spec(const SupervisorSpec& spec) {
  std::string at = "supervisor '" + spec.name + "': ";
  if (spec.name.empty()) return make_error("supervisor: name: must not be empty");
  if (spec.max_restarts < 0) return make_error(at + strformat("max_restarts: must be >= 0, got %d", spec.max_restarts));
  if (!(spec.within_seconds > 0))
    return make_error(at + strformat("within_seconds: must be positive, got %g", spec.within_seconds));
  std::set<std::string> names;
  for (size_t i = 0; i < spec.children.size(); i++) {
    auto& c = spec.children[i];
    if (c.name.empty()) return make_error(at + strformat("children[%zu].name: must not be empty", i));
    if (!names.insert(c.name).second)
      return make_error(at + "children[" + std::to_string(i) + "].name: '" + c.name + "' is used twice");
    if (!c.start) return make_error(at + "child " + c.name + ": start: no factory");
  }
  return {};
}

SupervisorState::~SupervisorState() {
  for (auto& c : children)
    if (c.alive && c.handle) caf::anon_send_exit(c.handle, caf::exit_reason::kill);
}

namespace {

using Self = supervisor_actor::stateful_pointer<SupervisorState>;
using Phase = SupervisorState::Phase;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool should_restart(RestartType type, const caf::error& reason) {
  switch (type) {
    case RestartType::permanent:
      return true;
    case RestartType::transient:
      return static_cast<bool>(reason);  // abnormal exits only
    case RestartType::temporary:
      return false;
  }
  return false;
}

// Spawns child i and monitors it; an error (with the factory's message) if it did not start.
Expected<void> start_child(Self self, size_t i) {
  auto& c = self->state.children[i];
  caf::actor handle;
  try {
    handle = c.spec.start(self->system());
  } catch (const std::exception& e) {
    return make_error(std::string("failed to start: ") + e.what());
  } catch (...) {
    return make_error("failed to start: unknown exception");
  }
  if (!handle) return make_error("failed to start: the factory returned no actor");
  c.handle = handle;
  c.alive = true;
  self->monitor(handle);
  return {};
}

void finish_restart(Self self);
void on_failure(Self self, size_t i, std::string reason, Clock::time_point seen);

// Stops the next child in the stop queue and waits for its down message; once the queue is
// empty, goes on with the restart or, when shutting down, exits.
void stop_next(Self self) {
  auto& st = self->state;
  if (st.stopping) return;
  while (!st.stop_queue.empty()) {
    size_t j = st.stop_queue.front();
    st.stop_queue.pop_front();
    auto& c = st.children[j];
    if (!c.alive) continue;  // died on its own meanwhile
    st.stopping = j;
    self->send_exit(c.handle, caf::exit_reason::user_shutdown);
    self->delayed_send(self, c.spec.shutdown_timeout, stop_timeout_atom::value, ++st.stop_seq);
    return;
  }
  if (st.phase == Phase::restarting)
    finish_restart(self);
  else if (st.phase == Phase::shutting_down)
    self->quit(st.exit_reason);
}

// Stops all children in reverse start order, then exits with `reason`.
void shut_down(Self self, caf::error reason) {
  auto& st = self->state;
  if (st.phase == Phase::shutting_down) return;
  st.phase = Phase::shutting_down;
  st.exit_reason = std::move(reason);
  st.pending.clear();
  st.stop_queue.clear();
  for (size_t j = st.children.size(); j-- > 0;)
    if (st.children[j].alive) st.stop_queue.push_back(j);
  stop_next(self);
}

// Child i failed and must be restarted: check the intensity, then stop what the strategy
// takes down with it.
void begin_restart(Self self, size_t i, std::string reason, Clock::time_point seen) {
  auto& st = self->state;
  auto now = Clock::now();
  auto window = std::chrono::duration<double>(st.spec.within_seconds);
  while (!st.restart_times.empty() && now - st.restart_times.front() > window) st.restart_times.pop_front();
  st.restart_times.push_back(now);
  if (int(st.restart_times.size()) > st.spec.max_restarts) {
    auto& child = st.children[i].spec.name;
    shut_down(self, caf::make_error(
                        caf::sec::runtime_error,
                        strformat("%s exceeded restart intensity %d in %g s: child %s failed: %s", st.spec.name.c_str(),
                                  st.spec.max_restarts, st.spec.within_seconds, child.c_str(), reason.c_str())));
    return;
  }
  // The children this restart covers, [first, last) in start order.
  size_t first = i, last = i + 1;
  if (st.spec.strategy == RestartStrategy::one_for_all) first = 0, last = st.children.size();
  if (st.spec.strategy == RestartStrategy::rest_for_one) last = st.children.size();
  st.phase = Phase::restarting;
  st.restart = {i, std::move(reason), seen, {}};
  for (size_t j = first; j < last; j++)
    if (st.children[j].spec.restart != RestartType::temporary || j == i) st.restart.to_start.push_back(j);
  st.stop_queue.clear();
  for (size_t j = last; j-- > first;)
    if (j != i && st.children[j].alive) st.stop_queue.push_back(j);  // temporary ones too, never restarted
  stop_next(self);
}

// Everything the restart covers is down: start it again in order, then tell the listener.
void finish_restart(Self self) {
  auto& st = self->state;
  RestartNotice notice;
  notice.supervisor = st.spec.name;
  notice.failed_child = st.children[st.restart.failed].spec.name;
  notice.reason = st.restart.reason;
  std::optional<std::pair<size_t, std::string>> failed_start;
  for (size_t j : st.restart.to_start) {
    if (auto ok = start_child(self, j); !ok) {
      failed_start.emplace(j, ok.error().message);
      break;  // the ones after it may depend on it: the next restart covers them
    }
    st.children[j].restarts++;
    notice.restarted.push_back({st.children[j].spec.name, st.children[j].handle});
  }
  notice.seconds = seconds_since(st.restart.seen);
  st.phase = Phase::running;
  if (!notice.restarted.empty()) {
    notice.sequence = int64_t(st.history.size()) + 1;
    st.history.push_back(notice);
    if (st.spec.on_restart) st.spec.on_restart(notice);
    if (st.spec.listener) caf::anon_send(st.spec.listener, restarted_atom::value, notice);
  }
  // A child that did not start failed again; it counts toward the intensity.
  if (failed_start) {
    on_failure(self, failed_start->first, std::move(failed_start->second), Clock::now());
    return;
  }
  // Failures that came in during this restart, unless it restarted them already.
  while (st.phase == Phase::running && !st.pending.empty()) {
    auto f = std::move(st.pending.front());
    st.pending.pop_front();
    if (!st.children[f.child].alive) begin_restart(self, f.child, std::move(f.reason), f.seen);
  }
}

void on_failure(Self self, size_t i, std::string reason, Clock::time_point seen) {
  auto& st = self->state;
  if (st.phase == Phase::shutting_down) return;
  if (st.phase == Phase::restarting) {
    // A child the restart in progress covers will be started by it; others wait their turn.
    auto& covered = st.restart.to_start;
    if (std::find(covered.begin(), covered.end(), i) == covered.end())
      st.pending.push_back({i, std::move(reason), seen});
    return;
  }
  begin_restart(self, i, std::move(reason), seen);
}

void on_down(Self self, const caf::down_msg& dm) {
  auto& st = self->state;
  auto it = std::find_if(st.children.begin(), st.children.end(),
                         [&](const SupervisorState::Child& c) { return c.alive && c.handle.address() == dm.source; });
  if (it == st.children.end()) return;  // a child we replaced already
  size_t i = size_t(it - st.children.begin());
  it->alive = false;
  it->handle = nullptr;
  if (st.stopping == i) {  // we stopped it: not a failure
    st.stopping.reset();
    stop_next(self);
    return;
  }
  if (!should_restart(it->spec.restart, dm.reason)) return;
  on_failure(self, i, describe_reason(dm.reason), Clock::now());
}

}  // namespace

supervisor_actor::behavior_type supervisor_fn(Self self, SupervisorSpec spec) {
  auto& st = self->state;
  st.spec = std::move(spec);
  self->set_down_handler([self](caf::down_msg& dm) { on_down(self, dm); });
  // Told to exit (by a parent supervisor, or by whoever owns the tree): stop the children
  // first, in reverse start order, then exit with the same reason.
  self->set_exit_handler([self](caf::exit_msg& em) {
    if (em.reason) shut_down(self, em.reason);
  });
  // Start the children in order. After a quit here CAF ignores the behaviour returned below.
  if (auto ok = validate_supervisor_spec(st.spec); !ok) {
    self->quit(caf::make_error(caf::sec::invalid_argument, ok.error().message));
  } else {
    for (auto& c : st.spec.children) st.children.push_back({c, nullptr, 0, false});
    for (size_t i = 0; i < st.children.size(); i++) {
      if (auto started = start_child(self, i); !started) {
        shut_down(self, caf::make_error(caf::sec::runtime_error, st.spec.name + ": child " + st.children[i].spec.name +
                                                                     " " + started.error().message));
        break;
      }
    }
  }
  return {
      [self](which_children_atom) -> ChildList {
        ChildList out;
        for (auto& c : self->state.children)
          out.children.push_back({c.spec.name, c.handle, c.spec.restart, c.restarts, c.alive});
        return out;
      },
      [self](kill_child_atom, const std::string& name) -> caf::result<bool> {
        auto& s = self->state;
        auto it = std::find_if(s.children.begin(), s.children.end(),
                               [&](const SupervisorState::Child& c) { return c.spec.name == name; });
        if (it == s.children.end())
          return caf::make_error(caf::sec::invalid_argument, s.spec.name + ": no child named '" + name + "'");
        if (!it->alive)
          return caf::make_error(caf::sec::invalid_argument, s.spec.name + ": child " + name + " is down");
        self->send_exit(it->handle, caf::exit_reason::kill);
        return true;
      },
      [self](restart_history_atom) -> RestartHistory { return {self->state.history}; },
      [self](stop_timeout_atom, uint64_t seq) {
        auto& s = self->state;
        if (s.stopping && seq == s.stop_seq) self->send_exit(s.children[*s.stopping].handle, caf::exit_reason::kill);
      },
  };
}

supervisor_actor spawn_supervisor(caf::actor_system& sys, SupervisorSpec spec) {
  return sys.spawn(supervisor_fn, std::move(spec));
}

ChildSpec supervisor_child(SupervisorSpec spec, RestartType restart) {
  ChildSpec c;
  c.name = spec.name;
  c.restart = restart;
  c.shutdown_timeout = std::chrono::seconds(1);
  for (auto& child : spec.children) c.shutdown_timeout += child.shutdown_timeout;
  c.start = [spec = std::move(spec)](caf::actor_system& sys) {
    return caf::actor_cast<caf::actor>(spawn_supervisor(sys, spec));
  };
  return c;
}

}  // namespace troupe::actors
