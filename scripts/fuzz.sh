#!/usr/bin/env bash
# Builds the libFuzzer targets with clang, ASan and UBSan in build-fuzz/ and runs gguf_fuzz over
# the seed corpus (fuzz/corpus/gguf) for a bounded time. Exits non-zero on any crash, sanitizer
# report, leak, timeout or out-of-memory; the input that did it is left in build-fuzz/artifacts/.
#
# Usage: scripts/fuzz.sh [seconds]     (default 60)
#        JOBS=4 scripts/fuzz.sh 600    (build parallelism; default 2)
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi

mkdir -p "$build"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTROUPE_FUZZ=ON -DTROUPE_CUDA=OFF -DBUILD_TESTING=OFF "${launcher[@]}" >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; exit 1; }
ninja -C "$build" -j "${JOBS:-2}" gguf_fuzz

# New inputs the fuzzer finds go to build-fuzz/corpus, so the committed seeds stay as they are.
mkdir -p "$build/corpus" "$build/artifacts"
echo "fuzzing gguf_fuzz for ${seconds}s"
"$build/bin/gguf_fuzz" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  -dict="$root/fuzz/gguf.dict" -artifact_prefix="$build/artifacts/" -print_final_stats=1 \
  "$build/corpus" "$root/fuzz/corpus/gguf"
echo "gguf_fuzz: no crash in ${seconds}s"
