// The CPU GEMM: C[M,N] (+)= op(A)[M,K] · op(B)[K,N], row-major. See gemm.h for the contract.
//
// ---- float: the Goto/BLIS scheme
// -----------------------------------------------------------------
//
//   for jc in [0, N) step NC                       column block of C
//     for pc in [0, K) step KC                     k block, ALWAYS in increasing order
//       pack op(B)[pc:pc+KC, jc:jc+NC] → Bp        shared by all threads (threads split the panels)
//       -- barrier --
//       parallel for tile (ic, jsub) of C[·, jc:jc+NC]:
//         pack op(A)[ic:ic+MC, pc:pc+KC] → Ap      thread-local (skipped if this thread just packed
//         it) for ir in [0, MC) step MR                an MR×KC sliver of Ap, hot in L1
//           for jr in jsub step NR                 a KC×NR sliver of Bp, streamed from L2
//             micro-kernel: acc[MR×NR] = Σ_{k<KC} Ap[k][·] ⊗ Bp[k][·]   (registers)
//                           C[tile] = acc (first k block, !accumulate) or C[tile] += acc
//       -- barrier (end of the parallel for) --
//
// Packed layouts: Ap is a run of MR-row slivers, each [KC][MR] (so the kernel reads MR consecutive
// floats per k and broadcasts them); Bp is a run of NR-column slivers, each [KC][NR] (the kernel
// loads NR/lanes vectors per k). Slivers at the right/bottom edge are zero-padded to MR/NR, so the
// micro-kernel always runs the full MR×NR computation; for an edge tile it writes the accumulators
// to a small local tile and copies only the valid part into C. The padding never mixes into real
// outputs: padded rows of Ap only reach padded rows of the tile, padded columns of Bp only padded
// columns.
//
// Micro-kernel (AVX-512): MR = 8 rows × NR = 32 columns = 16 zmm accumulators. Per k: 2 vector
// loads of Bp, 8 broadcasts of Ap, 16 FMAs. Zen 4 issues one 512-bit FMA per cycle (two 256-bit
// pipes) with a 4-cycle latency, so 16 independent accumulators keep it busy (12×32 and 14×32
// measured no faster). AVX2+FMA builds use 6×16 (ymm), others a portable 4×8 loop; same scheme,
// same determinism. Packing transposes (A not transposed, B transposed) go through 8×8 AVX register
// transposes.
//
// Tiling for threads: the rows of C are cut into row blocks of whole MR-slivers (<= MC rows, their
// number a multiple of 4 so two threads get equal shares); when M gives fewer than 8 row blocks,
// each NC column block is also cut into pieces of whole NR-slivers, so thin products (an expert
// with 16 tokens) still keep both cores busy. Products with M·N·K < 2^17 run on the calling thread.
//
// Measured (2-core EPYC Zen 4, ~115 GFLOP/s/core FMA peak; best of several runs on an idle
// machine), M×N×K: 4096×768×3072 and 4096×3072×768, all transpose variants: 2 threads 190-210
// GFLOP/s, 1 thread 97-105; 768×3072×4096 TN 204; 1024×51200×768 NT 203; 16×768×3072 NN 137;
// 50×768×3072 NT 143.
//
// WHY THE RESULT DOES NOT DEPEND ON THE THREAD COUNT. Every element C[i,j] is computed as
//     for each k block b = 0, 1, ... (fixed size KC, increasing):
//         s = 0;  for k in block b, increasing:  s = fma(op(A)[i,k], op(B)[k,j], s)
//         C[i,j] = s          (b == 0 and !accumulate)     or     C[i,j] = C[i,j] + s
// This sequence depends only on K, KC and the element's values, never on which thread computes
// which tile, nor on the tile sizes MC/NC/MR/NR (an edge tile goes through the very same kernel).
// Threads partition only the set of output tiles of one k block; the barriers order the k blocks.
// There are no atomics and no cross-thread reductions. The tiling itself is chosen from (M, N, K)
// alone.
//
// ---- double: a plain loop
// --------------------------------------------------------------------------- Used only by
// finite-difference tests: each C[i,j] is a single running sum over k in increasing order, then
// stored or added into C. Rows may be split among threads; the per-element order is fixed.
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <type_traits>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace unipool::cpu {
namespace {

// ---- a small vector abstraction: one SIMD register of floats
// --------------------------------------

#if defined(__AVX512F__)
constexpr int kLanes = 16;
using VecF = __m512;
inline VecF vzero() {
  return _mm512_setzero_ps();
}
inline VecF vload(const float* p) {
  return _mm512_loadu_ps(p);
}
inline VecF vload_aligned(const float* p) {
  return _mm512_load_ps(p);
}
inline void vstore(float* p, VecF v) {
  _mm512_storeu_ps(p, v);
}
inline VecF vbroadcast(const float* p) {
  return _mm512_set1_ps(*p);
}
inline VecF vfma(VecF a, VecF b, VecF c) {
  return _mm512_fmadd_ps(a, b, c);
}
inline VecF vadd(VecF a, VecF b) {
  return _mm512_add_ps(a, b);
}
constexpr int kMR = 8;  // micro-tile rows: 8 × 32 = 16 zmm accumulators
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kLanes = 8;
using VecF = __m256;
inline VecF vzero() {
  return _mm256_setzero_ps();
}
inline VecF vload(const float* p) {
  return _mm256_loadu_ps(p);
}
inline VecF vload_aligned(const float* p) {
  return _mm256_load_ps(p);
}
inline void vstore(float* p, VecF v) {
  _mm256_storeu_ps(p, v);
}
inline VecF vbroadcast(const float* p) {
  return _mm256_broadcast_ss(p);
}
inline VecF vfma(VecF a, VecF b, VecF c) {
  return _mm256_fmadd_ps(a, b, c);
}
inline VecF vadd(VecF a, VecF b) {
  return _mm256_add_ps(a, b);
}
constexpr int kMR = 6;  // micro-tile rows: 6 × 16 = 12 ymm accumulators
#else
// Portable fallback: a plain struct the compiler may vectorise. a*b+c may or may not be contracted
// to an fma depending on the flags; either way it is the same for every element and every thread.
constexpr int kLanes = 4;
struct VecF {
  float x[kLanes];
};
inline VecF vzero() {
  return VecF{};
}
inline VecF vload(const float* p) {
  VecF v;
  for (int l = 0; l < kLanes; ++l) v.x[l] = p[l];
  return v;
}
inline VecF vload_aligned(const float* p) {
  return vload(p);
}
inline void vstore(float* p, VecF v) {
  for (int l = 0; l < kLanes; ++l) p[l] = v.x[l];
}
inline VecF vbroadcast(const float* p) {
  VecF v;
  for (int l = 0; l < kLanes; ++l) v.x[l] = *p;
  return v;
}
inline VecF vfma(VecF a, VecF b, VecF c) {
  for (int l = 0; l < kLanes; ++l) c.x[l] = a.x[l] * b.x[l] + c.x[l];
  return c;
}
inline VecF vadd(VecF a, VecF b) {
  for (int l = 0; l < kLanes; ++l) a.x[l] += b.x[l];
  return a;
}
constexpr int kMR = 4;
#endif

// ---- blocking constants
// ------------------------------------------------------------------------------ Measured on the
// 2-core Zen 4 (see the numbers in the file header); all within a few % of each other for KC
// 256..512, MC 96..256, NC 512..2048, MR 6..14: these are comfortable, not knife-edge, choices.

constexpr int kNV = 2;                // vectors per micro-tile row
constexpr int kNR = kNV * kLanes;     // micro-tile columns (vector side)
constexpr int kKC = 384;              // k-block depth: fixes the summation order
constexpr int kMCMax = 144;           // most rows in a row block (Ap = MC×KC floats, 216 KB)
constexpr int kNC = 768;              // column block of C (Bp = KC×NC floats, 1.1 MB: L2)
constexpr int kRowBlockMultiple = 4;  // several row blocks: make their number a multiple of this
constexpr int kMinTiles = 8;          // split N too when there are fewer row blocks than this
constexpr long long kSerialWork = 1 << 17;  // M·N·K below which waking OpenMP threads does not pay
static_assert(kMCMax % kMR == 0, "MC must be a multiple of MR");
static_assert(kNC % kNR == 0, "NC must be a multiple of NR");

// ---- packing buffers: 64-byte aligned, grown on demand, never shrunk
// ---------------------------------

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(data_); }
  float* reserve(size_t count) {
    if (count > capacity_) {
      std::free(data_);
      data_ = nullptr;
      capacity_ = 0;
      size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
      data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!data_) throw std::bad_alloc();
      capacity_ = bytes / sizeof(float);
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

// Ap is private to each thread; Bp belongs to the thread that called gemm and is shared with the
// team.
AlignedBuffer& thread_packed_a() {
  static thread_local AlignedBuffer buffer;
  return buffer;
}
AlignedBuffer& caller_packed_b() {
  static thread_local AlignedBuffer buffer;
  return buffer;
}

struct Operands {
  bool transA, transB;
  int M, N, K;
  const float* A;
  int lda;
  const float* B;
  int ldb;
  bool accumulate;
  float* C;
  int ldc;
};

// ---- packing
// ----------------------------------------------------------------------------------------
//
// Two shapes of copy fill every packed sliver, each W (= MR or NR) wide and kc deep, dst[k][W]:
//   pack_rows:       dst[k][c] = src[k*ld + c]   the W values of one k are contiguous in the source
//   pack_transposed: dst[k][c] = src[c*ld + k]   each of the W lines is contiguous in k (8×8
//   transposes)
// Columns c >= `width` (past the edge of the matrix) are zero.

template <int W>
void pack_rows(const float* src, size_t ld, int width, int kc, float* dst) {
  if (width == W) {
    for (int k = 0; k < kc; ++k)
      for (int c = 0; c < W; ++c) dst[(size_t)k * W + c] = src[(size_t)k * ld + c];
    return;
  }
  for (int k = 0; k < kc; ++k) {
    int c = 0;
    for (; c < width; ++c) dst[(size_t)k * W + c] = src[(size_t)k * ld + c];
    for (; c < W; ++c) dst[(size_t)k * W + c] = 0.0f;
  }
}

#if defined(__AVX2__)
// dst[k*dst_ld + r] = src[r*ld + k] for an 8×8 block.
inline void transpose_8x8(const float* src, size_t ld, float* dst, size_t dst_ld) {
  __m256 r0 = _mm256_loadu_ps(src + 0 * ld), r1 = _mm256_loadu_ps(src + 1 * ld);
  __m256 r2 = _mm256_loadu_ps(src + 2 * ld), r3 = _mm256_loadu_ps(src + 3 * ld);
  __m256 r4 = _mm256_loadu_ps(src + 4 * ld), r5 = _mm256_loadu_ps(src + 5 * ld);
  __m256 r6 = _mm256_loadu_ps(src + 6 * ld), r7 = _mm256_loadu_ps(src + 7 * ld);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst + 0 * dst_ld, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * dst_ld, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * dst_ld, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * dst_ld, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * dst_ld, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * dst_ld, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * dst_ld, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * dst_ld, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

template <int W>
void pack_transposed(const float* src, size_t ld, int width, int kc, float* dst) {
  int c = 0;
#if defined(__AVX2__)
  for (; c + 8 <= width; c += 8) {
    const float* line = src + (size_t)c * ld;
    int k = 0;
    for (; k + 8 <= kc; k += 8) transpose_8x8(line + k, ld, dst + (size_t)k * W + c, W);
    for (; k < kc; ++k)
      for (int cc = 0; cc < 8; ++cc) dst[(size_t)k * W + c + cc] = line[(size_t)cc * ld + k];
  }
#endif
  for (; c < width; ++c)
    for (int k = 0; k < kc; ++k) dst[(size_t)k * W + c] = src[(size_t)c * ld + k];
  if (width < W)
    for (int k = 0; k < kc; ++k)
      for (int cc = width; cc < W; ++cc) dst[(size_t)k * W + cc] = 0.0f;
}

// The MR-row sliver of op(A) at rows i0..i0+rows-1, k = k0..k0+kc-1.
void pack_a_sliver(const Operands& op, int i0, int rows, int k0, int kc, float* dst) {
  if (op.transA)  // A stored [K,M]
    pack_rows<kMR>(op.A + (size_t)k0 * op.lda + i0, op.lda, rows, kc, dst);
  else  // A stored [M,K]
    pack_transposed<kMR>(op.A + (size_t)i0 * op.lda + k0, op.lda, rows, kc, dst);
}

// The NR-column sliver of op(B) at k = k0..k0+kc-1, columns j0..j0+cols-1.
void pack_b_sliver(const Operands& op, int k0, int kc, int j0, int cols, float* dst) {
  if (op.transB)  // B stored [N,K]
    pack_transposed<kNR>(op.B + (size_t)j0 * op.ldb + k0, op.ldb, cols, kc, dst);
  else  // B stored [K,N]
    pack_rows<kNR>(op.B + (size_t)k0 * op.ldb + j0, op.ldb, cols, kc, dst);
}

// ---- the micro-kernel
// ---------------------------------------------------------------------------------

// acc = Σ_k a[k][0..MR) ⊗ b[k][0..NR); then C[0..rows, 0..cols) = acc (overwrite) or += acc.
void micro_kernel(int kc, const float* __restrict a, const float* __restrict b, float* __restrict c,
                  int ldc, int rows, int cols, bool overwrite) {
  VecF acc[kMR][kNV];
#pragma GCC unroll 32
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < kNV; ++v) acc[r][v] = vzero();

  for (int k = 0; k < kc; ++k) {
    VecF bv[kNV];
#pragma GCC unroll 8
    for (int v = 0; v < kNV; ++v) bv[v] = vload_aligned(b + v * kLanes);
#pragma GCC unroll 32
    for (int r = 0; r < kMR; ++r) {
      VecF av = vbroadcast(a + r);
#pragma GCC unroll 8
      for (int v = 0; v < kNV; ++v) acc[r][v] = vfma(av, bv[v], acc[r][v]);
    }
    a += kMR;
    b += kNR;
  }

  if (rows == kMR && cols == kNR) {
#pragma GCC unroll 32
    for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < kNV; ++v) {
        float* dst = c + (size_t)r * ldc + v * kLanes;
        vstore(dst, overwrite ? acc[r][v] : vadd(vload(dst), acc[r][v]));
      }
    return;
  }
  // Edge tile: same arithmetic, then copy only the valid part. (Unrolled like the loops above:
  // an acc[r][v] read at a run-time index makes GCC keep acc in memory and store every
  // accumulator at every k, which halved the AVX2 kernel's speed.)
  alignas(64) float tile[kMR * kNR];
#pragma GCC unroll 32
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < kNV; ++v) vstore(tile + r * kNR + v * kLanes, acc[r][v]);
  for (int r = 0; r < rows; ++r) {
    float* dst = c + (size_t)r * ldc;
    const float* src = tile + r * kNR;
    if (overwrite)
      for (int j = 0; j < cols; ++j) dst[j] = src[j];
    else
      for (int j = 0; j < cols; ++j) dst[j] = dst[j] + src[j];
  }
}

