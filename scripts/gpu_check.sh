#!/usr/bin/env bash
# Every check that needs a GPU, in one command (for the device machine's 10-minute calls):
#   1. the environment (GPU, driver, nvcc, CMake, which libraries are found)
#   2. a Release build for sm_90 (dependencies from .device/deps when the machine lacks them)
#   3. the GPU tests: build-gpu/tests/unipool_tests "[cuda]"
#   4. compute-sanitizer memcheck and racecheck on short training runs (unipool bench = real
#      training steps on random tokens: forward, backward, clipping, AdamW)
#   5. unipool bench on the 182M presets (micro-batch 16 × 1024, optimizer step every micro-batch;
#      then UniPool and vanilla MoE at the paper's 32 micro-batches per step)
#   6. profile: Nsight Compute's time and throughput of every kernel of two unipool-182m steps,
#      summed per kernel, the top ones in profile.txt (the baseline issue 17 asks for; opt-in)
#   7. the whole CPU suite under ctest (checks Catch2 3 on this machine)
# Logs go to $OUT (default out/gpu-check); a summary line per step goes to stdout.
# BUILD=build-devgpu uses the binaries scripts/gpu_pack.sh built on the development machine and the
# device tool carried along (skip the `build` step then): their absolute paths (fixtures, the
# `unipool` the tests run) are mapped here by a symbolic link from the recorded checkout path to
# this one, and the libraries they load come from .device/deps/lib and NCCL's wheel.
# Usage: bash scripts/gpu_check.sh [steps...]   (default: env build tests sanitize bench ctest;
#        profile runs only when named)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu-check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(env build tests sanitize bench ctest)
want() { [[ " ${steps[*]} " == *" $1 "* ]]; }
BUILD=${BUILD:-build-gpu}
prefix=()
[ -d .device/deps ] && prefix=(-DCMAKE_PREFIX_PATH="$PWD/.device/deps")
# CBC packed by scripts/gpu_deps.sh: found by pkg-config at configure time, loaded at run time.
if [ -f .device/deps/lib/pkgconfig/cbc.pc ]; then
  export PKG_CONFIG_PATH="$PWD/.device/deps/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="$PWD/.device/deps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# NCCL (engine/comm_nccl.*): the toolkit's, else the pip package nvidia-nccl-cu13's when present.
nccl_root=$(python3 -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
[ -n "$nccl_root" ] && [ -f "$nccl_root/include/nccl.h" ] && prefix+=(-DNCCL_ROOT="$nccl_root")

# Binaries built elsewhere (scripts/gpu_pack.sh): map their checkout path onto this tree, find
# their libraries, and say at once when one is missing.
if [ -f "$BUILD/SOURCE_DIR" ]; then
  built_in=$(cat "$BUILD/SOURCE_DIR")
  if [ "$(cd "$built_in" 2>/dev/null && pwd -P)" != "$(pwd -P)" ]; then
    if [ -e "$built_in" ]; then
      echo "carried binaries: $built_in exists here and is not this tree: the tests' paths would miss"
    else
      mkdir -p "$(dirname "$built_in")" && ln -s "$PWD" "$built_in" &&
        echo "carried binaries: $built_in -> $PWD"
    fi
  fi
  export LD_LIBRARY_PATH="$PWD/.device/deps/lib${nccl_root:+:$nccl_root/lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  missing=$(ldd "$BUILD/unipool" "$BUILD/tests/unipool_tests" 2>&1 | grep "not found" | sort -u | tr -s ' \t\n' ' ')
  [ -n "$missing" ] && echo "carried binaries: missing libraries:$missing (build here instead: drop BUILD)"
fi

if want env; then
  { nvidia-smi; nvcc --version; cmake --version; ls /usr/include | grep -i -E "catch|CLI|nlohmann|utf8" ;
    ls /usr/lib/cmake /usr/share/cmake /usr/local/lib/cmake 2>/dev/null; } > "$OUT/env.txt" 2>&1
  echo "env: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
fi

if want build && [ -f "$BUILD/SOURCE_DIR" ]; then
  echo "build: skipped, $BUILD holds binaries built by scripts/gpu_pack.sh"
elif want build; then
  t0=$SECONDS
  if cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CUDA_ARCHITECTURES=90 "${prefix[@]}" > "$OUT/build.txt" 2>&1 &&
     cmake --build "$BUILD" -j "$(nproc)" >> "$OUT/build.txt" 2>&1; then
    echo "build: ok in $((SECONDS - t0)) s ($(grep -c -i warning "$OUT/build.txt") warning lines; $(grep -o 'unipool: [^(]*NCCL[^(]*' "$OUT/build.txt" | head -1); $(grep -o 'unipool: [^(]*CBC[^(]*' "$OUT/build.txt" | head -1))"
  else
    echo "build: FAILED (last lines of $OUT/build.txt:)"; tail -40 "$OUT/build.txt"; exit 1
  fi
fi

if want tests; then
  t0=$SECONDS
  "$BUILD/tests/unipool_tests" "[cuda]" --durations yes > "$OUT/cuda_tests.txt" 2>&1
  echo "cuda tests: rc $? in $((SECONDS - t0)) s: $(tail -3 "$OUT/cuda_tests.txt" | tr '\n' ' ')"
fi

if want sanitize; then
  # A small model (hd 32, 2 layers) so that the sanitizers finish in a few minutes.
  small=(--set model.n_layer=2 --set model.d_model=128 --set model.n_head=4 --set model.n_kv_head=2
         --set model.ffn_hidden=128 --set model.seq_len=128 --set train.micro_batch=2
         --set train.backend=cuda)
  for tool in memcheck racecheck; do
    t0=$SECONDS
    compute-sanitizer --tool "$tool" --error-exitcode 9 "$BUILD/unipool" bench --config tiny \
      "${small[@]}" --steps 1 --warmup 1 > "$OUT/$tool.txt" 2>&1
    echo "$tool: rc $? in $((SECONDS - t0)) s: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool.txt" | tr '\n' ' ')"
  done
