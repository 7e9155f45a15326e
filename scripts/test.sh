#!/usr/bin/env bash
# The README's second command (and CI's): install, build, run every test under ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
cd build
ctest --output-on-failure -j 2 --timeout 900
