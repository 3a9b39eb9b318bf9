#pragma once
// Subcommands of the `troupe` CLI, one file each.

#include <string>

namespace troupe::app {

int cmd_version(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_data(int argc, char** argv);
int cmd_data_distill(int argc, char** argv);  // apps/data_distill.cpp: `troupe data distill`
int cmd_run(int argc, char** argv);      // apps/run.cpp: run a job file in this process
int cmd_console(int argc, char** argv);  // apps/console.cpp: attach to a running job
int cmd_generate(int argc, char** argv); // apps/generate.cpp: text generation with the KV-cache engine
int cmd_serve(int argc, char** argv);    // apps/serve.cpp: OpenAI-compatible HTTP server, continuous batching
#ifdef TROUPE_HAVE_CUDA
std::string cuda_backend_summary();
#endif

}  // namespace troupe::app
