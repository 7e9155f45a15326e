#!/usr/bin/env bash
# Builds the bundled byte-level corpus: every fortune of Debian's `fortunes` package (BSD-licensed
# quotations, ~15,000 documents, ~2.6 MB) as one document each, tokenized one token per byte into a
# Megatron shard data_cache/corpus/bytes_text_document.{bin,idx}. Nothing generated is committed.
# Usage: scripts/prepare_corpus.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
OUT=data_cache/corpus
if [ -f "$OUT/bytes_text_document.idx" ] && [ -f "$OUT/bytes_text_document.bin" ]; then
  echo "corpus: $OUT/bytes_text_document is already there"
  exit 0
fi
if ! dpkg -s fortunes >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends fortunes
fi
mkdir -p "$OUT"
mapfile -t files < <(find /usr/share/games/fortunes -type f ! -name '*.dat' ! -name '*.u8' | sort)
"$BUILD_DIR/unipool" tokenize --tokenizer bytes --doc-separator % --out "$OUT/bytes_text_document" "${files[@]}"
cat > "$OUT/LICENSES.txt" <<'TXT'
bytes_text_document.{bin,idx}: the fortune cookie files of the Debian package `fortunes`
(/usr/share/games/fortunes, from BSD fortune-mod). License: BSD (see /usr/share/doc/fortunes/copyright);
individual quotations belong to their authors.
TXT
