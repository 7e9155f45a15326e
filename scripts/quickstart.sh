#!/usr/bin/env bash
# The README's first command: install what is missing, build, fetch the GPT-2 vocabulary, build the
# bundled Debian corpus (a GPT-2 shard and a byte shard), train the `tiny` preset (a byte-level
# UniPool model; CPU unless a GPU backend is available), then print a few samples from the model it
# trained. The GPT-2 model of the same shape: build/unipool train --config tiny-gpt2.
# Extra arguments go to `unipool train` (e.g. --set train.steps=500, or --resume). Run again, it
# trains afresh: the earlier run in runs/tiny moves aside into runs/tiny/replaced-<UTC time>/
# (`unipool train --overwrite`; nothing is deleted).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build unipool
scripts/fetch_tokenizer.sh
scripts/prepare_corpus.sh --build-dir build
overwrite=(--overwrite)
for arg in "$@"; do [ "$arg" = --resume ] && overwrite=(); done
build/unipool train --config tiny "${overwrite[@]}" "$@"
echo
echo "== samples from runs/tiny (unipool sample --checkpoint runs/tiny --prompt ...)"
for prompt in "The meaning of life is" "And God said" "In the beginning"; do
  build/unipool sample --checkpoint runs/tiny --prompt "$prompt" --tokens 200 --temperature 0.7 --top-k 50 --seed 1234
  echo
done
