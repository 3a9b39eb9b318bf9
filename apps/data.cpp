// `troupe data ...`: placeholder until the data commands land.
#include <cstdio>

#include "apps/commands.h"

namespace troupe::app {
int cmd_data(int, char**) {
  std::fprintf(stderr, "troupe data: not built yet\n");
  return 2;
}
}  // namespace troupe::app
