// CUDA MoE dispatch: the expert-major plan (a stable counting sort of the N·k slots by expert, on
// the device, no host synchronisation) and the row moves between token-major and expert-major
// buffers. Contract: kernels/cuda/ops.h; vocabulary, math and CPU oracle: kernels/cpu/dispatch.h.
// The plan is integer work, so it equals the CPU's exactly; the row moves copy bf16 rows, and the
// combine (sum_slot_rows) adds in fp32 in slot order and rounds once.
//
// dispatch_plan, three kernels, slots in fixed chunks of kChunk (the last one partial):
//   1. count:   one warp per chunk counts its slots per expert → cnt[e, c]   (expert-major [E, C])
//   2. scan:    one block turns cnt into its exclusive prefix sum in that flat (expert, chunk)
//               order: base[e, c] = Σ_{e' < e} count(e') + Σ_{c' < c} cnt[e, c'] = the first row of
//               chunk c's slots of expert e; offsets[e] = base[e, 0], offsets[E] = N·k
//   3. scatter: one warp per chunk walks its slots in order, 32 at a time; the lanes holding the
//               same expert rank themselves by lane (__match_any_sync + popc), so every slot's row
//               is base + (same-expert slots before it in the chunk): a stable sort.
// Limits: 1 <= E <= kMaxExperts (per-expert counters in shared memory), N·k < 2^31.
#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace unipool::cuda {

