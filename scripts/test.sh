#!/usr/bin/env bash
# Sets up (scripts/setup.sh), runs a bounded fuzz run of the GGUF reader, the core/ops/
# model tests under ASan + UBSan, then every test with ctest (its summary is the last
# thing printed). GPU tests report themselves skipped where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fuzz.sh "${TROUPE_FUZZ_SECONDS:-60}"
bash scripts/sanitize.sh
BUILD=${TROUPE_BUILD_DIR:-build}
ctest --test-dir "$BUILD" --output-on-failure -j2 --timeout 900
