#!/usr/bin/env bash
# Tokenizes the Pile's raw shards into the layout the paper presets train on: for each
# SHARDS_DIR/NN.jsonl.zst, OUT/NN_text_document.{bin,idx}, a Megatron indexed dataset of GPT-2
# tokens, one sequence per document with the end-of-document id 50256 after it, the documents in
# the shard's own order (the Pile's shards are shuffled already, and Megatron-LM's
# preprocess_data.py does not shuffle either), no split inside a shard (the loader's data.split
# cuts each shard into train/valid/test document ranges). Each shard is streamed (`unipool tokenize
# --no-shuffle`: no temporary files, memory a fixed window) and checked with `unipool inspect`.
# Several shards can be tokenized at once (--jobs): reading a shard is one thread's work, so on a
# many-core node a few shards side by side use the cores better than one shard on all of them.
# Nothing is downloaded: docs/data.md §The Pile says where the shards are and under what terms.
#
# Usage: scripts/prepare_pile.sh [--build-dir DIR] [--jobs J] [--threads N] SHARDS_DIR OUT
#   SHARDS_DIR       the folder holding 00.jsonl.zst ... 29.jsonl.zst (every NN.jsonl.zst in it is a
#                    shard; val.jsonl.zst and test.jsonl.zst are not)
#   OUT              the output folder (created); the paper presets read data_cache/pile_gpt2
#   --build-dir DIR  where the unipool binary is (default: build under the repository root); the
#                    environment variable UNIPOOL=/path/to/unipool overrides it
#   --jobs J         shards tokenized at the same time (default 1)
#   --threads N      encoding threads of each (default: the cores divided by J)
# Resumable shard by shard: a shard is finished when OUT/NN_text_document.done records the sizes its
# .bin, .idx and source still have; it is written only after `unipool inspect` validated the shard.
# A finished shard is skipped; any other one is redone from scratch (its outputs and the temporary
# files of an interrupted run are removed first). Stop it at any time and run it again.
# At the end it prints the data.train value that points the paper presets at OUT.
set -euo pipefail
export LC_ALL=C  # byte-wise sorting
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

BUILD_DIR="$ROOT/build"
THREADS=0
JOBS=1
ARGS=()
usage() { sed -n '/^# Usage:/,/^# At the end/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR="${2:?--build-dir needs a folder}"; shift ;;
    --build-dir=*) BUILD_DIR="${1#*=}" ;;
    --threads) THREADS="${2:?--threads needs a number}"; shift ;;
    --threads=*) THREADS="${1#*=}" ;;
    --jobs) JOBS="${2:?--jobs needs a number}"; shift ;;
    --jobs=*) JOBS="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "prepare_pile: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
if [ "${#ARGS[@]}" -ne 2 ]; then
  usage >&2
  exit 2
fi
SHARDS_DIR="${ARGS[0]}"
OUT="${ARGS[1]}"
UNIPOOL="${UNIPOOL:-$BUILD_DIR/unipool}"
[ -x "$UNIPOOL" ] || { echo "prepare_pile: no unipool binary at $UNIPOOL (build it first)" >&2; exit 1; }
[ -d "$SHARDS_DIR" ] || { echo "prepare_pile: $SHARDS_DIR is not a folder" >&2; exit 1; }
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "prepare_pile: --jobs must be a positive number" >&2; exit 2; }
if [ "$THREADS" = 0 ]; then
  THREADS=$(( $(nproc) / JOBS ))
  [ "$THREADS" -ge 1 ] || THREADS=1
fi

shards=()
for f in "$SHARDS_DIR"/*.jsonl.zst; do
  [ -e "$f" ] || continue
  nn="$(basename "$f" .jsonl.zst)"
  [[ "$nn" =~ ^[0-9]+$ ]] && shards+=("$f")
done
if [ "${#shards[@]}" -eq 0 ]; then
  echo "prepare_pile: no NN.jsonl.zst shards in $SHARDS_DIR (docs/data.md §The Pile)" >&2
  exit 1
fi
mkdir -p "$OUT"

# The sizes that make a shard finished: its .bin, its .idx and its source.
sizes() { stat -c %s "$1.bin" "$1.idx" "$2" | tr '\n' ' '; }

# Tokenizes one shard from scratch, checks it, marks it finished.
prepare_shard() {
  local shard="$1" prefix="$2" nn start
  nn="$(basename "$shard" .jsonl.zst)"
  echo "prepare_pile: $nn: tokenizing $shard"
  rm -f "$prefix.done" "$prefix.done.tmp" "$prefix.bin" "$prefix.idx" "$prefix".*.tmp.*
  start=$(date +%s)
  # (pipefail: a failing unipool fails the pipeline)
  "$UNIPOOL" tokenize --tokenizer gpt2 --format megatron --no-shuffle --threads "$THREADS" \
    --out "$prefix" "$shard" 2>&1 | sed "s/^/[$nn] /" ||
    { echo "prepare_pile: $nn: tokenize failed" >&2; return 1; }
  "$UNIPOOL" inspect "$prefix" --vocab-size 50257 -n 0 2>&1 | sed "s/^/[$nn] /" ||
    { echo "prepare_pile: $nn: inspect failed" >&2; return 1; }
  sizes "$prefix" "$shard" > "$prefix.done.tmp"
  mv "$prefix.done.tmp" "$prefix.done"
  echo "prepare_pile: $nn: done in $(( $(date +%s) - start )) s"
}

prefixes=()
running=()  # pids of the shards being tokenized, oldest first
failed=0
for shard in "${shards[@]}"; do
  nn="$(basename "$shard" .jsonl.zst)"
  prefix="$OUT/${nn}_text_document"
  prefixes+=("$prefix")
  if [ -f "$prefix.done" ] && [ -f "$prefix.bin" ] && [ -f "$prefix.idx" ] &&
     [ "$(cat "$prefix.done")" = "$(sizes "$prefix" "$shard")" ]; then
    echo "prepare_pile: $nn: finished already, skipped"
    continue
  fi
  if [ "${#running[@]}" -ge "$JOBS" ]; then
    wait "${running[0]}" || failed=1
    running=("${running[@]:1}")
  fi
  [ "$failed" -eq 0 ] || break
  prepare_shard "$shard" "$prefix" &
  running+=($!)
done
for pid in "${running[@]}"; do wait "$pid" || failed=1; done
if [ "$failed" -ne 0 ]; then
  echo "prepare_pile: a shard failed (above); run the script again to resume" >&2
  exit 1
fi

train=""
for prefix in "${prefixes[@]}"; do
  train="${train:+$train,}[1.0,\"$prefix\"]"
done
echo "prepare_pile: ${#prefixes[@]} shards in $OUT. The paper presets read"
echo "  data_cache/pile_gpt2/00_text_document ... 29_text_document (weight 1 each, split 969,30,1);"
echo "  to train on these shards instead:"
echo "  --set 'data.train=[$train]'"
