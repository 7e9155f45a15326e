#!/usr/bin/env bash
# Side-by-side GPT-2 tokenizer speed, one thread each: npm tiktoken (encode_ordinary, WASM) and
# unipool's C++ tokenizer (`unipool bench-tokenizer`), on two ~20 MB texts built here:
#   english.txt  /usr/share/common-licenses/* concatenated, repeated
#   mixed.txt    the non-ASCII strings of tests/fixtures/tokenizer_fixture.json (CJK, Arabic, Hindi,
#                Cyrillic, emoji, ...; ~1.9 KB) + code (the fixture's C/Python cases, 2 KB of stdio.h)
#                + 2 KB of GPL-3 prose, repeated (about a third of the bytes are non-ASCII)
# Usage: scripts/bench_tokenizer.sh [MB]      (default 20)
# Env:   UNIPOOL_BIN (default build/unipool), TIKTOKEN_PREFIX (where tiktoken@1.0.22 is or gets
#        installed; default data_cache/npm-tiktoken), THREADS (unipool threads, default 1)
set -euo pipefail
cd "$(dirname "$0")/.."

MB="${1:-20}"
BIN="${UNIPOOL_BIN:-build/unipool}"
TIKTOKEN_PREFIX="${TIKTOKEN_PREFIX:-data_cache/npm-tiktoken}"
THREADS="${THREADS:-1}"

scripts/fetch_tokenizer.sh
if [ ! -f "$TIKTOKEN_PREFIX/node_modules/tiktoken/package.json" ]; then
  echo "bench_tokenizer: npm install tiktoken@1.0.22 into $TIKTOKEN_PREFIX"
  mkdir -p "$TIKTOKEN_PREFIX"
  npm install --prefix "$TIKTOKEN_PREFIX" --no-save --no-audit --no-fund tiktoken@1.0.22 >&2
fi

WORK="$(mktemp -d /tmp/unipool_bench_tokenizer.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# repeat SRC DEST: SRC concatenated with itself until DEST holds at least $MB MB.
repeat() {
  local want=$((MB * 1000000)) size
  size=$(stat -c %s "$1")
  [ "$size" -gt 0 ] || { echo "bench_tokenizer: empty sample $1" >&2; exit 1; }
  : >"$2"
  for _ in $(seq 1 $(((want + size - 1) / size))); do cat "$1" >>"$2"; done
}

find /usr/share/common-licenses/ -maxdepth 1 -type f -print0 | sort -z | xargs -0 cat >"$WORK/english.block"
repeat "$WORK/english.block" "$WORK/english.txt"

node -e '
  const fs = require("fs");
  const cases = JSON.parse(fs.readFileSync("tests/fixtures/tokenizer_fixture.json", "utf8"));
  const nonAscii = cases.filter((s) => /[^\x00-\x7f]/.test(s));
  const code = cases.filter((s) => /#include|def /.test(s));
  process.stdout.write(nonAscii.join("\n\n") + "\n\n" + code.join("\n") + "\n");
' >"$WORK/mixed.block"
if [ -f /usr/include/stdio.h ]; then head -c 2000 /usr/include/stdio.h >>"$WORK/mixed.block"; fi
head -c 2000 /usr/share/common-licenses/GPL-3 >>"$WORK/mixed.block"
repeat "$WORK/mixed.block" "$WORK/mixed.txt"

echo "== tiktoken (node, one thread)"
TIKTOKEN_PREFIX="$TIKTOKEN_PREFIX" node tools/golden/bench_tiktoken.mjs "$WORK/english.txt" "$WORK/mixed.txt"
echo "== unipool ($BIN bench-tokenizer, $THREADS thread(s))"
if [ ! -x "$BIN" ]; then
  echo "bench_tokenizer: $BIN not found; build it (scripts/setup.sh) or set UNIPOOL_BIN" >&2
  exit 1
fi
"$BIN" bench-tokenizer --threads "$THREADS" "$WORK/english.txt" "$WORK/mixed.txt"
