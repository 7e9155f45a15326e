// CUDA RoPE and causal GQA flash attention, forward and backward (CPU oracle and the math:
// kernels/cpu/attention.h; declarations: kernels/cuda/ops.h).
//
// Layout (as the CPU op): B sequences of T tokens, row r = b·T + t.
//   qkv  [B·T, C], C = (nh + 2·nkv)·hd; per row nh query heads, then nkv key heads, then nkv value
//        heads. Query head h reads KV group g = h / (nh/nkv).
//   out  [B·T, nh·hd], lse [B, nh, T] (fp32, natural log), scale = 1/sqrt(hd).
//
// The attention kernels follow FlashAttention-2: the T×T score matrix is never stored. Every
// matrix product runs on the tensor cores with mma.sync m16n8k16 (bf16 inputs, fp32 accumulators),
// operands staged in shared memory by cp.async and read with ldmatrix. A warp owns 16 rows of the
// result tile; the softmax statistics live in the registers of the row's four threads (a quad).
// Supported head dims: 32, 64, 128 (kernels are templates on HD); others throw unipool::Error.
//
// Fragment layouts of mma.m16n8k16 (lane = 4·gid + tig, gid = lane/4, tig = lane%4):
//   A 16×16 (row-major, two bf16 per register):
//     a[0] = (row gid, cols 2tig, 2tig+1)     a[1] = (row gid+8, cols 2tig, 2tig+1)
//     a[2] = (row gid, cols 2tig+8, 2tig+9)   a[3] = (row gid+8, cols 2tig+8, 2tig+9)
//   B 16×8: b[0] = (rows k 2tig, 2tig+1; col n gid)   b[1] = (rows k 2tig+8, 2tig+9; col n gid)
//   C 16×8 (fp32): c[0], c[1] = (row gid, cols 2tig, 2tig+1)   c[2], c[3] = (row gid+8, same)
// so the C fragments of two adjacent 8-column tiles are, packed to bf16, the A fragment of one
// 16-wide k-step (P and dS never leave the registers).
//
// DETERMINISM: no atomics. Every output element is owned by exactly one thread of one block, and
// every sum runs in an order fixed by the shapes: forward, key tiles in order; dQ, key tiles in
// order; dK/dV, the group's query heads in order, and for each the query tiles in order. The mma
// instruction sequence of a warp is fixed, so results are bitwise reproducible run to run.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace unipool::cuda {

namespace {

constexpr int kWarps = 4;  // warps per attention block; each warp owns 16 rows of the tile
constexpr int kThreads = 32 * kWarps;
constexpr int kRopeThreads = 256;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;


// ---- tile shapes per head dim -------------------------------------------------------------------
// LD = HD + 8: shared-memory row stride in elements. The 16-byte pad puts the 8 rows an ldmatrix
// phase reads in 8 different 16-byte bank groups (strides 80, 144, 272 bytes), so no conflicts.
template <int HD>
struct AttnTiles {
  static_assert(HD == 32 || HD == 64 || HD == 128, "head dim 32, 64 or 128");
  static constexpr int LD = HD + 8;
  // forward: BM query rows per block (16 per warp), BN keys per step
  static constexpr int kFwdBM = 16 * kWarps, kFwdBN = 64;
  // dK/dV: BKV keys per block (16 per warp), BQ query rows per step (fewer at HD 128: the dK, dV
  // accumulators already take HD floats per thread)
  static constexpr int kKvBKV = 16 * kWarps, kKvBQ = HD <= 64 ? 64 : 32;
  // dQ: BM query rows per block (16 per warp), BN keys per step
  static constexpr int kDqBM = 16 * kWarps, kDqBN = HD <= 64 ? 64 : 32;

