#!/usr/bin/env bash
# The libFuzzer targets of fuzz/ (README.md §Fuzzing): installs what is missing (clang, libFuzzer
# and the sanitizer runtimes, libomp), builds them in build-fuzz/ (clang, ASan + UBSan, -O1 -g, no
# CUDA), writes the seeds with the project's own writers, then for each target
#   1. replays the checked-in regression corpus fuzz/corpus/TARGET/, the seeds and the large
#      generated regression inputs (-runs=0: every input once, nothing mutated), then
#   2. fuzzes for SECONDS_PER_TARGET seconds from the corpus and the seeds; new inputs go to
#      build-fuzz/corpus/TARGET/ (kept between runs), never into fuzz/corpus/.
# A crash, sanitizer report, leak, timeout (10 s), an input using more than 2 GB or a failed
# property stops the script with status 1; libFuzzer writes the input as
# build-fuzz/findings/TARGET/crash-* (or leak-, timeout-, oom-) and the log is printed.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]   (default 30 seconds, every target;
#        0 seconds: build and replay only)
# CI (scripts/test.sh) runs scripts/fuzz.sh 30; scripts/fuzz.sh 600 fuzzes longer.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-30}"
ALL_TARGETS=(fuzz_shards fuzz_safetensors fuzz_config fuzz_checkpoint_state fuzz_tokenizer)
TARGETS=("${@:2}")
[ "${#TARGETS[@]}" -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
BUILD=build-fuzz
case "$SECONDS_PER_TARGET" in
  '' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]   targets: ${ALL_TARGETS[*]}" >&2
    exit 2
    ;;
esac
for t in "${TARGETS[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "fuzz: unknown target '$t' (${ALL_TARGETS[*]})" >&2; exit 2; }
done

# What the fuzz build needs beyond scripts/setup.sh's list: clang, libFuzzer and the sanitizer
# runtimes (libclang-rt-dev; Debian 12's clang is clang-14) and OpenMP for clang (libomp-dev).
scripts/install_missing.sh fuzz build-essential cmake nlohmann-json3-dev libcli11-dev \
  libutf8proc-dev libzstd-dev zlib1g-dev pkg-config clang libclang-rt-dev libomp-dev

start=$(date +%s)
CC=clang CXX=clang++ cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DUNIPOOL_FUZZ=ON \
  -DUNIPOOL_CUDA=OFF -DUNIPOOL_TESTS=OFF -DUNIPOOL_NATIVE=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target fuzz
mkdir -p "$BUILD/logs"
if ! "$BUILD/fuzz/make_seeds" "$BUILD" >"$BUILD/logs/make_seeds.log" 2>&1; then
  cat "$BUILD/logs/make_seeds.log"
  exit 1
fi
echo "fuzz: built and seeded in $(($(date +%s) - start)) s"

# UBSan: a stack for every report; ASan: report leaks (libFuzzer's default too).
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
common=(-timeout=10 -rss_limit_mb=2048)
status=0
summary=()
for t in "${TARGETS[@]}"; do
  bin="$BUILD/fuzz/$t"
  findings="$BUILD/findings/$t"
  work="$BUILD/corpus/$t"
  log="$BUILD/logs/$t.log"
  mkdir -p "$findings" "$work" "$(dirname "$log")" "fuzz/corpus/$t"
  dict=()
  [ "$t" != fuzz_shards ] && dict=(-dict="$BUILD/json.dict")
  replay=("fuzz/corpus/$t" "$BUILD/seeds/$t")
  [ -d "$BUILD/regress/$t" ] && replay+=("$BUILD/regress/$t")

  # 1. every regression input and seed once
  if ! "$bin" "${common[@]}" -runs=0 -close_fd_mask=2 -artifact_prefix="$findings/" \
      "${replay[@]}" >"$log.replay" 2>&1; then
    echo "fuzz: $t FAILED on its regression corpus or seeds (log $log.replay, input in $findings/):"
    tail -n 60 "$log.replay"
    status=1
    summary+=("$t: FAILED replaying the corpus")
    continue
  fi
  replayed=$(find "${replay[@]}" -type f | wc -l)

  if [ "$SECONDS_PER_TARGET" -eq 0 ]; then
    summary+=("$t: replayed ${replayed:-?} inputs (no fuzzing: 0 seconds)")
    continue
  fi
  # 2. timed fuzzing; the targets' own stderr (warnings) is closed, sanitizer and libFuzzer
  # reports still reach the log
  if ! "$bin" "${common[@]}" "${dict[@]}" -max_total_time="$SECONDS_PER_TARGET" \
      -close_fd_mask=2 -print_final_stats=1 -artifact_prefix="$findings/" \
      "$work" "fuzz/corpus/$t" "$BUILD/seeds/$t" >"$log" 2>&1; then
    echo "fuzz: $t FOUND A PROBLEM (log $log; the input is in $findings/, reproduce with $bin FILE):"
    tail -n 80 "$log"
    status=1
    summary+=("$t: FINDING in $findings/")
    continue
  fi
  final_stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
  summary+=("$t: replayed ${replayed:-?} inputs; fuzzed ${SECONDS_PER_TARGET} s: $(final_stat number_of_executed_units) runs ($(final_stat average_exec_per_sec)/s), $(final_stat new_units_added) new inputs, peak RSS $(final_stat peak_rss_mb) MB")
done

printf 'fuzz: %s\n' "${summary[@]}"
echo "fuzz: total $(($(date +%s) - start)) s"
exit "$status"
