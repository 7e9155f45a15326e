// Helpers shared by the CUDA op files (kernels/cuda/*.cu): alignment tests and grid sizing on the
// host; warp and block reductions by fixed xor trees and the 16-byte vector of 8 bf16 on the
// device. Each file keeps its own launch constants (threads per block, rows per block) and passes
// them in.
//
// Device code: included only by .cu files (host .cpp files use ops.h and runtime.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/runtime.h"

namespace unipool::cuda {

constexpr unsigned kFullMask = 0xffffffffu;  // every lane of the warp takes part in a shuffle
constexpr int kVec = 8;                      // bf16 per 16-byte vector: the chunk width

// ---- host: alignment and grid sizing ----------------------------------------------------------

inline bool aligned_to(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}
inline bool aligned16(const void* p) {
  return aligned_to(p, 16);
}

// ⌈a / b⌉ for a >= 0, b > 0.
constexpr int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Blocks that give each of `items` its own slot when a block holds per_block of them (threads,
// warps, rows, ...): ⌈items / per_block⌉. For kernels without a grid-stride loop.
inline unsigned blocks_for(int64_t items, int per_block) {
  return unsigned(ceil_div(items, per_block));
}

// Blocks of `threads` threads for a grid-stride loop over `items`: one item per thread, capped at
// 2^20 blocks (the loop takes the rest), at least 1.
inline unsigned grid_stride_blocks(int64_t items, int threads) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(ceil_div(items, threads), 1 << 20)));
}

// ---- device: reductions -----------------------------------------------------------------------

// Σ over the 32 lanes of a warp by a fixed xor tree (every lane gets the same bits).
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}

// max over the 32 lanes of a warp by the same tree.
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, off));
  return v;
}

// Inclusive prefix sum over the lanes of a warp (lane = threadIdx.x % 32); integers: exact.
__device__ __forceinline__ int warp_inclusive_sum(int v, int lane) {
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const int below = __shfl_up_sync(kFullMask, v, off);
    if (lane >= off) v += below;
  }
  return v;
}

// Block-wide sum / max over kBlockWarps full warps by a fixed tree: each warp by its xor tree, then
// the warp results (in warp order, padded to 32 lanes with the identity) by the same tree, computed
// by every warp alike so every thread returns the same bits. `red` is shared memory of kBlockWarps
// values; the leading barrier makes it safe to call these back to back. Call with the whole block.
template <int kBlockWarps, typename T>
__device__ __forceinline__ T block_sum(T v, T* red) {
  static_assert(kBlockWarps >= 1 && kBlockWarps <= 32, "one warp combines the warp results");
  v = warp_sum(v);
  __syncthreads();  // an earlier reduction may still be reading red
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  const T t = int(threadIdx.x % 32) < kBlockWarps ? red[threadIdx.x % 32] : T(0);
  return warp_sum(t);
}

template <int kBlockWarps>
__device__ __forceinline__ float block_max(float v, float* red) {
  static_assert(kBlockWarps >= 1 && kBlockWarps <= 32, "one warp combines the warp results");
  v = warp_max(v);
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  const float t = int(threadIdx.x % 32) < kBlockWarps ? red[threadIdx.x % 32] : -INFINITY;
  return warp_max(t);
}

// ---- device: chunks of 8 bf16 -----------------------------------------------------------------
// A row is processed in chunks of kVec columns. kAligned (the width a multiple of 8 and the
// pointers 16-byte aligned): a chunk is one 16-byte load/store; otherwise kVec scalar accesses of
// which the first n are valid (the last chunk of a row may be partial). Both paths give the same
// floats, so the results never depend on the alignment.

// Eight bf16 = one 16-byte vector.
struct alignas(16) Bf16x8 {
  bf16 v[kVec];
};

// Number of valid columns in the chunk starting at column col of a row of width w (kVec when
// kAligned: the width is then a multiple of 8).
template <bool kAligned>
__device__ __forceinline__ int chunk_len(int col, int w) {
  return kAligned ? kVec : min(kVec, w - col);
}

// f[j] = p[j] for j < n (bf16 → fp32, exact); the other entries are 0.
template <bool kAligned>
__device__ __forceinline__ void load_bf16(const bf16* p, int n, float (&f)[kVec]) {
  if constexpr (kAligned) {
    const Bf16x8 pack = *reinterpret_cast<const Bf16x8*>(p);
#pragma unroll
    for (int j = 0; j < kVec; ++j) f[j] = __bfloat162float(pack.v[j]);
  } else {
#pragma unroll
    for (int j = 0; j < kVec; ++j) f[j] = j < n ? __bfloat162float(p[j]) : 0.f;
  }
}

// p[j] = bf16(f[j]) for j < n (round to nearest even).
template <bool kAligned>
__device__ __forceinline__ void store_bf16(bf16* p, int n, const float (&f)[kVec]) {
  if constexpr (kAligned) {
    Bf16x8 pack;
#pragma unroll
    for (int j = 0; j < kVec; ++j) pack.v[j] = __float2bfloat16_rn(f[j]);
    *reinterpret_cast<Bf16x8*>(p) = pack;
  } else {
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      if (j < n) p[j] = __float2bfloat16_rn(f[j]);
    }
  }
}

}  // namespace unipool::cuda