  static constexpr size_t kFwdSmem = size_t(kFwdBM + 4 * kFwdBN) * LD * sizeof(bf16);
  static constexpr size_t kKvSmem =
      size_t(2 * kKvBKV + 4 * kKvBQ) * LD * sizeof(bf16) + 4 * kKvBQ * sizeof(float);
  static constexpr size_t kDqSmem = size_t(2 * kDqBM + 4 * kDqBN) * LD * sizeof(bf16);
};

// ---- PTX wrappers ------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte asynchronous copy global → shared; when !valid the 16 bytes are zero-filled and nothing
// is read (gmem must still be a valid address).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
// 4-byte asynchronous copy global → shared, zero-filled when !valid.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8×8 bf16 matrices from shared memory; lane l gives the address of row l%8 of matrix l/8.
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
// The same, each matrix transposed.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}

// c[16×8] += a[16×16] · b[16×8], bf16 inputs, fp32 accumulators.
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats → one register of two bf16 (lo in the low half: the lower column).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// ---- warp-level operand loads (all tiles in shared memory with row stride LD) -------------------
// A fragment of the 16×16 block at (row0, col0) of a row-major [rows][LD] tile.
template <int LD>
__device__ __forceinline__ void load_a(uint32_t a[4], const bf16* tile, int row0, int col0,
                                       int lane) {
  ldmatrix_x4(a, tile + (row0 + (lane & 15)) * LD + col0 + (lane >> 4) * 8);
}
// B fragments for n-tiles n0 and n0+8 of a k-step at k0, when the tile holds B TRANSPOSED, i.e.
// tile[n][k] (K for Q·Kᵀ, Q for K·Qᵀ, V for dO·Vᵀ, dO for V·dOᵀ).
// b[0], b[1]: n-tile n0;  b[2], b[3]: n-tile n0+8.
template <int LD>
__device__ __forceinline__ void load_b_nk(uint32_t b[4], const bf16* tile, int n0, int k0,
                                          int lane) {
  ldmatrix_x4(b, tile + (n0 + (lane & 7) + ((lane >> 4) << 3)) * LD + k0 + ((lane >> 3) & 1) * 8);
}
// The same when the tile holds B as is, tile[k][n] (V for P·V, K for dS·K, dO for Pᵀ·dO, Q for
// dSᵀ·Q): transposed on the load.
template <int LD>
__device__ __forceinline__ void load_b_kn(uint32_t b[4], const bf16* tile, int k0, int n0,
                                          int lane) {
  ldmatrix_x4_trans(b,
                    tile + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + n0 + (lane >> 4) * 8);
}

// acc[16 × 8·NT] += A[16 × 16·KS] (warp rows row0.. of tile a_tile) · B, B given transposed as
// b_tile[n][k] (n = 0 .. 8·NT−1).
template <int LD, int KS, int NT>
__device__ __forceinline__ void warp_mma_a_smem_bt(float (&acc)[NT][4], const bf16* a_tile,
                                                   int row0, const bf16* b_tile, int lane) {
  static_assert(NT % 2 == 0, "n-tiles come in pairs");
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    uint32_t a[4];
    load_a<LD>(a, a_tile, row0, kk * 16, lane);
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      load_b_nk<LD>(b, b_tile, np * 16, kk * 16, lane);
      mma_bf16(acc[2 * np], a, b[0], b[1]);
      mma_bf16(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// acc[16 × 8·NT] += X[16 × 16·KS] · B, X given as fp32 C fragments x[2·KS][4] (rounded to bf16
// here), B as is: b_tile[k][n] (k = 0 .. 16·KS−1).
template <int LD, int KS, int NT>
__device__ __forceinline__ void warp_mma_a_regs_b(float (&acc)[NT][4], const float (&x)[2 * KS][4],
                                                  const bf16* b_tile, int lane) {
  static_assert(NT % 2 == 0, "n-tiles come in pairs");
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    const uint32_t a[4] = {pack_bf16(x[2 * kk][0], x[2 * kk][1]),
                           pack_bf16(x[2 * kk][2], x[2 * kk][3]),
                           pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]),
                           pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3])};
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      load_b_kn<LD>(b, b_tile, kk * 16, np * 16, lane);
      mma_bf16(acc[2 * np], a, b[0], b[1]);
      mma_bf16(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// ---- cooperative tile loads (whole block; asynchronous: commit, wait, __syncthreads) -----------
// smem[r][0..HD) = head columns [col, col+HD) of row t0+r of one sequence (row stride ld elements,
// T rows), r < ROWS; rows at or past T are zero (so masked scores never meet garbage or NaN).
template <int ROWS, int HD>
__device__ __forceinline__ void load_tile_async(bf16* smem, const bf16* seq, int64_t ld, int col,
                                                int t0, int T) {
  constexpr int kChunks = HD / 8;  // 16-byte chunks per row
  constexpr int LD = AttnTiles<HD>::LD;
  for (int c = threadIdx.x; c < ROWS * kChunks; c += kThreads) {
    const int r = c / kChunks, k = c % kChunks;
    const int t = t0 + r;
    const bool valid = t < T;
    const bf16* src = valid ? seq + int64_t(t) * ld + col + k * 8 : seq;
    cp_async_16(smem + r * LD + k * 8, src, valid);
  }
}
// smem[i] = v[t0+i] for t0+i < T, else 0; i < N.
template <int N>
__device__ __forceinline__ void load_vec_async(float* smem, const float* v, int t0, int T) {
  for (int i = threadIdx.x; i < N; i += kThreads) {
    const bool valid = t0 + i < T;
    cp_async_4(smem + i, valid ? v + t0 + i : v, valid);
  }
}

// =================================================================================================
// RoPE.  qkv / dqkv [B·T, C], C = (nh+2·nkv)·hd, in place on the nrot = nh + nkv query and key
// heads (the v columns are not touched); cos, sin [T, hd/2] fp32; half = hd/2, t = r % T,
// c = cos[t,i], s = sin[t,i]. One thread per (row r, head, pair i < half), fp32 math:
//   forward (rotation by +angle):  x'[i]      = x[i]·c − x[i+half]·s
//                                  x'[i+half] = x[i+half]·c + x[i]·s
//   backward (transpose, −angle):  dx[i]      = dy[i]·c + dy[i+half]·s
//                                  dx[i+half] = dy[i+half]·c − dy[i]·s
template <bool kBackward>
__global__ void rope_kernel(bf16* __restrict__ qkv, const float* __restrict__ cos_table,
                            const float* __restrict__ sin_table, int T, int nrot, int64_t C,
                            int half, int64_t n) {
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int i = int(idx % half);
    const int64_t rest = idx / half;
    const int head = int(rest % nrot);
    const int64_t r = rest / nrot;
    const int t = int(r % T);
    bf16* x = qkv + r * C + int64_t(head) * 2 * half;
    const float c = cos_table[int64_t(t) * half + i];
    const float s = sin_table[int64_t(t) * half + i];
    const float x1 = __bfloat162float(x[i]), x2 = __bfloat162float(x[i + half]);
    if (kBackward) {
      x[i] = __float2bfloat16_rn(x1 * c + x2 * s);
      x[i + half] = __float2bfloat16_rn(x2 * c - x1 * s);
    } else {
      x[i] = __float2bfloat16_rn(x1 * c - x2 * s);
      x[i + half] = __float2bfloat16_rn(x2 * c + x1 * s);
    }
  }
}

