// `troupe version`'s line about the CUDA backend (declared in apps/commands.h when the
// backend is built).

#ifdef TROUPE_HAVE_CUDA

#include "apps/commands.h"
#include "ops/cuda/cuda_backend.h"

namespace troupe::app {

std::string cuda_backend_summary() {
  return cuda::device_summary();
}

}  // namespace troupe::app

#endif  // TROUPE_HAVE_CUDA