// ---- tiling: a function of (M, N) only
// ----------------------------------------------------------------
//
// Rows of C are cut into MR-row slivers, slivers into `row_blocks` blocks of nearly equal size (at
// most kMCMax rows; the count rounded up to a multiple of kRowBlockMultiple so two threads get
// equal shares). When there are fewer than kMinTiles row blocks (small M), each NC column block is
// also cut into `splits` pieces of whole NR-slivers, so that thin products keep every core busy.

inline int ceil_div(int a, int b) {
  return (a + b - 1) / b;
}
// Start of piece p when `count` units are shared out as evenly as possible among `pieces` pieces.
inline int share_begin(int p, int count, int pieces) {
  return (int)((long long)p * count / pieces);
}

struct Tiling {
  int slivers;     // ceil(M / MR)
  int row_blocks;  // row block b holds slivers [share_begin(b), share_begin(b + 1))
  int max_rows;    // rows in the largest row block
  int row_begin(int b) const { return share_begin(b, slivers, row_blocks) * kMR; }
};

Tiling choose_tiling(int M) {
  const int slivers = ceil_div(M, kMR);
  int blocks = ceil_div(slivers, kMCMax / kMR);
  if (blocks > 1)
    blocks = std::min(slivers, ceil_div(blocks, kRowBlockMultiple) * kRowBlockMultiple);
  return Tiling{slivers, blocks, ceil_div(slivers, blocks) * kMR};
}

