#!/usr/bin/env bash
# The README's first command: install, build, prepare the bundled corpus, train the `tiny` preset
# (a UniPool model; on the GPU when one is present and the CUDA backend supports it, else the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build unipool
scripts/prepare_corpus.sh build
build/unipool train --config tiny "$@"