fi

if want bench; then
  for preset in unipool-182m unipool-182m-m48 moe-182m dense-182m; do
    "$BUILD/unipool" bench --config "$preset" --set train.backend=cuda --set train.micro_batch=16 \
      --set train.grad_accum=1 --steps 5 --warmup 2 > "$OUT/bench-$preset.txt" 2>&1
    echo "bench $preset: $(grep -E '^result' "$OUT/bench-$preset.txt" || tail -2 "$OUT/bench-$preset.txt")"
  done
  # The paper's global batch: 512 sequences of 1024 = 32 micro-batches of 16 per optimizer step.
  for preset in unipool-182m moe-182m; do
    "$BUILD/unipool" bench --config "$preset" --set train.backend=cuda --set train.micro_batch=16 \
      --set train.grad_accum=32 --steps 2 --warmup 1 > "$OUT/bench-$preset-accum32.txt" 2>&1
    echo "bench $preset accum 32: $(grep -E '^result' "$OUT/bench-$preset-accum32.txt" || tail -2 "$OUT/bench-$preset-accum32.txt")"
  done
fi

if want profile; then
  # One pass per kernel (three metrics, clocks left alone, docs of the device tool): ~2 steps of
  # ~1,000 launches. tools/ncu_summary.py sums the CSV per kernel name.
  t0=$SECONDS
  timeout 300 ncu --clock-control none --csv --print-units base \
    --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed \
    "$BUILD/unipool" bench --config unipool-182m --set train.backend=cuda --set train.micro_batch=16 \
    --set train.grad_accum=1 --steps 1 --warmup 1 > "$OUT/ncu-unipool-182m.csv" 2> "$OUT/ncu-stderr.txt"
  rc=$?
  python3 tools/ncu_summary.py "$OUT/ncu-unipool-182m.csv" --steps 2 > "$OUT/profile.txt" 2>&1
  echo "profile: ncu rc $rc in $((SECONDS - t0)) s; top kernels:"; head -14 "$OUT/profile.txt"
fi

if want ctest; then
  t0=$SECONDS
  if [ -f "$BUILD/CTestTestfile.cmake" ]; then
    (cd "$BUILD" && ctest -j 8 --timeout 600 > "$OUT/ctest.txt" 2>&1)
    echo "ctest: $(grep -E 'tests passed|tests failed' "$OUT/ctest.txt") in $((SECONDS - t0)) s"
  else  # carried binaries: no CTest files, the whole suite in one process
    "$BUILD/tests/unipool_tests" > "$OUT/ctest.txt" 2>&1
    echo "all tests (one process): rc $? in $((SECONDS - t0)) s: $(tail -2 "$OUT/ctest.txt" | tr '\n' ' ')"
  fi
fi