inline int column_splits(int row_blocks, int panels) {
  if (row_blocks >= kMinTiles) return 1;
  return std::min(panels, ceil_div(kMinTiles, row_blocks));
}

// The whole blocked product, run by every thread of the team (see the scheme at the top).
void sgemm_blocked(const Operands& op, const Tiling& tiling, float* packed_b) {
  float* packed_a = thread_packed_a().reserve((size_t)tiling.max_rows * kKC);

  for (int jc = 0; jc < op.N; jc += kNC) {
    const int nc = std::min(kNC, op.N - jc);
    const int panels = ceil_div(nc, kNR);
    const int splits = column_splits(tiling.row_blocks, panels);
    const int tiles = tiling.row_blocks * splits;

    for (int pc = 0; pc < op.K; pc += kKC) {
      const int kc = std::min(kKC, op.K - pc);
      const bool overwrite = pc == 0 && !op.accumulate;

#pragma omp for schedule(static)
      for (int p = 0; p < panels; ++p) {
        const int j0 = jc + p * kNR;
        pack_b_sliver(op, pc, kc, j0, std::min(kNR, op.N - j0), packed_b + (size_t)p * kc * kNR);
      }  // implicit barrier: Bp is complete

      int packed_block = -1;  // the row block this thread's Ap holds for this k block
#pragma omp for schedule(static)
      for (int t = 0; t < tiles; ++t) {
        const int block = t / splits, split = t % splits;
        const int ic = tiling.row_begin(block);
        const int mc = std::min(tiling.row_begin(block + 1), op.M) - ic;
        if (block != packed_block) {
          for (int ir = 0; ir < mc; ir += kMR)
            pack_a_sliver(op, ic + ir, std::min(kMR, mc - ir), pc, kc, packed_a + (size_t)ir * kc);
          packed_block = block;
        }
        const int p_begin = share_begin(split, panels, splits);
        const int p_end = share_begin(split + 1, panels, splits);
        for (int ir = 0; ir < mc; ir += kMR) {
          const float* a_sliver = packed_a + (size_t)ir * kc;
          const int rows = std::min(kMR, mc - ir);
          for (int p = p_begin; p < p_end; ++p) {
            const int j0 = jc + p * kNR;
            micro_kernel(kc, a_sliver, packed_b + (size_t)p * kc * kNR,
                         op.C + (size_t)(ic + ir) * op.ldc + j0, op.ldc, rows,
                         std::min(kNR, op.N - j0), overwrite);
          }
        }
      }  // implicit barrier: nobody reads Bp any more
    }
  }
}

