#!/usr/bin/env bash
# Runs the GPU tests on the CPU: the CUDA kernels (kernels/cuda/*.cu, as they are now) are turned
# into host C++ by tools/cuda_emu/gen.py and built with the CUDA emulator into one test binary
# (tests/test_cuda*.cpp, tests/test_train.cpp, tests/test_lock_train.cpp, tests/test_probe.cpp) that
# sees one emulated device. No GPU, driver or libcudart is needed; nvcc's headers are
# (/usr/local/cuda/include, or $CUDA_HOME/include).
# See tools/cuda_emu/README.md for what this proves and what it does not.
#
# Usage: scripts/cuda_emu.sh [CATCH2 ARGS...]      (default: "[cuda]")
#   scripts/cuda_emu.sh                                   every GPU test
#   scripts/cuda_emu.sh "[cuda]~[train]"                  without the GPU training test
#   scripts/cuda_emu.sh "cuda rmsnorm*" --durations yes   one group, with timings
#   EMU_BUILD_ONLY=1 scripts/cuda_emu.sh                  build, do not run
#
# Environment:
#   EMU_ASAN=1|0     AddressSanitizer + UndefinedBehaviorSanitizer (default 1; 0 is ~3x faster)
#   EMU_ORDER=forward|reverse|random[:SEED]   the order the emulator runs the threads of a block
#                    and the blocks of a grid (default forward); EMU_REVERSE=1 = reverse
#   EMU_CP_ASYNC=poison|eager   cp.async destinations read as NaN until the wait (default), or
#                    are copied at once
#   EMU_DEVICES=0    pretend there is no device (the tests' skip path)
#   EMU_TRACE=1 / EMU_STATS=1   print every launch / launch counts and time per kernel
#   EMU_BUILD_DIR    build folder (default build-emu; git ignores /build-*/)
#   EMU_JOBS         parallel compile jobs (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

ASAN="${EMU_ASAN:-1}"
BUILD="${EMU_BUILD_DIR:-build-emu}"
[[ "$BUILD" = /* ]] || BUILD="$ROOT/$BUILD"
CUDA_INC="${CUDA_HOME:-/usr/local/cuda}/include"
if [ ! -f "$CUDA_INC/cuda_runtime.h" ]; then
  echo "cuda_emu: $CUDA_INC/cuda_runtime.h not found: the emulator needs the CUDA toolkit's headers" >&2
  echo "          (set CUDA_HOME; nothing of the toolkit is linked)" >&2
  exit 2
fi
command -v python3 >/dev/null || { echo "cuda_emu: python3 is needed (tools/cuda_emu/gen.py)" >&2; exit 2; }

if [ "$ASAN" = "1" ]; then
  VARIANT=asan
  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
else
  VARIANT=fast
  SAN=""
fi

python3 tools/cuda_emu/gen.py "$ROOT" "$BUILD/gen"
make --no-print-directory -s -f tools/cuda_emu/Makefile -j "${EMU_JOBS:-$(nproc)}" \
  ROOT="$ROOT" GEN="$BUILD/gen" B="$BUILD/$VARIANT" CUDA_INC="$CUDA_INC" SAN="$SAN"
BIN="$BUILD/$VARIANT/unipool_emu_tests"
echo "cuda_emu: built $BIN"
[ "${EMU_BUILD_ONLY:-0}" = "1" ] && exit 0

if [ "$#" -eq 0 ]; then
  set -- "[cuda]"
fi
# ASan: fibers switch stacks (annotated), so its stack-use-after-return check stays off; leaks of
# the process-lifetime singletons are not errors. Catch2 2 needs --warn NoTests so a spec that
# selects nothing fails instead of passing.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:detect_stack_use_after_return=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "$BIN" --warn NoTests "$@"