// =================================================================================================
// Attention forward.  qkv [B·T, C] → out [B·T, nh·hd] (bf16), lse [B, nh, T] (fp32).
// For head h (group g), query t, keys s <= t:  z_s = scale·q_t·k_s,
//   lse_t = log Σ_s exp(z_s),   out_t = Σ_s exp(z_s − lse_t) v_s.
// Grid (query tiles, nh, B), longest (last) query tiles first; block kThreads, warp w owns query
// rows q0 + 16w .. +15. The block streams the key tiles 0 .. (last row of its tile)/BN through
// double-buffered shared memory (the load of tile j+1 overlaps the math of tile j). Per tile:
// S = Q·Kᵀ (tensor cores), causal mask, online softmax in base 2 (running max m, running sum l per
// row, the O accumulator rescaled by 2^(m_old − m_new)), O += P·V with P rounded to bf16.
// At the end out = O / l, lse = ln2·m + ln l.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse,
                             const bf16* __restrict__ qkv, int T, int nh, int nkv) {
  using Tiles = AttnTiles<HD>;
  constexpr int LD = Tiles::LD, BM = Tiles::kFwdBM, BN = Tiles::kFwdBN;
  constexpr int KS_D = HD / 16;  // k-steps over the head dim
  constexpr int NT_S = BN / 8;   // 8-wide n-tiles of a score row block
  constexpr int NT_O = HD / 8;   // 8-wide n-tiles of an output row block
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [BM][LD]
  bf16* sK = sQ + BM * LD;                       // [2][BN][LD]
  bf16* sV = sK + 2 * BN * LD;                   // [2][BN][LD]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int gid = lane / 4, tig = lane % 4;
  const int q_tile = int(gridDim.x) - 1 - int(blockIdx.x);
  const int h = blockIdx.y, b = blockIdx.z;
  const int g = h / (nh / nkv);
  const int64_t C = int64_t(nh + 2 * nkv) * HD;
  const int q0 = q_tile * BM;
  const bf16* seq = qkv + int64_t(b) * T * C;
  const int kcol = (nh + g) * HD, vcol = (nh + nkv + g) * HD;
  const int last_row = min(q0 + BM, T) - 1;
  const int n_ktiles = last_row / BN + 1;  // key tiles holding keys 0 .. last_row
  const float scale_log2 = (1.0f / sqrtf(float(HD))) * kLog2e;

  load_tile_async<BM, HD>(sQ, seq, C, h * HD, q0, T);
  load_tile_async<BN, HD>(sK, seq, C, kcol, 0, T);
  load_tile_async<BN, HD>(sV, seq, C, vcol, 0, T);
  cp_async_commit();

  float o[NT_O][4];
#pragma unroll
  for (int i = 0; i < NT_O; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY};  // running max (base-2 scaled scores), rows gid, gid+8
  float l_run[2] = {0.0f, 0.0f};            // this thread's part of the running sum
  uint32_t qf[KS_D][4];                     // Q fragments of the warp's rows, loaded once

  for (int j = 0; j < n_ktiles; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_ktiles) {  // prefetch tile j+1 into the buffer tile j-1 used (freed below)
      load_tile_async<BN, HD>(sK + (buf ^ 1) * BN * LD, seq, C, kcol, (j + 1) * BN, T);
      load_tile_async<BN, HD>(sV + (buf ^ 1) * BN * LD, seq, C, vcol, (j + 1) * BN, T);
      cp_async_commit();
      cp_async_wait<1>();  // tile j (and Q) have landed
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < KS_D; ++kk) load_a<LD>(qf[kk], sQ, warp * 16, kk * 16, lane);
    }
    const bf16* k_tile = sK + buf * BN * LD;
    const bf16* v_tile = sV + buf * BN * LD;
    const int k0 = j * BN;

    // S = Q·Kᵀ for the warp's 16 rows × BN keys
    float s[NT_S][4];
#pragma unroll
    for (int i = 0; i < NT_S; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KS_D; ++kk) {
#pragma unroll
      for (int np = 0; np < NT_S / 2; ++np) {
        uint32_t bfr[4];
        load_b_nk<LD>(bfr, k_tile, np * 16, kk * 16, lane);
        mma_bf16(s[2 * np], qf[kk], bfr[0], bfr[1]);
        mma_bf16(s[2 * np + 1], qf[kk], bfr[2], bfr[3]);
      }
    }

    // base-2 scores; keys after the row (causal) or past T are -inf. Only tiles reaching past the
    // block's first row or past T need the test.
    const bool need_mask = k0 + BN - 1 > q0 || k0 + BN > T;
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = q0 + warp * 16 + gid + (e >> 1) * 8;
        const int key = k0 + nt * 8 + tig * 2 + (e & 1);
        const float x = s[nt][e] * scale_log2;
        s[nt][e] = (need_mask && (key > row || key >= T)) ? -INFINITY : x;
      }
    }

    // online softmax, row half rh: row gid (elements 0, 1) and row gid+8 (elements 2, 3)
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      float mx = m_run[rh];
#pragma unroll
      for (int nt = 0; nt < NT_S; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * rh], s[nt][2 * rh + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));  // max over the row's quad
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
      const float m_use = mx == -INFINITY ? 0.0f : mx;  // a fully masked row stays all zero
      const float corr = exp2f(m_run[rh] - m_use);      // 0 on the first tile (m_run = -inf)
      m_run[rh] = mx;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < NT_S; ++nt) {
        const float p0 = exp2f(s[nt][2 * rh] - m_use);
        const float p1 = exp2f(s[nt][2 * rh + 1] - m_use);
        s[nt][2 * rh] = p0;
        s[nt][2 * rh + 1] = p1;
        sum += p0 + p1;
      }
      l_run[rh] = l_run[rh] * corr + sum;
