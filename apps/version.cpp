// `troupe version`: prints the version of every library Troupe links, proving each is
// found and linked (configure fails earlier, naming the Debian package, if one is not).

#include <caf/config.hpp>
#include <capnp/common.h>
#include <cblas.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <readline/readline.h>
#include <spdlog/version.h>
#include <toml++/toml.h>
#include <ucp/api/ucp.h>
#include <zlib.h>

#include <cstdio>

#include "apps/commands.h"

namespace troupe::app {

int cmd_version(int, char**) {
  std::printf("troupe 0.1.0\n");
  std::printf("  CAF        %d.%d.%d\n", CAF_VERSION / 10000, CAF_VERSION / 100 % 100, CAF_VERSION % 100);
  std::printf("  UCX        %s\n", ucp_get_version_string());
  std::printf("  capnp      %d.%d.%d\n", CAPNP_VERSION_MAJOR, CAPNP_VERSION_MINOR, CAPNP_VERSION_MICRO);
  std::printf("  OpenBLAS   %s\n", openblas_get_config());
  std::printf("  spdlog     %d.%d.%d\n", SPDLOG_VER_MAJOR, SPDLOG_VER_MINOR, SPDLOG_VER_PATCH);
  std::printf("  toml++     %d.%d.%d\n", TOML_LIB_MAJOR, TOML_LIB_MINOR, TOML_LIB_PATCH);
  std::printf("  httplib    %s\n", CPPHTTPLIB_VERSION);
  std::printf("  readline   %s\n", rl_library_version ? rl_library_version : "?");
  std::printf("  json       %d.%d.%d\n", NLOHMANN_JSON_VERSION_MAJOR, NLOHMANN_JSON_VERSION_MINOR,
              NLOHMANN_JSON_VERSION_PATCH);
  std::printf("  zlib       %s\n", zlibVersion());
#ifdef TROUPE_HAVE_CUDA
  std::printf("  CUDA       built in (%s)\n", cuda_backend_summary().c_str());
#else
  std::printf("  CUDA       not built\n");
#endif
  return 0;
}

}  // namespace troupe::app
