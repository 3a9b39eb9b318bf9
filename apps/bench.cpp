// `troupe bench ...`: benchmarks that print a human line and machine-readable JSON.

#include <cstdio>
#include <cstring>

#include "apps/commands.h"

namespace troupe::app {

int cmd_bench_train(int argc, char** argv);     // apps/bench_train.cpp
int cmd_bench_pipeline(int argc, char** argv);  // apps/bench_pipeline.cpp
int cmd_bench_actors(int argc, char** argv);    // apps/bench_actors.cpp
int cmd_bench_checkpoint(int argc, char** argv);  // apps/bench_checkpoint.cpp
int cmd_bench_decode(int argc, char** argv);      // apps/bench_decode.cpp

int cmd_bench(int argc, char** argv) {
  if (argc > 1 && !std::strcmp(argv[1], "train")) return cmd_bench_train(argc - 1, argv + 1);
  if (argc > 1 && !std::strcmp(argv[1], "pipeline")) return cmd_bench_pipeline(argc - 1, argv + 1);
  if (argc > 1 && !std::strcmp(argv[1], "actors")) return cmd_bench_actors(argc - 1, argv + 1);
  if (argc > 1 && !std::strcmp(argv[1], "checkpoint")) return cmd_bench_checkpoint(argc - 1, argv + 1);
  if (argc > 1 && !std::strcmp(argv[1], "decode")) return cmd_bench_decode(argc - 1, argv + 1);
  std::fprintf(stderr, "troupe bench: unknown benchmark '%s'\n", argc > 1 ? argv[1] : "");
  return 2;
}

}  // namespace troupe::app
