#!/usr/bin/env bash
# Packs the build dependencies a bare GPU machine may lack (it has CUDA, CMake and ninja but no
# Debian -dev packages, and cannot download) into .device/deps, a CMake prefix that travels with the
# working tree (the folder is git-ignored; name it in the device tool's `carry`).
# Run on the development machine after scripts/setup.sh; scripts/gpu_check.sh uses it when present.
set -euo pipefail
cd "$(dirname "$0")/.."
deps=.device/deps
rm -rf "$deps"
mkdir -p "$deps/include" "$deps/lib/cmake" "$deps/share/cmake"
cp -r /usr/include/nlohmann /usr/include/CLI /usr/include/utf8proc.h "$deps/include/"
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$deps/share/cmake/"
# utf8proc as a static library: nothing to find at run time on the GPU machine.
cp /usr/lib/x86_64-linux-gnu/libutf8proc.a "$deps/lib/"
# Catch2 2 (single header + CMake package) for when the machine has no Catch2 3.
cp -r /usr/include/catch2 "$deps/include/"
cp -r /usr/lib/cmake/Catch2 "$deps/lib/cmake/"
cp /usr/lib/libCatch2WithMain.a "$deps/lib/" 2>/dev/null || true
du -sh "$deps"
