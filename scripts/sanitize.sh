#!/usr/bin/env bash
# Builds the core, ops, model, actors, transport and apps (console) tests with AddressSanitizer + UndefinedBehaviorSanitizer
# (any report is fatal) in build-asan/ and runs them. Usage: scripts/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-asan
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
if [ ! -f "$build/build.ninja" ]; then
  mkdir -p "$build"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTROUPE_SANITIZE=address,undefined \
    -DTROUPE_CUDA=OFF "${launcher[@]}" >"$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
fi
ninja -C "$build" -j"${JOBS:-2}" troupe_core_tests troupe_ops_tests troupe_model_tests troupe_actors_tests troupe_transport_tests \
  troupe_apps_tests
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
for t in core ops model actors transport apps; do
  echo "sanitized: troupe_${t}_tests"
  "$build/bin/troupe_${t}_tests" | tail -2
done
