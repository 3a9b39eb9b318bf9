#pragma once
// `troupe console`: the client side of the job console (apps/console_server.h).

#include <string>

#include "apps/console_net.h"

namespace troupe::app {

struct ConsoleOptions {
  console::HostPort address;
  std::string token;
  std::string script;     // -c "ps; metrics": run these and exit
  bool json = false;      // print each reply's data as one JSON line
  int retries = 10;       // reconnection attempts after a lost connection (1 s apart)
  bool owns_job = false;  // started by `troupe run --console`: quit stops the job
};

// Runs a console session (interactive with readline, or the script); the exit code:
// 0, or 1 when a command of a script failed or the job could not be reached.
int run_console(const ConsoleOptions& opt);

// Where a job that serves a console writes its address and token (mode 0600), and how
// `troupe console` finds them when not told.
constexpr const char* kDefaultConsoleFile = "out/console.json";

}  // namespace troupe::app
