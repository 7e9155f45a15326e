#!/usr/bin/env bash
# Builds here, on the development machine, the two binaries a GPU session runs, so that the device's
# scarce minutes go to running them instead of compiling (issue 17: "build on the development
# machine and take the binaries along"):
#   build-devgpu/unipool, build-devgpu/tests/unipool_tests
# Release, CUDA for sm_90; the CPU code for x86-64-v3 (AVX2 + FMA, which every H100/H200 host has;
# not -march=native, which on an AVX-512 development machine would not run on an AVX2 host); no MPI
# (the GPU image has no OpenMPI; GPU ranks talk through NCCL). scripts/gpu_deps.sh packs the shared
# libraries a bare GPU image lacks (CBC and its dependencies) into .device/deps/lib, and this script
# adds utf8proc there. build-devgpu/SOURCE_DIR records this checkout's path: the tests read their
# fixtures and run `unipool` by absolute paths, which scripts/gpu_check.sh maps onto the device's
# copy of the tree with a symbolic link.
#
# Then, with the device tool (carry these three paths, about 40 MB):
#   carry: build-devgpu/unipool build-devgpu/tests/unipool_tests .device/deps
#   run:   BUILD=build-devgpu OUT=$OUT bash scripts/gpu_check.sh env tests bench profile
# (GPU bring-up, issue 10, still builds on the device once: `gpu_check.sh` with no BUILD checks the
# build with the device's own Catch2 3 as well.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/cuda/bin:$PATH"
BUILD=build-devgpu
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DUNIPOOL_NATIVE=OFF \
  -DCMAKE_CXX_FLAGS="-march=x86-64-v3" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON > /dev/null
cmake --build "$BUILD" --target unipool unipool_tests -j "$(nproc)"
grep -q "UNIPOOL_HAVE_CUDA" "$BUILD/compile_commands.json" ||
  { echo "gpu_pack: $BUILD has no CUDA backend (nvcc not found?)" >&2; exit 1; }
scripts/gpu_deps.sh
cp -L "$(ldd "$BUILD/unipool" | awk '$1 ~ /^libutf8proc/ {print $3}')" .device/deps/lib/
pwd > "$BUILD/SOURCE_DIR"
# What a bare image must still provide: the C/C++ runtime, libgomp, zlib, zstd, the CUDA runtime and
# cuBLASLt (the toolkit) and NCCL (the toolkit's, or the nvidia-nccl-cu13 wheel's: gpu_check.sh
# finds it).
echo "gpu_pack: needed at run time and not packed:"
ldd "$BUILD/unipool" "$BUILD/tests/unipool_tests" | awk '$2 == "=>" {print $1}' | sort -u |
  while read -r lib; do [ -e ".device/deps/lib/$lib" ] || printf ' %s' "$lib"; done
echo
du -ch "$BUILD/unipool" "$BUILD/tests/unipool_tests" .device/deps | tail -1
echo "gpu_pack: carry build-devgpu/unipool build-devgpu/tests/unipool_tests .device/deps"
echo "          run   BUILD=build-devgpu OUT=\$OUT bash scripts/gpu_check.sh env tests bench profile"