#pragma unroll
      for (int dt = 0; dt < NT_O; ++dt) {
        o[dt][2 * rh] *= corr;
        o[dt][2 * rh + 1] *= corr;
      }
    }

    // O += P·V (P from the registers, rounded to bf16)
    warp_mma_a_regs_b<LD, BN / 16, NT_O>(o, s, v_tile, lane);
    __syncthreads();  // every warp is done with buffer `buf` before it is refilled
  }

#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    float l = l_run[rh];
    l += __shfl_xor_sync(kFullMask, l, 1);  // sum over the row's quad, fixed order
    l += __shfl_xor_sync(kFullMask, l, 2);
    const int row = q0 + warp * 16 + gid + rh * 8;
    if (row < T) {
      const float inv = 1.0f / l;
      bf16* orow = out + (int64_t(b) * T + row) * (int64_t(nh) * HD) + h * HD;
#pragma unroll
      for (int dt = 0; dt < NT_O; ++dt) {
        *reinterpret_cast<__nv_bfloat162*>(orow + dt * 8 + tig * 2) =
            __floats2bfloat162_rn(o[dt][2 * rh] * inv, o[dt][2 * rh + 1] * inv);
      }
      if (tig == 0) lse[(int64_t(b) * nh + h) * T + row] = m_run[rh] * kLn2 + logf(l);
    }
  }
}

// =================================================================================================
// Attention backward (FlashAttention-2 split into three kernels). For head h (group g), query t,
// keys s <= t, with p and dS recomputed from q, k and the saved lse:
//   p_s  = exp(scale·q_t·k_s − lse_t),   D_t = dout_t·out_t,   ds_s = p_s·(dout_t·v_s − D_t)
//   dq_t = scale·Σ_s ds_s k_s
//   dk_s = scale·Σ_{h∈g} Σ_{t>=s} ds_s q_t,   dv_s = Σ_{h∈g} Σ_{t>=s} p_s dout_t
//
// (1) D [B, nh, T] (fp32, in scratch) = rowsum(dout ⊙ out) per head. One warp per (row, head):
//     the lanes' strided partial sums, then a fixed xor tree.
__global__ void attention_backward_delta_kernel(float* __restrict__ D,
                                                const bf16* __restrict__ dout,
                                                const bf16* __restrict__ out, int T, int nh, int hd,
                                                int64_t n_warps) {
  const int64_t w = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (w >= n_warps) return;  // the whole warp leaves together
  const int64_t row = w / nh;
  const int h = int(w % nh);
  const int64_t off = row * nh * hd + int64_t(h) * hd;
  float sum = 0.0f;
  for (int i = 2 * lane; i < hd; i += 64) {
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dout + off + i));
    const float2 o = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(out + off + i));
    sum += a.x * o.x + a.y * o.y;
  }
  sum = warp_sum(sum);
  if (lane == 0) {
    const int64_t b = row / T, t = row % T;
    D[(b * nh + h) * T + t] = sum;
  }
}

