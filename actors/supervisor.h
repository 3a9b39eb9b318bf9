#pragma once
// Supervisor: an OTP-style supervisor as a typed CAF actor. CAF gives monitors, links and
// exit messages but no restart policy; this actor adds one (DESIGN.md, "Supervision and
// recovery").
//
// It starts its children in order and monitors them. When a child exits and its restart
// type asks for a restart, the strategy decides which children go down with it:
//   one_for_one   only the failed child is restarted;
//   one_for_all   the other children are stopped (reverse start order), then all are
//                 restarted in start order (gang-coupled groups: a pipeline, a TP group);
//   rest_for_one  the children started after the failed one are stopped (reverse order),
//                 then the failed one and those are restarted in order.
// Stopping is sequential: the supervisor sends exit_reason::user_shutdown to one child and
// waits for its down message (exit_reason::kill after the child's shutdown_timeout)
// before stopping the next, so a restarted child never overlaps its predecessor. Down
// messages of children it stopped itself are not failures.
//
// Restart intensity: more than max_restarts restarts within within_seconds make the
// supervisor stop all children and exit with an error that names it and the child, e.g.
// "pipeline exceeded restart intensity 3 in 10 s: child stage1 failed: ...". A parent
// supervisor sees that exit like any child failure, so failures escalate up the tree.
//
// After each restart the supervisor tells its listener (an actor, a callback, or both)
// which children it restarted, with their new handles and the reason, so a coordinator
// can restore their state from a snapshot before driving them again. Each restart's wall
// time (failure seen -> children respawned) is recorded for recovery reports.

#include <caf/all.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace troupe::actors {

using which_children_atom = caf::atom_constant<caf::atom("children")>;
using kill_child_atom = caf::atom_constant<caf::atom("killchild")>;
using restart_history_atom = caf::atom_constant<caf::atom("restarts")>;
using restarted_atom = caf::atom_constant<caf::atom("restarted")>;     // to the listener
using stop_timeout_atom = caf::atom_constant<caf::atom("stoptimeo")>;  // internal

enum class RestartStrategy { one_for_one, one_for_all, rest_for_one };
// When a child that exited is restarted. An exit is normal only with exit_reason::normal
// (a StageActor that fails quits with user_shutdown, which is abnormal).
enum class RestartType {
  permanent,  // always
  transient,  // only after an abnormal exit
  temporary,  // never, not even when a sibling's failure stops it
};

// "one_for_one" | "one_for_all" | "rest_for_one"; the error names the bad value.
Expected<RestartStrategy> parse_restart_strategy(std::string_view s);
// "permanent" | "transient" | "temporary".
Expected<RestartType> parse_restart_type(std::string_view s);
const char* to_string(RestartStrategy s);
const char* to_string(RestartType t);

// An exit reason for people: the text of an error made from a string (as StageActor and
// the supervisor make them), "normal" for a normal exit, CAF's rendering otherwise.
std::string describe_reason(const caf::error& reason);

struct ChildSpec {
  std::string name;  // unique among the supervisor's children
  // Spawns the child; called on the supervisor's thread at each (re)start. Typed handles
  // convert with caf::actor_cast<caf::actor>. May throw or return an invalid handle: the
  // start then fails (at spawn the supervisor exits; at a restart it counts as a failure).
  std::function<caf::actor(caf::actor_system&)> start;
  RestartType restart = RestartType::permanent;
  // How long a child may take to exit after user_shutdown before it is killed.
  std::chrono::milliseconds shutdown_timeout{5000};
};

struct RestartedChild {
  std::string name;
  caf::actor handle;  // the new one
};

// One restart: sent to the listener as (restarted_atom, RestartNotice) and kept in the
// supervisor's history.
struct RestartNotice {
  std::string supervisor;
  std::string failed_child;
  std::string reason;                     // describe_reason of the failed child's exit
  std::vector<RestartedChild> restarted;  // in start order
  double seconds = 0;                     // wall time from the failure seen to the last respawn
  int64_t sequence = 0;                   // 1, 2, ... per supervisor
};