void sgemm(const Operands& op) {
  const Tiling tiling = choose_tiling(op.M);
  const int max_panels = ceil_div(std::min(op.N, kNC), kNR);
  float* packed_b = caller_packed_b().reserve((size_t)max_panels * kNR * kKC);
  const long long work = (long long)op.M * op.N * op.K;
  const int max_tiles = tiling.row_blocks * column_splits(tiling.row_blocks, max_panels);
  const bool parallel = work >= kSerialWork && max_tiles > 1;
  // Always open a region (of one thread when !parallel): the `omp for` loops inside must bind to a
  // team of this call, never to an enclosing parallel region of the caller.
#pragma omp parallel if (parallel)
  sgemm_blocked(op, tiling, packed_b);
}

// ---- double: straightforward, deterministic
// ------------------------------------------------------------

// Row i of C: one running sum per column, k increasing (the same order whether or not B is
// transposed).
void dgemm(bool transA, bool transB, int M, int N, int K, const double* A, int lda, const double* B,
           int ldb, bool accumulate, double* C, int ldc) {
  const long long work = (long long)M * N * K;
#pragma omp parallel for schedule(static) if (work >= kSerialWork)
  for (int i = 0; i < M; ++i) {
    double* c_row = C + (size_t)i * ldc;
    for (int j = 0; j < N; ++j) {
      double sum = 0.0;
      for (int k = 0; k < K; ++k) {
        const double a = transA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
        const double b = transB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
        sum = std::fma(a, b, sum);
      }
      c_row[j] = accumulate ? c_row[j] + sum : sum;
    }
  }
}

}  // namespace

template <typename T>
void gemm(bool transA, bool transB, int M, int N, int K, const T* A, int lda, const T* B, int ldb,
          bool accumulate, T* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int i = 0; i < M; ++i) std::fill(C + (size_t)i * ldc, C + (size_t)i * ldc + N, T(0));
    return;
  }
  if constexpr (std::is_same_v<T, float>)
    sgemm(Operands{transA, transB, M, N, K, A, lda, B, ldb, accumulate, C, ldc});
  else
    dgemm(transA, transB, M, N, K, A, lda, B, ldb, accumulate, C, ldc);
}

template void gemm<float>(bool, bool, int, int, int, const float*, int, const float*, int, bool,
                          float*, int);
template void gemm<double>(bool, bool, int, int, int, const double*, int, const double*, int, bool,
                           double*, int);

}  // namespace unipool::cpu