// (2) dK, dV [the k and v columns of dqkv] =. Grid (key tiles, nkv, B), key tile 0 (the most work)
//     first; warp w owns keys k0 + 16w .. +15 and all HD columns of their dK and dV (fp32
//     registers). The block loops over the group's query heads in order and, for each, over the
//     query tiles that can see its keys (first = k0/BQ .. last) in order, the Q / dO / lse / D
//     tiles double-buffered. Everything is computed transposed (rows = keys) so that Pᵀ and dSᵀ
//     are already A fragments:
//       Sᵀ = K·Qᵀ,  Pᵀ = exp2(scale·log2e·Sᵀ − log2e·lse),  dV += Pᵀ·dO,
//       dPᵀ = V·dOᵀ,  dSᵀ = Pᵀ ⊙ (dPᵀ − D),  dK += dSᵀ·Q;  at the end dK *= scale.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dkdv_kernel(bf16* __restrict__ dqkv, const bf16* __restrict__ dout,
                                   const bf16* __restrict__ qkv, const float* __restrict__ lse,
                                   const float* __restrict__ D, int T, int nh, int nkv) {
  using Tiles = AttnTiles<HD>;
  constexpr int LD = Tiles::LD, BKV = Tiles::kKvBKV, BQ = Tiles::kKvBQ;
  constexpr int KS_D = HD / 16;  // k-steps over the head dim
  constexpr int NT_Q = BQ / 8;   // 8-wide n-tiles over the query tile
  constexpr int NT_D = HD / 8;   // 8-wide n-tiles over the head dim
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);             // [BKV][LD]
  bf16* sV = sK + BKV * LD;                                 // [BKV][LD]
  bf16* sQ = sV + BKV * LD;                                 // [2][BQ][LD]
  bf16* sdO = sQ + 2 * BQ * LD;                             // [2][BQ][LD]
  float* sL = reinterpret_cast<float*>(sdO + 2 * BQ * LD);  // [2][BQ] lse
  float* sD = sL + 2 * BQ;                                  // [2][BQ] D

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int gid = lane / 4, tig = lane % 4;
  const int g = blockIdx.y, b = blockIdx.z;
  const int rep = nh / nkv;
  const int k0 = int(blockIdx.x) * BKV;
  const int64_t C = int64_t(nh + 2 * nkv) * HD, Cout = int64_t(nh) * HD;
  const bf16* seq = qkv + int64_t(b) * T * C;
  const bf16* dseq = dout + int64_t(b) * T * Cout;
  const int kcol = (nh + g) * HD, vcol = (nh + nkv + g) * HD;
  const int first_qt = k0 / BQ;                       // the first query tile with a row t >= k0
  const int per_head = (T + BQ - 1) / BQ - first_qt;  // query tiles per head, >= 1 as k0 < T
  const int n_steps = rep * per_head;
  const float scale = 1.0f / sqrtf(float(HD));
  const float scale_log2 = scale * kLog2e;

  // step i: query head g·rep + i / per_head, query tile first_qt + i % per_head
  auto issue_step = [&](int step, int buf) {
    const int h = g * rep + step / per_head;
    const int qs = (first_qt + step % per_head) * BQ;
    load_tile_async<BQ, HD>(sQ + buf * BQ * LD, seq, C, h * HD, qs, T);
    load_tile_async<BQ, HD>(sdO + buf * BQ * LD, dseq, Cout, h * HD, qs, T);
    load_vec_async<BQ>(sL + buf * BQ, lse + (int64_t(b) * nh + h) * T, qs, T);
    load_vec_async<BQ>(sD + buf * BQ, D + (int64_t(b) * nh + h) * T, qs, T);
  };

  load_tile_async<BKV, HD>(sK, seq, C, kcol, k0, T);
  load_tile_async<BKV, HD>(sV, seq, C, vcol, k0, T);
  issue_step(0, 0);
  cp_async_commit();

  float dk[NT_D][4], dv[NT_D][4];
#pragma unroll
  for (int i = 0; i < NT_D; ++i) {
    dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.0f;
    dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.0f;
  }

  for (int step = 0; step < n_steps; ++step) {
    const int buf = step & 1;
    if (step + 1 < n_steps) {  // prefetch into the buffer step-1 used (freed below)
      issue_step(step + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* q_tile = sQ + buf * BQ * LD;
    const bf16* do_tile = sdO + buf * BQ * LD;
    const float* l_tile = sL + buf * BQ;
    const float* d_tile = sD + buf * BQ;
    const int q0 = (first_qt + step % per_head) * BQ;

    // Sᵀ = K·Qᵀ: the warp's 16 keys × BQ queries
    float st[NT_Q][4];
#pragma unroll
    for (int i = 0; i < NT_Q; ++i) st[i][0] = st[i][1] = st[i][2] = st[i][3] = 0.0f;
    warp_mma_a_smem_bt<LD, KS_D, NT_Q>(st, sK, warp * 16, q_tile, lane);

    // Pᵀ, exactly 0 where the key is after the query or the query row is past T
#pragma unroll
    for (int nt = 0; nt < NT_Q; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + warp * 16 + gid + (e >> 1) * 8;
        const int qi = nt * 8 + tig * 2 + (e & 1);  // query index within the tile
        const int query = q0 + qi;
        const bool valid = query < T && key <= query;
        st[nt][e] = valid ? exp2f(st[nt][e] * scale_log2 - l_tile[qi] * kLog2e) : 0.0f;
      }
    }

    // dV += Pᵀ·dO
    warp_mma_a_regs_b<LD, BQ / 16, NT_D>(dv, st, do_tile, lane);

    // dPᵀ = V·dOᵀ, then dSᵀ = Pᵀ ⊙ (dPᵀ − D) in place
    float dpt[NT_Q][4];
#pragma unroll
    for (int i = 0; i < NT_Q; ++i) dpt[i][0] = dpt[i][1] = dpt[i][2] = dpt[i][3] = 0.0f;
    warp_mma_a_smem_bt<LD, KS_D, NT_Q>(dpt, sV, warp * 16, do_tile, lane);
#pragma unroll
    for (int nt = 0; nt < NT_Q; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = nt * 8 + tig * 2 + (e & 1);
        dpt[nt][e] = st[nt][e] * (dpt[nt][e] - d_tile[qi]);
      }
    }

    // dK += dSᵀ·Q
    warp_mma_a_regs_b<LD, BQ / 16, NT_D>(dk, dpt, q_tile, lane);
    __syncthreads();  // every warp is done with buffer `buf` before it is refilled
  }

  // write dK (scaled) and dV of the keys < T
#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    const int key = k0 + warp * 16 + gid + rh * 8;
    if (key < T) {
      bf16* drow = dqkv + (int64_t(b) * T + key) * C;
#pragma unroll
      for (int dt = 0; dt < NT_D; ++dt) {
        const int col = dt * 8 + tig * 2;
        *reinterpret_cast<__nv_bfloat162*>(drow + kcol + col) =
            __floats2bfloat162_rn(dk[dt][2 * rh] * scale, dk[dt][2 * rh + 1] * scale);
        *reinterpret_cast<__nv_bfloat162*>(drow + vcol + col) =
            __floats2bfloat162_rn(dv[dt][2 * rh], dv[dt][2 * rh + 1]);
      }
    }
  }
}

