#!/usr/bin/env bash
# Packs the build dependencies a bare GPU machine may lack (it has CUDA, CMake and ninja but no
# Debian -dev packages, and cannot download) into .device/deps, a CMake prefix that travels with the
# working tree (the folder is git-ignored; name it in the device tool's `carry`).
# Run on the development machine after scripts/setup.sh; scripts/gpu_check.sh uses it when present.
set -euo pipefail
cd "$(dirname "$0")/.."
deps=.device/deps
rm -rf "$deps"
mkdir -p "$deps/include" "$deps/lib/cmake" "$deps/share/cmake"
cp -r /usr/include/nlohmann /usr/include/CLI /usr/include/utf8proc.h "$deps/include/"
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$deps/share/cmake/"
# utf8proc as a static library: nothing to find at run time on the GPU machine.
cp /usr/lib/x86_64-linux-gnu/libutf8proc.a "$deps/lib/"
# zstd and zlib (`unipool tokenize` reads .zst and .gz) as static libraries and their headers; the
# top CMakeLists.txt finds zstd without pkg-config when it has to.
cp /usr/include/zstd.h /usr/include/zstd_errors.h /usr/include/zlib.h /usr/include/zconf.h \
  "$deps/include/"
cp /usr/lib/x86_64-linux-gnu/libzstd.a /usr/lib/x86_64-linux-gnu/libz.a "$deps/lib/"
# Catch2 2 (single header + CMake package) for when the machine has no Catch2 3.
cp -r /usr/include/catch2 "$deps/include/"
cp -r /usr/lib/cmake/Catch2 "$deps/lib/cmake/"
cp /usr/lib/libCatch2WithMain.a "$deps/lib/" 2>/dev/null || true
# COIN-OR CBC (coverage_partition, model/lock_partition.*), when installed here: the headers, the
# shared libraries under their sonames plus the link names, their non-system dependencies (LAPACK,
# BLAS, gfortran, quadmath, bz2) and a self-contained cbc.pc relative to its own folder. The GPU
# machine's CMake finds it through PKG_CONFIG_PATH=.device/deps/lib/pkgconfig and the binaries load
# it through LD_LIBRARY_PATH=.device/deps/lib (scripts/gpu_check.sh sets both).
if pkg-config --exists cbc 2>/dev/null; then
  libdir=$(pkg-config --variable=libdir cbc)
  cp -r "$(pkg-config --variable=includedir cbc)" "$deps/include/"
  for lib in CbcSolver Cbc Cgl OsiClp ClpSolver Clp Osi CoinUtils; do
    real=$(readlink -f "$libdir/lib$lib.so")
    soname=$(objdump -p "$real" | awk '/SONAME/ {print $2}')
    cp "$real" "$deps/lib/$soname"
    ln -sf "$soname" "$deps/lib/lib$lib.so"
  done
  # Their dependencies outside the C/C++ runtime, resolved by ldd (through Debian's alternatives).
  ldd "$libdir/libCbcSolver.so" "$libdir/libClpSolver.so" |
    awk '$2 == "=>" && $1 ~ /^lib(lapack|blas|gfortran|quadmath|bz2)\./ {print $1, $3}' | sort -u |
    while read -r name path; do cp -L "$path" "$deps/lib/$name"; done
  mkdir -p "$deps/lib/pkgconfig"
  cat > "$deps/lib/pkgconfig/cbc.pc" <<PC
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include/coin

Name: CBC
Description: COIN-OR Branch and Cut (packed by scripts/gpu_deps.sh)
Version: $(pkg-config --modversion cbc)
Libs: -L\${libdir} -Wl,-rpath-link,\${libdir} -lCbcSolver -lCbc -lCgl -lOsiClp -lClpSolver -lClp -lOsi -lCoinUtils -lpthread -lrt
Cflags: -I\${includedir}
PC
else
  echo "gpu_deps: no CBC here (coinor-libcbc-dev): the GPU build will have no coverage partition"
fi
du -sh "$deps"
