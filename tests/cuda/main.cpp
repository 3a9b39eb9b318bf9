// Entry point of troupe_cuda_tests. Where no CUDA device is usable, a run that would
// execute tests prints "SKIPPED: no CUDA device (<reason>)" and exits 77, which ctest
// (SKIP_RETURN_CODE 77) reports as skipped: a machine without a GPU never reports these
// tests as passed. Listing tests, tags or help works without a device, so that ctest can
// discover the tests at build time anywhere. TROUPE_REQUIRE_GPU=1 turns the skip into a
// failure (exit 1), for machines that are meant to have a GPU.

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ops/cuda/cuda_backend.h"

int main(int argc, char** argv) {
  Catch::Session session;
  const int rc = session.applyCommandLine(argc, argv);
  if (rc != 0) return rc;
  const Catch::ConfigData& cfg = session.configData();
  const bool only_lists =
      cfg.listTests || cfg.listTestNamesOnly || cfg.listTags || cfg.listReporters || cfg.showHelp || cfg.libIdentify;
  if (!only_lists) {
    std::string reason;
    if (troupe::cuda::device_count(&reason) == 0) {
      std::printf("SKIPPED: no CUDA device (%s)\n", reason.c_str());
      const char* require = std::getenv("TROUPE_REQUIRE_GPU");
      return require && std::strcmp(require, "1") == 0 ? 1 : 77;
    }
    troupe::cuda::init();
    std::fprintf(stderr, "troupe_cuda_tests: %s\n", troupe::cuda::device_summary().c_str());
  }
  return session.run();
}