namespace {

constexpr int kChunk = 1024;           // slots per chunk of the plan (one warp each)
constexpr int kPerLane = kChunk / 32;  // slots per lane of a chunk
constexpr int kMaxExperts = 4096;      // shared int per expert in the count and scatter kernels
constexpr int kScanThreads = 1024;     // the scan's one block
constexpr int kScanItems = 8;          // consecutive entries per thread per scan tile
constexpr int kScanTile = kScanThreads * kScanItems;
constexpr int kThreads = 256;             // threads per block of the row kernels
constexpr int kRowWarps = kThreads / 32;  // rows per block of the warp-per-row kernels

// The chunk's ids, kPerLane per lane: lane l holds slots base + it·32 + l, it = 0..kPerLane−1 (all
// loads issued at once). Slots past n and ids outside [0, E) become −1 (skipped).
__device__ __forceinline__ void load_chunk_ids(int (&e)[kPerLane], const int32_t* __restrict__ ids,
                                               int chunk, int n, int E, int lane) {
#pragma unroll
  for (int it = 0; it < kPerLane; ++it) {
    const int slot = chunk * kChunk + it * 32 + lane;
    const int v = slot < n ? ids[slot] : -1;
    e[it] = (v >= 0 && v < E) ? v : -1;
  }
}

// Pass 1. cnt [E, nchunks] (expert-major): cnt[e, c] = #{slots of chunk c with id e}. Block = one
// warp, grid = nchunks, dynamic shared = E ints. Per group of 32 slots, the lowest lane of each
// expert's group of lanes adds the group's size (no two leaders share an expert).
__global__ void plan_count_kernel(int32_t* __restrict__ cnt, const int32_t* __restrict__ ids, int n,
                                  int E, int nchunks) {
  extern __shared__ int32_t chunk_count[];  // [E]
  const int lane = threadIdx.x;
  const int chunk = blockIdx.x;
  for (int x = lane; x < E; x += 32) chunk_count[x] = 0;
  int e[kPerLane];
  load_chunk_ids(e, ids, chunk, n, E, lane);
  __syncwarp();
#pragma unroll
  for (int it = 0; it < kPerLane; ++it) {
    const unsigned peers = __match_any_sync(kFullMask, e[it]);
    if (e[it] >= 0 && lane == __ffs(peers) - 1) chunk_count[e[it]] += __popc(peers);
    __syncwarp();  // the next group may update the same counter from another lane
  }
  for (int x = lane; x < E; x += 32) cnt[int64_t(x) * nchunks + chunk] = chunk_count[x];
}

// Pass 2. One block of kScanThreads: buf [M] (= cnt, M = E·nchunks) → its exclusive prefix sum in
// place; offsets[e] = buf[e·nchunks] (e < E), offsets[E] = Σ cnt. Tiles of kScanTile entries in
// order; thread i owns entries [i·kScanItems, (i+1)·kScanItems) of a tile: serial sum, warp scan
// (shfl_up), scan of the 32 warp totals, plus the carry of the previous tiles. Integer sums: exact.
__global__ void plan_scan_kernel(int32_t* __restrict__ buf, int32_t* __restrict__ offsets,
                                 int64_t M, int nchunks, int E) {
  __shared__ int32_t warp_prefix[kScanThreads / 32];
  __shared__ int32_t tile_total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int32_t carry = 0;  // Σ of all entries of the previous tiles (the same in every thread)
  for (int64_t tile = 0; tile < M; tile += kScanTile) {
    const int64_t first = tile + int64_t(threadIdx.x) * kScanItems;
    int32_t v[kScanItems];
    int32_t own = 0;
#pragma unroll
    for (int q = 0; q < kScanItems; ++q) {
      v[q] = first + q < M ? buf[first + q] : 0;
      own += v[q];
    }
    const int32_t incl = warp_inclusive_sum(own, lane);  // inclusive scan of `own` over the warp
    if (lane == 31) warp_prefix[warp] = incl;            // the warp's total, for now
    __syncthreads();
    if (warp == 0) {
      const int32_t w = warp_prefix[lane];  // kScanThreads / 32 == 32 warps
      const int32_t wincl = warp_inclusive_sum(w, lane);
      warp_prefix[lane] = wincl - w;  // exclusive over warps
      if (lane == 31) tile_total = wincl;
    }
    __syncthreads();
    int32_t run = carry + warp_prefix[warp] + (incl - own);
#pragma unroll
    for (int q = 0; q < kScanItems; ++q) {
      if (first + q < M) buf[first + q] = run;
      run += v[q];
    }
    carry += tile_total;
    __syncthreads();  // warp_prefix and tile_total are rewritten by the next tile
  }
  // The block's global writes above are visible to all its threads after the last barrier.
  for (int e = threadIdx.x; e < E; e += kScanThreads) offsets[e] = buf[int64_t(e) * nchunks];
  if (threadIdx.x == 0) offsets[E] = carry;
}
static_assert(kScanThreads == 32 * 32, "the scan's second level is one warp over 32 warp totals");

// Pass 3. Block = one warp per chunk, dynamic shared = E ints (the chunk's next row per expert,
// from base[e, c]). Per group of 32 slots in order: row = cursor[e] + (lanes below with the same
// expert); then the group's lowest lane of each expert advances cursor[e] by the group size.
//   row_slot[row] = slot,  slot_row[slot] = row
__global__ void plan_scatter_kernel(int32_t* __restrict__ row_slot, int32_t* __restrict__ slot_row,
                                    const int32_t* __restrict__ base,
                                    const int32_t* __restrict__ ids, int n, int E, int nchunks) {
  extern __shared__ int32_t cursor[];  // [E]
  const int lane = threadIdx.x;
  const int chunk = blockIdx.x;
  for (int x = lane; x < E; x += 32) cursor[x] = base[int64_t(x) * nchunks + chunk];
  int e[kPerLane];
  load_chunk_ids(e, ids, chunk, n, E, lane);
  __syncwarp();
  const unsigned lanes_below = (1u << lane) - 1u;
#pragma unroll
  for (int it = 0; it < kPerLane; ++it) {
    const unsigned peers = __match_any_sync(kFullMask, e[it]);
    const bool valid = e[it] >= 0;
    const int row = valid ? cursor[e[it]] + __popc(peers & lanes_below) : 0;
    __syncwarp();  // every lane has read its cursor before a leader advances it
    if (valid) {
      const int slot = chunk * kChunk + it * 32 + lane;
      row_slot[row] = slot;
      slot_row[slot] = row;
      if (lane == __ffs(peers) - 1) cursor[e[it]] += __popc(peers);
    }
    __syncwarp();  // the advanced cursors are seen by the next group
  }
}


// ---------------------------------------------------------------------------------------------------
// Row moves. bf16 rows of d values; one warp per destination row, lanes over 16-byte vectors of 8
// values when d % 8 == 0 and both base pointers are 16-byte aligned (kAligned), else over values.
union Pack8 {  // 8 bf16 = 16 bytes
  uint4 u;
  __nv_bfloat162 h[4];
};

// gather_rows: dst[r,:] = src[row_slot[r]/k, :]   src [N,d], dst [N·k,d] (a copy: exact)
template <bool kAligned>
__global__ void gather_rows_kernel(bf16* __restrict__ dst, const bf16* __restrict__ src,
                                   const int32_t* __restrict__ row_slot, int n, int k, int d) {
  const int r = blockIdx.x * kRowWarps + int(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (r >= n) return;
  const int64_t t = row_slot[r] / k;
  if (kAligned) {
    const uint4* s = reinterpret_cast<const uint4*>(src + t * d);
    uint4* o = reinterpret_cast<uint4*>(dst + int64_t(r) * d);
    for (int i = lane; i < d / 8; i += 32) o[i] = s[i];
  } else {
    const bf16* s = src + t * d;
    bf16* o = dst + int64_t(r) * d;
    for (int i = lane; i < d; i += 32) o[i] = s[i];
  }
}

// sum_slot_rows: dst[t,:] (+)= Σ_{j<k} src[slot_row[t·k+j], :]   src [N·k,d], dst [N,d].
// fp32 sum in slot order, one rounding to bf16: accumulate → ((dst + s_0) + s_1) + …, overwrite →
// (s_0 + s_1) + … (exactly the CPU op's float arithmetic, then rounded).
template <bool kAligned>
__global__ void sum_slot_rows_kernel(bf16* __restrict__ dst, const bf16* __restrict__ src,
                                     const int32_t* __restrict__ slot_row, int N, int k, int d,
                                     bool accumulate) {
  const int t = blockIdx.x * kRowWarps + int(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (t >= N) return;
  const int32_t* sr = slot_row + int64_t(t) * k;
  bf16* o = dst + int64_t(t) * d;
  if (kAligned) {
    uint4* o4 = reinterpret_cast<uint4*>(o);
    for (int i = lane; i < d / 8; i += 32) {
      float acc[8];
      int j = 0;
      Pack8 p;
      if (accumulate) {
        p.u = o4[i];
      } else {
        p.u = reinterpret_cast<const uint4*>(src + int64_t(sr[0]) * d)[i];
        j = 1;
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float2 f = __bfloat1622float2(p.h[q]);
        acc[2 * q] = f.x;
        acc[2 * q + 1] = f.y;
      }
      for (; j < k; ++j) {
        p.u = reinterpret_cast<const uint4*>(src + int64_t(sr[j]) * d)[i];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const float2 f = __bfloat1622float2(p.h[q]);
          acc[2 * q] += f.x;
          acc[2 * q + 1] += f.y;
        }
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) p.h[q] = __floats2bfloat162_rn(acc[2 * q], acc[2 * q + 1]);
      o4[i] = p.u;
    }
  } else {
    for (int i = lane; i < d; i += 32) {
      int j = 0;
      float acc;
      if (accumulate) {
        acc = __bfloat162float(o[i]);
      } else {
        acc = __bfloat162float(src[int64_t(sr[0]) * d + i]);
        j = 1;
      }
      for (; j < k; ++j) acc += __bfloat162float(src[int64_t(sr[j]) * d + i]);
      o[i] = __float2bfloat16_rn(acc);
    }
  }
}

// slot_to_row_values: row_vals[r] = slot_vals[row_slot[r]]   (n = N·k, one thread per r)
__global__ void slot_to_row_values_kernel(float* __restrict__ row_vals,
                                          const float* __restrict__ slot_vals,
                                          const int32_t* __restrict__ row_slot, int n) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < n) row_vals[r] = slot_vals[row_slot[r]];
}

