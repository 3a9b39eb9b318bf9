#!/usr/bin/env bash
# Sets up (scripts/setup.sh), runs a bounded fuzz run of the GGUF reader, the core/ops/
# model tests under ASan + UBSan, then every test with ctest (its summary is the last
# thing printed). GPU tests report themselves skipped where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
# ctest -j2 runs two test programs at once on a 2-core machine, each with OpenMP threads:
# libgomp's default spin-wait at barriers then makes a program whose partner thread is
# descheduled 25-50x slower. A short spin keeps quiet runs fast and loaded ones sane.
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-10000}
bash scripts/setup.sh
bash scripts/fuzz.sh "${TROUPE_FUZZ_SECONDS:-60}"
bash scripts/sanitize.sh
BUILD=${TROUPE_BUILD_DIR:-build}
ctest --test-dir "$BUILD" --output-on-failure -j2 --timeout 900
