// `troupe bench ...`: benchmarks that print a human line and machine-readable JSON.

#include <cstdio>
#include <cstring>

#include "apps/commands.h"

namespace troupe::app {

int cmd_bench(int argc, char** argv) {
  std::fprintf(stderr, "troupe bench: unknown benchmark '%s'\n", argc > 1 ? argv[1] : "");
  return 2;
}

}  // namespace troupe::app