// row_to_slot_values: slot_vals[row_slot[r]] = row_vals[r]   (a permutation: one write per slot)
__global__ void row_to_slot_values_kernel(float* __restrict__ slot_vals,
                                          const float* __restrict__ row_vals,
                                          const int32_t* __restrict__ row_slot, int n) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < n) slot_vals[row_slot[r]] = row_vals[r];
}

// Number of slots N·k, checked to fit an int (the ops index slots and rows with int32).
int slot_count(const char* op, int N, int k) {
  const int64_t n = int64_t(N) * k;
  if (N < 0 || k < 1 || n > int64_t(INT32_MAX)) {
    throw Error(std::string("cuda::") + op + ": need N >= 0, k >= 1 and N·k < 2^31, got N = " +
                std::to_string(N) + ", k = " + std::to_string(k));
  }
  return int(n);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Host launchers (asynchronous on stream()).

void dispatch_plan(int32_t* offsets, int32_t* row_slot, int32_t* slot_row, const int32_t* ids,
                   int N, int k, int E) {
  const int n = slot_count("dispatch_plan", N, k);
  if (E < 1 || E > kMaxExperts) {
    throw Error("cuda::dispatch_plan: need 1 <= E <= " + std::to_string(kMaxExperts) +
                " (per-expert counters in shared memory), got E = " + std::to_string(E));
  }
  if (n == 0) {  // no slots: every offset is 0
    memset_zero(offsets, sizeof(int32_t) * (size_t(E) + 1));
    return;
  }
  const int nchunks = int(ceil_div(n, kChunk));
  const int64_t M = int64_t(E) * nchunks;
  int32_t* cnt = context().dispatch_counts.get_as<int32_t>(size_t(M));
  const size_t shared = sizeof(int32_t) * size_t(E);
  plan_count_kernel<<<unsigned(nchunks), 32, shared, stream()>>>(cnt, ids, n, E, nchunks);
  CUDA_CHECK_LAUNCH("plan_count_kernel");
  plan_scan_kernel<<<1, kScanThreads, 0, stream()>>>(cnt, offsets, M, nchunks, E);
  CUDA_CHECK_LAUNCH("plan_scan_kernel");
  plan_scatter_kernel<<<unsigned(nchunks), 32, shared, stream()>>>(row_slot, slot_row, cnt, ids, n,
                                                                   E, nchunks);
  CUDA_CHECK_LAUNCH("plan_scatter_kernel");
}

void gather_rows(bf16* dst, const bf16* src, const int32_t* row_slot, int N, int k, int d) {
  const int n = slot_count("gather_rows", N, k);
  if (n == 0 || d <= 0) return;
  const bool aligned = d % 8 == 0 && aligned16(dst) && aligned16(src);
  const auto kernel = aligned ? gather_rows_kernel<true> : gather_rows_kernel<false>;
  kernel<<<blocks_for(n, kRowWarps), kThreads, 0, stream()>>>(dst, src, row_slot, n, k, d);
  CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

void sum_slot_rows(bf16* dst, const bf16* src, const int32_t* slot_row, int N, int k, int d,
                   bool accumulate) {
  slot_count("sum_slot_rows", N, k);
  if (N == 0 || d <= 0) return;
  const bool aligned = d % 8 == 0 && aligned16(dst) && aligned16(src);
  const auto kernel = aligned ? sum_slot_rows_kernel<true> : sum_slot_rows_kernel<false>;
  kernel<<<blocks_for(N, kRowWarps), kThreads, 0, stream()>>>(dst, src, slot_row, N, k, d,
                                                              accumulate);
  CUDA_CHECK_LAUNCH("sum_slot_rows_kernel");
}

void slot_to_row_values(float* row_vals, const float* slot_vals, const int32_t* row_slot, int n) {
  if (n <= 0) return;
  slot_to_row_values_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(row_vals, slot_vals,
                                                                                row_slot, n);
  CUDA_CHECK_LAUNCH("slot_to_row_values_kernel");
}

void row_to_slot_values(float* slot_vals, const float* row_vals, const int32_t* row_slot, int n) {
  if (n <= 0) return;
  row_to_slot_values_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(slot_vals, row_vals,
                                                                                row_slot, n);
  CUDA_CHECK_LAUNCH("row_to_slot_values_kernel");
}

}  // namespace unipool::cuda