// (3) dQ [the q columns of dqkv] =. Grid (query tiles, nh, B), longest first; warp w owns query
//     rows q0 + 16w .. +15 (their lse and D in registers) and all HD columns of their dQ. The block
//     streams the key tiles 0 .. (last row)/BN in order, double-buffered:
//       S = Q·Kᵀ,  P = exp2(scale·log2e·S − log2e·lse),  dP = dO·Vᵀ,  dS = P ⊙ (dP − D),
//       dQ += dS·K;  at the end dQ *= scale.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dq_kernel(bf16* __restrict__ dqkv, const bf16* __restrict__ dout,
                                 const bf16* __restrict__ qkv, const float* __restrict__ lse,
                                 const float* __restrict__ D, int T, int nh, int nkv) {
  using Tiles = AttnTiles<HD>;
  constexpr int LD = Tiles::LD, BM = Tiles::kDqBM, BN = Tiles::kDqBN;
  constexpr int KS_D = HD / 16;  // k-steps over the head dim
  constexpr int NT_K = BN / 8;   // 8-wide n-tiles over the key tile
  constexpr int NT_D = HD / 8;   // 8-wide n-tiles over the head dim
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [BM][LD]
  bf16* sdO = sQ + BM * LD;                      // [BM][LD]
  bf16* sK = sdO + BM * LD;                      // [2][BN][LD]
  bf16* sV = sK + 2 * BN * LD;                   // [2][BN][LD]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int gid = lane / 4, tig = lane % 4;
  const int q_tile = int(gridDim.x) - 1 - int(blockIdx.x);
  const int h = blockIdx.y, b = blockIdx.z;
  const int g = h / (nh / nkv);
  const int64_t C = int64_t(nh + 2 * nkv) * HD, Cout = int64_t(nh) * HD;
  const int q0 = q_tile * BM;
  const bf16* seq = qkv + int64_t(b) * T * C;
  const bf16* dseq = dout + int64_t(b) * T * Cout;
  const int kcol = (nh + g) * HD, vcol = (nh + nkv + g) * HD;
  const int last_row = min(q0 + BM, T) - 1;
  const int n_ktiles = last_row / BN + 1;
  const float scale = 1.0f / sqrtf(float(HD));
  const float scale_log2 = scale * kLog2e;

  load_tile_async<BM, HD>(sQ, seq, C, h * HD, q0, T);
  load_tile_async<BM, HD>(sdO, dseq, Cout, h * HD, q0, T);
  load_tile_async<BN, HD>(sK, seq, C, kcol, 0, T);
  load_tile_async<BN, HD>(sV, seq, C, vcol, 0, T);
  cp_async_commit();

  // lse (base 2) and D of the thread's two rows (0 for rows past T: they are masked)
  float lse2[2], drow[2];
#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    const int row = q0 + warp * 16 + gid + rh * 8;
    const int64_t idx = (int64_t(b) * nh + h) * T + row;
    lse2[rh] = row < T ? lse[idx] * kLog2e : 0.0f;
    drow[rh] = row < T ? D[idx] : 0.0f;
  }

  float dq[NT_D][4];
#pragma unroll
  for (int i = 0; i < NT_D; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;

  for (int j = 0; j < n_ktiles; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_ktiles) {  // prefetch tile j+1 into the buffer tile j-1 used (freed below)
      load_tile_async<BN, HD>(sK + (buf ^ 1) * BN * LD, seq, C, kcol, (j + 1) * BN, T);
      load_tile_async<BN, HD>(sV + (buf ^ 1) * BN * LD, seq, C, vcol, (j + 1) * BN, T);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* k_tile = sK + buf * BN * LD;
    const bf16* v_tile = sV + buf * BN * LD;
    const int k0 = j * BN;

    // S = Q·Kᵀ → P (exactly 0 for keys after the row and rows past T)
    float s[NT_K][4];
#pragma unroll
    for (int i = 0; i < NT_K; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    warp_mma_a_smem_bt<LD, KS_D, NT_K>(s, sQ, warp * 16, k_tile, lane);
#pragma unroll
    for (int nt = 0; nt < NT_K; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = q0 + warp * 16 + gid + (e >> 1) * 8;
        const int key = k0 + nt * 8 + tig * 2 + (e & 1);
        const bool valid = row < T && key <= row;
        s[nt][e] = valid ? exp2f(s[nt][e] * scale_log2 - lse2[e >> 1]) : 0.0f;
      }
    }

    // dP = dO·Vᵀ, then dS = P ⊙ (dP − D) in place
    float dp[NT_K][4];
#pragma unroll
    for (int i = 0; i < NT_K; ++i) dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.0f;
    warp_mma_a_smem_bt<LD, KS_D, NT_K>(dp, sdO, warp * 16, v_tile, lane);
#pragma unroll
    for (int nt = 0; nt < NT_K; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[nt][e] = s[nt][e] * (dp[nt][e] - drow[e >> 1]);
    }

    // dQ += dS·K
    warp_mma_a_regs_b<LD, BN / 16, NT_D>(dq, dp, k_tile, lane);
    __syncthreads();  // every warp is done with buffer `buf` before it is refilled
  }

#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    const int row = q0 + warp * 16 + gid + rh * 8;
    if (row < T) {
      bf16* drow_ptr = dqkv + (int64_t(b) * T + row) * C + h * HD;
#pragma unroll
      for (int dt = 0; dt < NT_D; ++dt) {
        *reinterpret_cast<__nv_bfloat162*>(drow_ptr + dt * 8 + tig * 2) =
            __floats2bfloat162_rn(dq[dt][2 * rh] * scale, dq[dt][2 * rh + 1] * scale);
      }
    }
  }
}

