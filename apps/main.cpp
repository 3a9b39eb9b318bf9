// troupe: the command-line entry point. Subcommands live in their own files.

#include <cstdio>
#include <cstring>
#include <exception>

#include "apps/commands.h"

static void usage() {
  std::fprintf(stderr,
               "usage: troupe <command> [args]\n"
               "commands:\n"
               "  version            versions of Troupe and the libraries it links\n"
               "  run JOB.toml       run a training job in this process (see troupe run --help)\n"
               "  console [ADDR]     attach to a running job (troupe run --listen/--console; see --help)\n"
               "  generate ...       text from a GGUF model (SmolLM2), tokens as they come (see --help)\n"
               "  serve --model GGUF OpenAI-compatible HTTP server with continuous batching (see --help)\n"
               "  data ...           prepare the Austen corpus and token files (see troupe data --help)\n"
               "  bench train        training throughput vs the sgemm peak and PyTorch (--json)\n"
               "  bench pipeline     measured pipeline bubble vs theory (--json)\n"
               "  bench actors       actor round trip: Troupe vs raw CAF vs Ray (--json)\n"
               "  bench checkpoint   step stall of asynchronous checkpoints (--json)\n"
               "  bench decode       SmolLM2 decode tokens/s vs transformers (--json)\n");
}

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  try {
    if (!std::strcmp(argv[1], "version")) return troupe::app::cmd_version(argc - 1, argv + 1);
    if (!std::strcmp(argv[1], "run")) return troupe::app::cmd_run(argc - 1, argv + 1);
    if (!std::strcmp(argv[1], "console")) return troupe::app::cmd_console(argc - 1, argv + 1);
    if (!std::strcmp(argv[1], "generate")) return troupe::app::cmd_generate(argc - 1, argv + 1);
    if (!std::strcmp(argv[1], "serve")) return troupe::app::cmd_serve(argc - 1, argv + 1);
    if (!std::strcmp(argv[1], "data")) return troupe::app::cmd_data(argc - 1, argv + 1);
    if (!std::strcmp(argv[1], "bench")) return troupe::app::cmd_bench(argc - 1, argv + 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "troupe: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "troupe: unknown command '%s'\n", argv[1]);
  usage();
  return 2;
}