struct SupervisorSpec {
  std::string name;  // names the supervisor in notices and in its exit reason
  RestartStrategy strategy = RestartStrategy::one_for_one;
  int max_restarts = 3;             // at most this many restarts ...
  double within_seconds = 60;       // ... within this window, or the supervisor gives up
  std::vector<ChildSpec> children;  // started in this order
  // Optional, told after each restart: the listener gets (restarted_atom, RestartNotice);
  // on_restart runs inside the supervisor, before the listener is told.
  caf::actor listener;
  std::function<void(const RestartNotice&)> on_restart;
};

// The spec's fields make sense (names unique and non-empty, factories set, intensity
// positive); the error names the field. The supervisor checks this itself at spawn.
Expected<void> validate_supervisor_spec(const SupervisorSpec& spec);

struct ChildInfo {
  std::string name;
  caf::actor handle;  // invalid while the child is down
  RestartType restart = RestartType::permanent;
  int restarts = 0;  // how often this child was restarted
  bool alive = false;
};
struct ChildList {
  std::vector<ChildInfo> children;  // in start order
};
struct RestartHistory {
  std::vector<RestartNotice> restarts;  // oldest first
};

}  // namespace troupe::actors

// Local-only messages (they carry actor handles and functions): never serialized.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::RestartNotice)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::ChildList)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::RestartHistory)

namespace troupe::actors {

// (which_children) -> the children, (kill_child, name) -> true once the child was sent
// exit_reason::kill (an error if there is no such child or it is down; the kill counts as
// a failure and is restarted like any other), (restart_history) -> all restarts so far.
// stop_timeout is the supervisor's own timer.
using supervisor_actor = caf::typed_actor<
    caf::replies_to<which_children_atom>::with<ChildList>, caf::replies_to<kill_child_atom, std::string>::with<bool>,
    caf::replies_to<restart_history_atom>::with<RestartHistory>, caf::reacts_to<stop_timeout_atom, uint64_t>>;

struct SupervisorState {
  enum class Phase { running, restarting, shutting_down };
  struct Child {
    ChildSpec spec;
    caf::actor handle;
    int restarts = 0;
    bool alive = false;
  };
  // The restart in progress: stop what the strategy takes down, then start to_start.
  struct Restart {
    size_t failed = 0;
    std::string reason;
    std::chrono::steady_clock::time_point seen;
    std::vector<size_t> to_start;  // child indices in start order
  };
  // A failure that arrived while another restart was in progress.
  struct Failure {
    size_t child = 0;
    std::string reason;
    std::chrono::steady_clock::time_point seen;
  };

  SupervisorSpec spec;
  std::vector<Child> children;
  Phase phase = Phase::running;
  Restart restart;
  std::deque<Failure> pending;
  std::deque<size_t> stop_queue;   // children to stop, front first
  std::optional<size_t> stopping;  // the child sent user_shutdown, awaiting its down message
  uint64_t stop_seq = 0;           // tags the stop timer, so a stale one does nothing
  std::deque<std::chrono::steady_clock::time_point> restart_times;  // within the intensity window
  std::vector<RestartNotice> history;
  caf::error exit_reason;  // set when shutting down

  // The supervisor was killed or dropped while children still ran: kill them, so no
  // child outlives its supervisor.
  ~SupervisorState();
  static inline const char* name = "supervisor";
};

supervisor_actor::behavior_type supervisor_fn(supervisor_actor::stateful_pointer<SupervisorState> self,
                                              SupervisorSpec spec);

supervisor_actor spawn_supervisor(caf::actor_system& sys, SupervisorSpec spec);

// A supervisor as the child of another (a supervision tree). Its shutdown timeout covers
// stopping all of its own children one by one, plus a second. Like any CAF actor it runs
// its start (its children's factories) when first scheduled, so its children start
// concurrently with the parent's later children; a message to it is handled after that.
ChildSpec supervisor_child(SupervisorSpec spec, RestartType restart = RestartType::permanent);

}  // namespace troupe::actors