// ---- host side ----------------------------------------------------------------------------------
void check_attention_args(const char* op, int B, int T, int nh, int nkv, int hd) {
  const std::string name(op);
  check(B >= 0 && T >= 0, name + ": B " + std::to_string(B) + " and T " + std::to_string(T) +
                              " must not be negative");
  check(nh > 0 && nkv > 0 && nh % nkv == 0, name + ": nh " + std::to_string(nh) +
                                                " must be a positive multiple of nkv " +
                                                std::to_string(nkv));
  check(hd == 32 || hd == 64 || hd == 128,
        name + ": head dim " + std::to_string(hd) + " is not supported (32, 64 or 128)");
  check(B <= 65535 && nh <= 65535, name + ": B " + std::to_string(B) + " and nh " +
                                       std::to_string(nh) + " must be at most 65535 (grid)");
}

void check_aligned16(const void* p, const char* op, const char* what) {
  check(aligned16(p), std::string(op) + ": " + what + " must be 16-byte aligned (cp.async)");
}

// Opts a kernel into more than 48 KiB of dynamic shared memory when it needs it.
template <typename Kernel>
void set_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  }
}

template <int HD>
void launch_attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int nh,
                              int nkv) {
  using Tiles = AttnTiles<HD>;
  set_smem(attention_forward_kernel<HD>, Tiles::kFwdSmem);
  const dim3 grid(unsigned(ceil_div(T, Tiles::kFwdBM)), unsigned(nh), unsigned(B));
  attention_forward_kernel<HD>
      <<<grid, kThreads, Tiles::kFwdSmem, stream()>>>(out, lse, qkv, T, nh, nkv);
  CUDA_CHECK_LAUNCH("attention_forward_kernel");
}

template <int HD>
void launch_attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                               const float* D, int B, int T, int nh, int nkv) {
  using Tiles = AttnTiles<HD>;
  set_smem(attention_backward_dkdv_kernel<HD>, Tiles::kKvSmem);
  const dim3 grid_kv(unsigned(ceil_div(T, Tiles::kKvBKV)), unsigned(nkv), unsigned(B));
  attention_backward_dkdv_kernel<HD>
      <<<grid_kv, kThreads, Tiles::kKvSmem, stream()>>>(dqkv, dout, qkv, lse, D, T, nh, nkv);
  CUDA_CHECK_LAUNCH("attention_backward_dkdv_kernel");

  set_smem(attention_backward_dq_kernel<HD>, Tiles::kDqSmem);
  const dim3 grid_q(unsigned(ceil_div(T, Tiles::kDqBM)), unsigned(nh), unsigned(B));
  attention_backward_dq_kernel<HD>
      <<<grid_q, kThreads, Tiles::kDqSmem, stream()>>>(dqkv, dout, qkv, lse, D, T, nh, nkv);
  CUDA_CHECK_LAUNCH("attention_backward_dq_kernel");
}

template <bool kBackward>
void launch_rope(bf16* qkv, const float* cos_table, const float* sin_table, int B, int T, int nh,
                 int nkv, int hd, const char* op) {
  check(B >= 0 && T >= 0 && nh >= 0 && nkv >= 0,
        std::string(op) + ": negative size (B " + std::to_string(B) + ", T " + std::to_string(T) +
            ", nh " + std::to_string(nh) + ", nkv " + std::to_string(nkv) + ")");
  check(hd > 0 && hd % 2 == 0,
        std::string(op) + ": head dim " + std::to_string(hd) + " must be positive and even");
  const int half = hd / 2, nrot = nh + nkv;
  const int64_t n = int64_t(B) * T * nrot * half;
  if (n == 0) return;
  const int64_t C = int64_t(nh + 2 * nkv) * hd;
  rope_kernel<kBackward><<<grid_stride_blocks(n, kRopeThreads), kRopeThreads, 0, stream()>>>(
      qkv, cos_table, sin_table, T, nrot, C, half, n);
  CUDA_CHECK_LAUNCH("rope_kernel");
}

// ---- decoding -----------------------------------------------------------------------------------
// attention_decode: one query row per head against a KV cache of Tlen positions (the generator's
// step; CPU twin attention_decode in kernels/cpu/attention.h). One block of kDecodeThreads per
// query head h, reading KV group g = h / (nh/nkv):
//   z_s = scale · Σ_i q_i k_s,i      (fp32, one thread per position s, i in order) → scratch[h]
//   m = max_s z_s,  p_s = exp(z_s − m),  Σ p   (block_max / block_sum: fixed trees)
//   out_i = (Σ_s p_s v_s,i, s in order) / Σ p  (one thread per column i)
// Any head dim; no atomics: every value is written by one thread after a sum in a fixed order.
constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = 32 * kDecodeWarps;

