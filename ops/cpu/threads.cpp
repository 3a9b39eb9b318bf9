// Thread count of our OpenMP kernels. OpenBLAS stays single-threaded: linear.cpp runs
// one serial sgemm per block of a fixed grid on our OpenMP threads, because OpenBLAS's
// own threading changes the bits of its results with the thread count.

#include <cblas.h>
#include <omp.h>

#include "ops/ops.h"

namespace troupe::ops {

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  openblas_set_num_threads(1);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace troupe::ops