__global__ void __launch_bounds__(kDecodeThreads)
    attention_decode_kernel(bf16* __restrict__ out, const bf16* __restrict__ q,
                            const bf16* __restrict__ k, const bf16* __restrict__ v, int ld,
                            int Tlen, int nh, int nkv, int hd, float* __restrict__ scratch) {
  __shared__ float red[kDecodeWarps];
  const int h = blockIdx.x, g = h / (nh / nkv);
  const float scale = 1.0f / sqrtf(float(hd));
  float* z = scratch + int64_t(h) * (Tlen + 16);
  const bf16* qh = q + int64_t(h) * hd;
  float local_max = -INFINITY;
  for (int s = threadIdx.x; s < Tlen; s += kDecodeThreads) {
    const bf16* ks = k + int64_t(s) * ld + int64_t(g) * hd;
    float acc = 0.0f;
    for (int i = 0; i < hd; ++i) acc = fmaf(__bfloat162float(qh[i]), __bfloat162float(ks[i]), acc);
    z[s] = acc * scale;
    local_max = fmaxf(local_max, z[s]);
  }
  const float m = block_max<kDecodeWarps>(local_max, red);
  float local_sum = 0.0f;
  for (int s = threadIdx.x; s < Tlen; s += kDecodeThreads) {
    const float p = expf(z[s] - m);
    z[s] = p;
    local_sum += p;
  }
  const float sum = block_sum<kDecodeWarps>(local_sum, red);  // its barriers publish z
  for (int i = threadIdx.x; i < hd; i += kDecodeThreads) {
    const bf16* vi = v + int64_t(g) * hd + i;
    float acc = 0.0f;
    for (int s = 0; s < Tlen; ++s) acc = fmaf(z[s], __bfloat162float(vi[int64_t(s) * ld]), acc);
    out[int64_t(h) * hd + i] = __float2bfloat16(acc / sum);
  }
}

}  // namespace

// ---- ops.h entry points -------------------------------------------------------------------------
void rope_forward(bf16* qkv, const float* cos_table, const float* sin_table, int B, int T, int nh,
                  int nkv, int hd) {
  launch_rope<false>(qkv, cos_table, sin_table, B, T, nh, nkv, hd, "rope_forward");
}

void rope_backward(bf16* dqkv, const float* cos_table, const float* sin_table, int B, int T, int nh,
                   int nkv, int hd) {
  launch_rope<true>(dqkv, cos_table, sin_table, B, T, nh, nkv, hd, "rope_backward");
}

void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int nh, int nkv,
                       int hd) {
  check_attention_args("attention_forward", B, T, nh, nkv, hd);
  if (B == 0 || T == 0) return;
  check_aligned16(qkv, "attention_forward", "qkv");
  check_aligned16(out, "attention_forward", "out");
  switch (hd) {
    case 32:
      launch_attention_forward<32>(out, lse, qkv, B, T, nh, nkv);
      break;
    case 64:
      launch_attention_forward<64>(out, lse, qkv, B, T, nh, nkv);
      break;
    default:
      launch_attention_forward<128>(out, lse, qkv, B, T, nh, nkv);
      break;
  }
}

void attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                        const float* lse, int B, int T, int nh, int nkv, int hd) {
  check_attention_args("attention_backward", B, T, nh, nkv, hd);
  if (B == 0 || T == 0) return;
  check_aligned16(dqkv, "attention_backward", "dqkv");
  check_aligned16(dout, "attention_backward", "dout");
  check_aligned16(qkv, "attention_backward", "qkv");
  check_aligned16(out, "attention_backward", "out");
  const int64_t rows = int64_t(B) * T * nh;  // one D value per (b, h, t)
  float* D = context().attention_delta.get_as<float>(size_t(rows));
  constexpr int kDeltaWarps = 8;
  const int64_t blocks = ceil_div(rows, kDeltaWarps);
  check(blocks <= 0x7fffffff, "attention_backward: B·T·nh " + std::to_string(rows) + " too large");
  attention_backward_delta_kernel<<<unsigned(blocks), 32 * kDeltaWarps, 0, stream()>>>(
      D, dout, out, T, nh, hd, rows);
  CUDA_CHECK_LAUNCH("attention_backward_delta_kernel");
  switch (hd) {
    case 32:
      launch_attention_backward<32>(dqkv, dout, qkv, lse, D, B, T, nh, nkv);
      break;
    case 64:
      launch_attention_backward<64>(dqkv, dout, qkv, lse, D, B, T, nh, nkv);
      break;
    default:
      launch_attention_backward<128>(dqkv, dout, qkv, lse, D, B, T, nh, nkv);
      break;
  }
}

void attention_decode(bf16* out, const bf16* q, const bf16* k, const bf16* v, int ld, int Tlen,
                      int nh, int nkv, int hd, float* scratch) {
  check(Tlen >= 1 && hd >= 1 && nh >= 1 && nkv >= 1 && nh % nkv == 0 && nh <= 65535,
        "attention_decode: Tlen " + std::to_string(Tlen) + ", hd " + std::to_string(hd) + ", nh " +
            std::to_string(nh) + ", nkv " + std::to_string(nkv) +
            ": need Tlen, hd >= 1 and nh a multiple of nkv (at most 65535)");
  check(ld >= nkv * hd, "attention_decode: row stride ld " + std::to_string(ld) +
                            " is shorter than nkv·hd = " + std::to_string(nkv * hd));
  attention_decode_kernel<<<unsigned(nh), kDecodeThreads, 0, stream()>>>(out, q, k, v, ld, Tlen, nh,
                                                                          nkv, hd, scratch);
  CUDA_CHECK_LAUNCH("attention_decode_kernel");
}

}  // namespace unipool::cuda
