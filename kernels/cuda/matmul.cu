// CUDA matrix products (kernels/cuda/ops.h, "matrix products"; CPU oracle: kernels/cpu/matmul.h).
//
//   matmul_forward / _backward_input / _backward_weight    cuBLASLt, bf16 operands, fp32 sums
//   router_logits_forward / _backward                      handwritten fp32 tiles (CUDA cores)
//   grouped_matmul_forward / _backward_input / _weight     handwritten bf16 tensor-core (WMMA)
//                                                          tiles, one launch over all experts
//
// All tensors are row-major; a weight W is stored [O, I] (out, in) like a linear layer's.
// DETERMINISM: no atomics. Every output element is written by one thread after a sum whose order
// depends on the shapes alone (the router weight gradient sums fixed token chunks, then adds the
// chunk partials in chunk order); cuBLASLt runs one cached algorithm per shape (see below).
#include <cublasLt.h>
#include <mma.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace unipool::cuda {

namespace {

// -------------------------------------------------------------------------------------------------
// Shared host helpers.

std::string shape_string(const char* names, std::initializer_list<int64_t> values) {
  // names: "N,I,O" → "N 3, I 8, O 16"
  std::string out, name;
  auto it = values.begin();
  for (const char* c = names;; ++c) {
    if (*c == ',' || *c == '\0') {
      if (!out.empty()) out += ", ";
      out += name + " " + std::to_string(it == values.end() ? 0 : *it++);
      name.clear();
      if (*c == '\0') break;
    } else {
      name += *c;
    }
  }
  return out;
}

void check_non_negative(const char* op, const char* names, std::initializer_list<int64_t> values) {
  for (int64_t v : values) {
    if (v < 0)
      throw Error(std::string(op) + ": negative size (" + shape_string(names, values) + ")");
  }
}

// =================================================================================================
// Part 1. The dense products through cuBLASLt.
//
// Row-major ↔ column-major: a row-major [R, C] matrix is the column-major [C, R] matrix with
// leading dimension C, so each product is asked of cuBLASLt (column-major
// D[m,n] = op(A)[m,k]·op(B)[k,n]) on the transposed problem:
//   forward          outᵀ[O,N]  = (W as [I,O])ᵀ · inᵀ[I,N]     m=O n=N k=I  A=W  (T)  B=in   (N)
//   backward_input   dInᵀ[I,N]  = (W as [I,O])  · dOutᵀ[O,N]   m=I n=N k=O  A=W  (N)  B=dOut (N)
//   backward_weight  dWᵀ[I,O]  += inᵀ[I,N] · (dOutᵀ[O,N])ᵀ     m=I n=O k=N  A=in (N)  B=dOut (T)
// A and B are bf16; the compute type is CUBLAS_COMPUTE_32F with fp32 alpha/beta; C = D (in place)
// is bf16 for the forward and input gradient (accumulate → beta = 1: out = bf16(acc + out), one
// rounding) and fp32 for the weight gradient (beta = 1 always).
//
// Why this is bitwise reproducible. The cuBLAS documentation ("Results reproducibility") promises
// bitwise identical results run to run for one toolkit version on GPUs of the same architecture and
// SM count, as long as a single stream is active or, with several streams, when cublasLtMatmul is
// given a user-owned workspace (the multi-stream nondeterminism comes from the library choosing
// internal workspaces). Here every call goes to the one stream cuda::stream() through
// cublasLtMatmul with our own fixed 32 MiB workspace, and the algorithm is chosen ONCE per
// (op, shape, pointer alignments) by cublasLtMatmulAlgoGetHeuristic and cached: a shape always runs
// the same kernel with the same split of the k-sum, and the heuristic is never asked again (its
// answer could depend on things like free workspace). The alignments are in the key because the
// heuristic must not pick a kernel that needs more alignment than the pointers have; they are fixed
// by the model's buffer layout (cudaMalloc returns >= 256-byte aligned memory), so a run and its
// rerun pick the same algorithms. The reduction-scheme mask admits split-K only with partial sums
// kept in the fp32 compute type and reduced in a separate fixed pass (COMPUTE_TYPE), besides no
// split-K at all: INPLACE and OUTPUT_TYPE add partials in the output type (bf16-rounded partial
// sums, against docs/model.md §Numerics by backend). Not reproducible across toolkit versions or GPU kinds (documented too).

void check_cublas(cublasStatus_t status, const char* expr, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw Error(std::string(file) + ":" + std::to_string(line) + ": cuBLASLt call " + expr +
                " failed: " + cublasLtGetStatusName(status) + " (" +
                cublasLtGetStatusString(status) + ")");
  }
}
#define CUBLASLT_CHECK(expr) check_cublas((expr), #expr, __FILE__, __LINE__)

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// The one cuBLASLt handle (created on first use, never destroyed, like the stream).
cublasLtHandle_t lt_handle() {
  static cublasLtHandle_t handle = [] {
    cublasLtHandle_t created = nullptr;
    CUBLASLT_CHECK(cublasLtCreate(&created));
    return created;
  }();
  return handle;
}


enum class DenseOp : int { kForward = 0, kBackwardInput = 1, kBackwardWeight = 2 };
const char* dense_op_name(DenseOp op) {
  switch (op) {
    case DenseOp::kForward:
      return "matmul_forward";
    case DenseOp::kBackwardInput:
      return "matmul_backward_input";
    default:
      return "matmul_backward_weight";
  }
}

// The largest power of two ≤ 256 dividing the address (what the heuristic may assume).
uint32_t pointer_alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align >>= 1;
  return align;
}

// A cached plan: descriptors and the algorithm of one (op, shape, alignments). Kept for the whole
// process (never destroyed, like the handle).
struct DensePlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // c is also D
  cublasLtMatmulAlgo_t algo{};
};

using DenseKey = std::tuple<int, int, int, int, uint32_t, uint32_t, uint32_t>;

void destroy_dense_plan(DensePlan& p) {  // on a failed plan only: successful plans live forever
  if (p.a != nullptr) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b != nullptr) cublasLtMatrixLayoutDestroy(p.b);
  if (p.c != nullptr) cublasLtMatrixLayoutDestroy(p.c);
  if (p.desc != nullptr) cublasLtMatmulDescDestroy(p.desc);
}

// The descriptors of one product and the algorithm the heuristic ranks first for it.
void fill_dense_plan(DensePlan& p, DenseOp op, int N, int I, int O, uint32_t align_a,
                     uint32_t align_b, uint32_t align_c) {
  const cublasOperation_t kN = CUBLAS_OP_N, kT = CUBLAS_OP_T;
  cublasOperation_t trans_a = kN, trans_b = kN;
  CUBLASLT_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Column-major layouts (type, rows, cols, leading dimension); see the table above.
  switch (op) {
    case DenseOp::kForward:  // A = W [I,O] (T), B = in [I,N], D = out [O,N]
      trans_a = kT;
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, uint64_t(I), uint64_t(O), I));
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, uint64_t(I), uint64_t(N), I));
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_16BF, uint64_t(O), uint64_t(N), O));
      break;
    case DenseOp::kBackwardInput:  // A = W [I,O], B = dOut [O,N], D = dIn [I,N]
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, uint64_t(I), uint64_t(O), I));
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, uint64_t(O), uint64_t(N), O));
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_16BF, uint64_t(I), uint64_t(N), I));
      break;
    case DenseOp::kBackwardWeight:  // A = in [I,N], B = dOut [O,N] (T), D = dW [I,O] fp32
      trans_b = kT;
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, uint64_t(I), uint64_t(N), I));
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, uint64_t(O), uint64_t(N), O));
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, uint64_t(I), uint64_t(O), I));
      break;
  }
  CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                sizeof(trans_a)));
  CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                                sizeof(trans_b)));

  struct Preference {  // destroyed on every path
    cublasLtMatmulPreference_t pref = nullptr;
    ~Preference() {
      if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
    }
  } pr;
  CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pr.pref));
  const uint64_t workspace = kWorkspaceBytes;
  const uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;  // or none (always allowed)
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pr.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pr.pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction, sizeof(reduction)));
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pr.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pr.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pr.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pr.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c)));

  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  CUBLASLT_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_handle(), p.desc, p.a, p.b, p.c, p.c, pr.pref, 1,
                                                &result, &returned));
  if (returned < 1 || result.state != CUBLAS_STATUS_SUCCESS) {
    throw Error(
        std::string(dense_op_name(op)) +
        ": cublasLtMatmulAlgoGetHeuristic found no algorithm for " +
        shape_string("N,I,O,align A,align B,align C", {N, I, O, align_a, align_b, align_c}));
  }
  p.algo = result.algo;
}

DensePlan make_dense_plan(DenseOp op, int N, int I, int O, uint32_t align_a, uint32_t align_b,
                          uint32_t align_c) {
  DensePlan p;
  try {
    fill_dense_plan(p, op, N, I, O, align_a, align_b, align_c);
  } catch (...) {
    destroy_dense_plan(p);
    throw;
  }
  return p;
}

// The plan of (op, shape, alignments): made on first use, then always the same one.
const DensePlan& dense_plan(DenseOp op, int N, int I, int O, const void* A, const void* B,
                            const void* C) {
  static std::mutex mutex;
  static std::map<DenseKey, DensePlan> plans;
  const uint32_t aa = pointer_alignment(A), ab = pointer_alignment(B), ac = pointer_alignment(C);
  const DenseKey key{int(op), N, I, O, aa, ab, ac};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_dense_plan(op, N, I, O, aa, ab, ac)).first;
  return it->second;
}

// D = alpha·op(A)·op(B) + beta·C with C = D, on stream(), with the cached plan.
void run_dense(DenseOp op, void* D, const void* A, const void* B, int N, int I, int O, float beta) {
  const DensePlan& p = dense_plan(op, N, I, O, A, B, D);
  void* workspace = context().lt_workspace.get(kWorkspaceBytes);
  const float alpha = 1.0f;
  CUBLASLT_CHECK(cublasLtMatmul(lt_handle(), p.desc, &alpha, A, p.a, B, p.b, &beta, D, p.c, D, p.c,
                                &p.algo, workspace, kWorkspaceBytes, stream()));
}

// =================================================================================================
// Part 2. Router logits: fp32 tiled products on CUDA cores (R is small: 8..128).
//
// One helper computes a BM×BN tile of C[m,n] = Σ_k A(m,k)·B(n,k) with 256 threads as a 16×16 grid;
// thread (ty, tx) owns C[m0 + ty + 16a, n0 + tx + 16b]. Operand tiles of 32 k are staged in shared
// memory as floats, transposed to [k][m] / [k][n]. An operand is stored either "mk" (A(m,k) at
// A[m·lda + k]) or "km" (A[k·lda + m]); the staging loop follows the contiguous index so global
// reads coalesce. Out-of-range elements read as 0. The sum runs over k in increasing order (tiles
// in order, k in order inside a tile), one fmaf per term: fixed by the shapes alone.

constexpr int kRouterThreads = 256;
constexpr int kRouterBK = 32;
constexpr int kRouterChunk = 1024;  // tokens per dWr partial (router_logits_backward)

__device__ __forceinline__ float to_f32(float x) {
  return x;
}
__device__ __forceinline__ float to_f32(bf16 x) {
  return __bfloat162float(x);
}

template <int BM, int BN, bool kAmk, bool kBnk, typename TA, typename TB>
__device__ __forceinline__ void router_tile_product(float (&acc)[BM / 16][BN / 16],
                                                    const TA* __restrict__ A, int64_t lda, int M,
                                                    const TB* __restrict__ B, int64_t ldb, int Nn,
                                                    int m0, int n0, int k_begin, int k_end) {
  static_assert(BM % 16 == 0 && BN % 16 == 0, "tiles are multiples of the 16x16 thread grid");
  __shared__ float As[kRouterBK][BM + 1];  // +1: conflict-free transposed stores
  __shared__ float Bs[kRouterBK][BN + 1];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  for (int k0 = k_begin; k0 < k_end; k0 += kRouterBK) {
    for (int idx = tid; idx < BM * kRouterBK; idx += kRouterThreads) {
      const int m = kAmk ? idx / kRouterBK : idx % BM;
      const int kk = kAmk ? idx % kRouterBK : idx / BM;
      const int gm = m0 + m, gk = k0 + kk;
      float v = 0.f;
      if (gm < M && gk < k_end) v = to_f32(kAmk ? A[gm * lda + gk] : A[gk * lda + gm]);
      As[kk][m] = v;
    }
    for (int idx = tid; idx < BN * kRouterBK; idx += kRouterThreads) {
      const int n = kBnk ? idx / kRouterBK : idx % BN;
      const int kk = kBnk ? idx % kRouterBK : idx / BN;
      const int gn = n0 + n, gk = k0 + kk;
      float v = 0.f;
      if (gn < Nn && gk < k_end) v = to_f32(kBnk ? B[gn * ldb + gk] : B[gk * ldb + gn]);
      Bs[kk][n] = v;
    }
    __syncthreads();
#pragma unroll 4
    for (int kk = 0; kk < kRouterBK; ++kk) {
      float a[BM / 16], b[BN / 16];
#pragma unroll
      for (int i = 0; i < BM / 16; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < BN / 16; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < BM / 16; ++i) {
#pragma unroll
        for (int j = 0; j < BN / 16; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();  // the tile is read before the next one is staged
  }
}

// forward: z[t,r] = Σ_i xn[t,i]·Wr[r,i]        xn [N,d] bf16, Wr [R,d] fp32, z [N,R] fp32 =
// grid (ceil(N/64), ceil(R/32)), 256 threads; tile 64 tokens × 32 logits.
__global__ void __launch_bounds__(kRouterThreads)
    router_logits_forward_kernel(float* __restrict__ z, const bf16* __restrict__ xn,
                                 const float* __restrict__ Wr, int N, int d, int R) {
  constexpr int BM = 64, BN = 32;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  float acc[BM / 16][BN / 16] = {};
  router_tile_product<BM, BN, /*A mk*/ true, /*B nk*/ true>(acc, xn, d, N, Wr, d, R, m0, n0, 0, d);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < BM / 16; ++i) {
#pragma unroll
    for (int j = 0; j < BN / 16; ++j) {
      const int t = m0 + ty + 16 * i, r = n0 + tx + 16 * j;
      if (t < N && r < R) z[int64_t(t) * R + r] = acc[i][j];
    }
  }
}

// backward, input part: dxn[t,i] += Σ_r dz[t,r]·Wr[r,i]     dz [N,R] fp32, dxn [N,d] bf16 +=
// (read, add in fp32, round once). grid (ceil(N/64), ceil(d/64)), 256 threads; tile 64×64.
__global__ void __launch_bounds__(kRouterThreads)
    router_logits_backward_input_kernel(bf16* __restrict__ dxn, const float* __restrict__ dz,
                                        const float* __restrict__ Wr, int N, int d, int R) {
  constexpr int BM = 64, BN = 64;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  float acc[BM / 16][BN / 16] = {};
  // A(t, r) = dz[t·R + r] (mk); B(i, r) = Wr[r·d + i] (kn)
  router_tile_product<BM, BN, true, false>(acc, dz, R, N, Wr, d, d, m0, n0, 0, R);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < BM / 16; ++i) {
#pragma unroll
    for (int j = 0; j < BN / 16; ++j) {
      const int t = m0 + ty + 16 * i, c = n0 + tx + 16 * j;
      if (t < N && c < d) {
        bf16* p = dxn + int64_t(t) * d + c;
        *p = __float2bfloat16_rn(__bfloat162float(*p) + acc[i][j]);
      }
    }
  }
}

// backward, weight part, stage 1: part[c,r,i] = Σ_{t in chunk c} dz[t,r]·xn[t,i], chunk c = tokens
// [c·1024, min(N, (c+1)·1024)) in token order.  part [nchunks, R, d] (Scratch)
// grid (ceil(d/64), ceil(R/32), nchunks), 256 threads; tile 32 logits × 64 columns.
__global__ void __launch_bounds__(kRouterThreads)
    router_logits_backward_weight_partial_kernel(float* __restrict__ part,
                                                 const float* __restrict__ dz,
                                                 const bf16* __restrict__ xn, int N, int d, int R) {
  constexpr int BM = 32, BN = 64;
  const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM, c = blockIdx.z;
  const int t_begin = c * kRouterChunk, t_end = min(N, t_begin + kRouterChunk);
  float acc[BM / 16][BN / 16] = {};
  // A(r, t) = dz[t·R + r] (km); B(i, t) = xn[t·d + i] (kn)
  router_tile_product<BM, BN, false, false>(acc, dz, R, R, xn, d, d, m0, n0, t_begin, t_end);
  float* p = part + int64_t(c) * R * d;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < BM / 16; ++i) {
#pragma unroll
    for (int j = 0; j < BN / 16; ++j) {
      const int r = m0 + ty + 16 * i, col = n0 + tx + 16 * j;
      if (r < R && col < d) p[int64_t(r) * d + col] = acc[i][j];
    }
  }
}

// backward, weight part, stage 2: dWr[j] += Σ_c part[c,j], chunks in order; one thread per element
// j of the R·d gradient.
__global__ void router_logits_backward_weight_final_kernel(float* __restrict__ dWr,
                                                           const float* __restrict__ part,
                                                           int nchunks, int64_t n) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  float s = 0.f;
  for (int c = 0; c < nchunks; ++c) s += part[int64_t(c) * n + j];
  dWr[j] += s;
}


// =================================================================================================
// Part 3. Grouped expert products: bf16 WMMA (16x16x16, fp32 accumulators), one launch per call.
//
// Block = 128 threads = 4 warps in a 2×2 grid, output tile 64×64 (each warp 32×32 = 2×2
// fragments), k-steps of 32 staged through shared memory with 16-byte vector loads (I and O are
// multiples of 8, so a vector never straddles the end of a row; tile rows past the end of the range
// read zeros). After the k loop the accumulators go through shared memory and every output element
// is written by exactly one thread. Each accumulator sums its k-steps in increasing order with the
// same instruction sequence every run: deterministic.
//
// Forward and input gradient (varlen M): the rows of expert e are [offsets[e], offsets[e+1]); the
// host knows only the total, so the 1-D grid has (ceil(rows/64) + min(E, rows)) row-tile slots ×
// column tiles, an upper bound on Σ_e ceil(count_e/64). Block b takes slot b / col_tiles and
// column tile b % col_tiles (expert-major: all column tiles of a row tile, then the expert's next
// row tile, so the expert's weight stays in L2); it finds its (expert, row tile) by a block-wide
// scan of the per-expert tile counts (find_row_tile); slots past the total exit at once.
// Weight gradient (varlen K): 1-D grid E × O-tiles × I-tiles (expert-major); a block loops over its
// expert's rows in order, 32 at a time, then adds its tile into dW (+=).
//
// The offsets are not checked on the device (they come from dispatch_plan); ranges are clamped to
// [0, rows], so bad offsets give wrong results but never an out-of-bounds access.

namespace wmma = nvcuda::wmma;

constexpr int kGThreads = 128;
constexpr int kGWarps = kGThreads / 32;
constexpr int kGBM = 64, kGBN = 64, kGBK = 32;
constexpr int kLdK = kGBK + 8;   // smem tile stored [m or n][k]: 40 bf16 = 80 B rows
constexpr int kLdMN = kGBM + 8;  // smem tile stored [k][m or n]: 72 bf16 = 144 B rows
constexpr int kLdC = kGBN + 4;   // fp32 epilogue tile [m][n]: 68 floats = 272 B rows
constexpr int kTileElems = (kGBM * kLdK > kGBK * kLdMN) ? kGBM * kLdK : kGBK * kLdMN;
static_assert(kGBM == kGBN, "one smem size serves both operands");
static_assert(kLdK % 8 == 0 && kLdMN % 8 == 0 && kLdC % 4 == 0, "WMMA ldm and 16-byte rows");

using Accum = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Row range of one expert, clamped to [0, rows].
__device__ __forceinline__ void expert_rows(const int32_t* __restrict__ offsets, int rows, int e,
                                            int* r0, int* r1) {
  const int a = min(max(offsets[e], 0), rows);
  const int b = min(max(offsets[e + 1], a), rows);
  *r0 = a;
  *r1 = b;
}

struct RowTile {
  int expert, begin, end;  // rows [begin, end) of expert, 1..64 of them
};

// The slot-th row tile in expert-major order: expert e owns ceil(count_e/64) consecutive slots.
// Thread t sums the tile counts of experts [t·per, (t+1)·per); a block-wide exclusive scan of those
// sums tells which thread's range holds the slot; that thread walks its experts and publishes the
// tile. Integer arithmetic only. Call with the whole block; the result is block-uniform.
__device__ bool find_row_tile(const int32_t* __restrict__ offsets, int rows, int E, int slot,
                              RowTile* tile) {
  __shared__ int warp_totals[kGWarps];
  __shared__ RowTile found;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  if (tid == 0) found.expert = -1;
  const int per = (E + kGThreads - 1) / kGThreads;
  const int e_begin = min(E, tid * per), e_end = min(E, e_begin + per);
  int count = 0;
  for (int e = e_begin; e < e_end; ++e) {
    int r0, r1;
    expert_rows(offsets, rows, e, &r0, &r1);
    count += (r1 - r0 + kGBM - 1) / kGBM;
  }
  int inclusive = warp_inclusive_sum(count, lane);  // inclusive scan inside the warp ...
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();  // also orders found.expert = -1 before the write below
  for (int w = 0; w < warp; ++w) inclusive += warp_totals[w];  // ... then across warps
  const int exclusive = inclusive - count;
  if (slot >= exclusive && slot < inclusive) {  // exactly one thread when slot < total
    int first = exclusive;
    for (int e = e_begin; e < e_end; ++e) {
      int r0, r1;
      expert_rows(offsets, rows, e, &r0, &r1);
      const int n = (r1 - r0 + kGBM - 1) / kGBM;
      if (slot < first + n) {
        const int begin = r0 + (slot - first) * kGBM;
        found = RowTile{e, begin, min(r1, begin + kGBM)};
        break;
      }
      first += n;
    }
  }
  __syncthreads();
  *tile = found;
  return tile->expert >= 0;
}

// dst[o·dst_ld + c] = src[o·src_ld + c] for o < OUTER, c < INNER, as 16-byte vectors; zero where
// o >= outer_valid or c >= inner_valid. inner_valid is a multiple of 8 (or ≥ INNER), src and src_ld
// keep every vector 16-byte aligned.
template <int OUTER, int INNER>
__device__ __forceinline__ void load_tile(bf16* __restrict__ dst, int dst_ld,
                                          const bf16* __restrict__ src, int64_t src_ld,
                                          int outer_valid, int inner_valid) {
  constexpr int kVecsPerRow = INNER / 8;
  constexpr int kVecs = OUTER * kVecsPerRow;
  static_assert(INNER % 8 == 0 && kVecs % kGThreads == 0, "whole vectors, whole rounds");
#pragma unroll
  for (int v = threadIdx.x; v < kVecs; v += kGThreads) {
    const int o = v / kVecsPerRow, c = (v % kVecsPerRow) * 8;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if (o < outer_valid && c < inner_valid) {
      val = __ldg(reinterpret_cast<const uint4*>(src + o * src_ld + c));
    }
    *reinterpret_cast<uint4*>(dst + o * dst_ld + c) = val;
  }
}

// acc[i][j] += A_tile · B_tile over one k-step of 32 for warp (wm, wn): rows wm·32 + 16i, columns
// wn·32 + 16j. A stored [m][k] (row_major, ld kLdK) or [k][m] (col_major, ld kLdMN); B stored
// [n][k] (col_major, ld kLdK) or [k][n] (row_major, ld kLdMN).
template <typename ALayout, typename BLayout>
__device__ __forceinline__ void mma_k_step(Accum (&acc)[2][2], const bf16* As, const bf16* Bs,
                                           int wm, int wn) {
  constexpr bool kArow = std::is_same<ALayout, wmma::row_major>::value;
  constexpr bool kBcol = std::is_same<BLayout, wmma::col_major>::value;
  constexpr int lda = kArow ? kLdK : kLdMN;
  constexpr int ldb = kBcol ? kLdK : kLdMN;
#pragma unroll
  for (int kk = 0; kk < kGBK; kk += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, ALayout> a[2];
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, BLayout> b[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int m = wm * 32 + 16 * i;
      wmma::load_matrix_sync(a[i], kArow ? As + m * lda + kk : As + kk * lda + m, lda);
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int n = wn * 32 + 16 * j;
      wmma::load_matrix_sync(b[j], kBcol ? Bs + n * ldb + kk : Bs + kk * ldb + n, ldb);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
  }
}

__device__ __forceinline__ void zero_accumulators(Accum (&acc)[2][2]) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }
}

// The block's 64×64 fp32 tile into Cs [64][kLdC]; returns after a barrier (Cs readable by all).
__device__ __forceinline__ void accumulators_to_smem(float* Cs, Accum (&acc)[2][2], int wm,
                                                     int wn) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(Cs + (wm * 32 + 16 * i) * kLdC + wn * 32 + 16 * j, acc[i][j], kLdC,
                              wmma::mem_row_major);
    }
  }
  __syncthreads();
}

// dst[m·ld + c] = bf16(Cs[m][c]) for m < rows_valid, c < cols_valid (a multiple of 8), 8 at a time.
__device__ __forceinline__ void store_tile_bf16(bf16* __restrict__ dst, int64_t ld, const float* Cs,
                                                int rows_valid, int cols_valid) {
  constexpr int kVecsPerRow = kGBN / 8;
  for (int v = threadIdx.x; v < kGBM * kVecsPerRow; v += kGThreads) {
    const int m = v / kVecsPerRow, c = (v % kVecsPerRow) * 8;
    if (m >= rows_valid || c >= cols_valid) continue;
    const float4 lo = *reinterpret_cast<const float4*>(Cs + m * kLdC + c);
    const float4 hi = *reinterpret_cast<const float4*>(Cs + m * kLdC + c + 4);
    __align__(16) __nv_bfloat162 packed[4] = {
        __floats2bfloat162_rn(lo.x, lo.y), __floats2bfloat162_rn(lo.z, lo.w),
        __floats2bfloat162_rn(hi.x, hi.y), __floats2bfloat162_rn(hi.z, hi.w)};
    *reinterpret_cast<uint4*>(dst + m * ld + c) = *reinterpret_cast<const uint4*>(packed);
  }
}

// forward: out[r,o] = Σ_i in[r,i]·W[e,o,i] for the rows r of expert e      out [rows,O] =
// A = in rows of the tile, staged [m][k]; B = W_e rows n0.., staged [n][k] (matrix_b col_major).
__global__ void __launch_bounds__(kGThreads)
    grouped_matmul_forward_kernel(bf16* __restrict__ out, const bf16* __restrict__ in,
                                  const bf16* __restrict__ W, const int32_t* __restrict__ offsets,
                                  int rows, int E, int I, int O, int col_tiles) {
  __shared__ __align__(128) bf16 As[kTileElems];
  __shared__ __align__(128) bf16 Bs[kTileElems];
  __shared__ __align__(128) float Cs[kGBM * kLdC];
  const int slot = int(blockIdx.x / unsigned(col_tiles));
  const int n0 = int(blockIdx.x % unsigned(col_tiles)) * kGBN;
  RowTile tile;
  if (!find_row_tile(offsets, rows, E, slot, &tile)) return;  // block-uniform
  const int nrows = tile.end - tile.begin;
  const bf16* A = in + int64_t(tile.begin) * I;
  const bf16* B = W + (int64_t(tile.expert) * O + n0) * I;
  const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
  Accum acc[2][2];
  zero_accumulators(acc);
  for (int k0 = 0; k0 < I; k0 += kGBK) {
    load_tile<kGBM, kGBK>(As, kLdK, A + k0, I, nrows, I - k0);
    load_tile<kGBN, kGBK>(Bs, kLdK, B + k0, I, O - n0, I - k0);
    __syncthreads();
    mma_k_step<wmma::row_major, wmma::col_major>(acc, As, Bs, wm, wn);
    __syncthreads();
  }
  accumulators_to_smem(Cs, acc, wm, wn);
  store_tile_bf16(out + int64_t(tile.begin) * O + n0, O, Cs, nrows, O - n0);
}

// backward, input: dIn[r,i] = Σ_o dOut[r,o]·W[e,o,i] for the rows r of expert e   dIn [rows,I] =
// A = dOut rows of the tile, staged [m][k]; B = W_e[k0.., n0..], staged [k][n] (row_major).
__global__ void __launch_bounds__(kGThreads)
    grouped_matmul_backward_input_kernel(bf16* __restrict__ dIn, const bf16* __restrict__ dOut,
                                         const bf16* __restrict__ W,
                                         const int32_t* __restrict__ offsets, int rows, int E,
                                         int I, int O, int col_tiles) {
  __shared__ __align__(128) bf16 As[kTileElems];
  __shared__ __align__(128) bf16 Bs[kTileElems];
  __shared__ __align__(128) float Cs[kGBM * kLdC];
  const int slot = int(blockIdx.x / unsigned(col_tiles));
  const int n0 = int(blockIdx.x % unsigned(col_tiles)) * kGBN;
  RowTile tile;
  if (!find_row_tile(offsets, rows, E, slot, &tile)) return;  // block-uniform
  const int nrows = tile.end - tile.begin;
  const bf16* A = dOut + int64_t(tile.begin) * O;
  const bf16* B = W + int64_t(tile.expert) * O * I + n0;
  const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
  Accum acc[2][2];
  zero_accumulators(acc);
  for (int k0 = 0; k0 < O; k0 += kGBK) {
    load_tile<kGBM, kGBK>(As, kLdK, A + k0, O, nrows, O - k0);
    load_tile<kGBK, kGBN>(Bs, kLdMN, B + int64_t(k0) * I, I, O - k0, I - n0);
    __syncthreads();
    mma_k_step<wmma::row_major, wmma::row_major>(acc, As, Bs, wm, wn);
    __syncthreads();
  }
  accumulators_to_smem(Cs, acc, wm, wn);
  store_tile_bf16(dIn + int64_t(tile.begin) * I + n0, I, Cs, nrows, I - n0);
}

// backward, weight: dW[e,o,i] += Σ_{r of e, in order} dOut[r,o]·in[r,i]          dW [E,O,I] +=
// Block b: expert b / (o_tiles·i_tiles), then O-tile, then I-tile. A = dOut[r0.., m0..] staged
// [k][m] (matrix_a col_major), B = in[r0.., n0..] staged [k][n] (row_major); k = the expert's rows.
__global__ void __launch_bounds__(kGThreads)
    grouped_matmul_backward_weight_kernel(float* __restrict__ dW, const bf16* __restrict__ dOut,
                                          const bf16* __restrict__ in,
                                          const int32_t* __restrict__ offsets, int rows, int I,
                                          int O, int o_tiles, int i_tiles) {
  __shared__ __align__(128) bf16 As[kTileElems];
  __shared__ __align__(128) bf16 Bs[kTileElems];
  __shared__ __align__(128) float Cs[kGBM * kLdC];
  const unsigned tiles_per_expert = unsigned(o_tiles) * unsigned(i_tiles);
  const int e = int(blockIdx.x / tiles_per_expert);
  const unsigned rem = blockIdx.x % tiles_per_expert;
  const int m0 = int(rem / unsigned(i_tiles)) * kGBM;
  const int n0 = int(rem % unsigned(i_tiles)) * kGBN;
  int r0, r1;
  expert_rows(offsets, rows, e, &r0, &r1);
  if (r0 == r1) return;  // no rows: dW_e += 0 (block-uniform)
  const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
  Accum acc[2][2];
  zero_accumulators(acc);
  for (int k0 = r0; k0 < r1; k0 += kGBK) {
    load_tile<kGBK, kGBM>(As, kLdMN, dOut + int64_t(k0) * O + m0, O, r1 - k0, O - m0);
    load_tile<kGBK, kGBN>(Bs, kLdMN, in + int64_t(k0) * I + n0, I, r1 - k0, I - n0);
    __syncthreads();
    mma_k_step<wmma::col_major, wmma::row_major>(acc, As, Bs, wm, wn);
    __syncthreads();
  }
  accumulators_to_smem(Cs, acc, wm, wn);
  // dW tile += Cs, 4 floats per thread step (I multiple of 8: a float4 never straddles a row end).
  float* D = dW + (int64_t(e) * O + m0) * I + n0;
  const int rows_valid = O - m0, cols_valid = I - n0;
  constexpr int kVecsPerRow = kGBN / 4;
  for (int v = threadIdx.x; v < kGBM * kVecsPerRow; v += kGThreads) {
    const int m = v / kVecsPerRow, c = (v % kVecsPerRow) * 4;
    if (m >= rows_valid || c >= cols_valid) continue;
    const float4 add = *reinterpret_cast<const float4*>(Cs + m * kLdC + c);
    float4* p = reinterpret_cast<float4*>(D + int64_t(m) * I + c);
    float4 cur = *p;
    cur.x += add.x;
    cur.y += add.y;
    cur.z += add.z;
    cur.w += add.w;
    *p = cur;
  }
}

// Host checks shared by the grouped launchers.
void check_grouped(const char* op, int rows, int E, int I, int O,
                   std::initializer_list<const void*> pointers) {
  check_non_negative(op, "rows,E,I,O", {rows, E, I, O});
  if (I % 8 != 0 || O % 8 != 0) {
    throw Error(std::string(op) + ": I and O must be multiples of 8 (16-byte rows), got " +
                shape_string("I,O", {I, O}));
  }
  if (rows > 0 && E == 0) throw Error(std::string(op) + ": rows > 0 but no experts (E = 0)");
  for (const void* p : pointers) {
    if (!aligned16(p)) throw Error(std::string(op) + ": a tensor is not 16-byte aligned");
  }
}

unsigned grid_size(const char* op, int64_t blocks) {
  if (blocks > int64_t(0x7fffffff)) {
    throw Error(std::string(op) + ": " + std::to_string(blocks) + " blocks exceed the grid limit");
  }
  return unsigned(blocks);
}

// Row-tile slots of the varlen-M kernels: an upper bound on Σ_e ceil(count_e / 64).
int64_t row_tile_slots(int rows, int E) {
  return ceil_div(rows, kGBM) + std::min(E, rows);
}

}  // namespace

// -------------------------------------------------------------------------------------------------
// Launchers (ops.h).

void matmul_forward(bf16* out, const bf16* in, const bf16* W, int N, int I, int O,
                    bool accumulate) {
  check_non_negative("matmul_forward", "N,I,O", {N, I, O});
  if (N == 0 || O == 0) return;
  if (I == 0) {  // empty sum
    if (!accumulate) memset_zero(out, size_t(N) * O * sizeof(bf16));
    return;
  }
  run_dense(DenseOp::kForward, out, W, in, N, I, O, accumulate ? 1.0f : 0.0f);
}

void matmul_backward_input(bf16* dIn, const bf16* dOut, const bf16* W, int N, int I, int O,
                           bool accumulate) {
  check_non_negative("matmul_backward_input", "N,I,O", {N, I, O});
  if (N == 0 || I == 0) return;
  if (O == 0) {
    if (!accumulate) memset_zero(dIn, size_t(N) * I * sizeof(bf16));
    return;
  }
  run_dense(DenseOp::kBackwardInput, dIn, W, dOut, N, I, O, accumulate ? 1.0f : 0.0f);
}

void matmul_backward_weight(float* dW, const bf16* dOut, const bf16* in, int N, int I, int O) {
  check_non_negative("matmul_backward_weight", "N,I,O", {N, I, O});
  if (N == 0 || I == 0 || O == 0) return;
  run_dense(DenseOp::kBackwardWeight, dW, in, dOut, N, I, O, 1.0f);
}

void router_logits_forward(float* z, const bf16* xn, const float* Wr, int N, int d, int R) {
  check_non_negative("router_logits_forward", "N,d,R", {N, d, R});
  if (N == 0 || R == 0) return;  // d == 0: the kernel writes zeros (empty sum)
  if (ceil_div(R, 32) > 65535) {
    throw Error("router_logits_forward: " + shape_string("R", {R}) + " exceeds the grid");
  }
  const dim3 grid(unsigned(ceil_div(N, 64)), unsigned(ceil_div(R, 32)));
  router_logits_forward_kernel<<<grid, kRouterThreads, 0, stream()>>>(z, xn, Wr, N, d, R);
  CUDA_CHECK_LAUNCH("router_logits_forward_kernel");
}

void router_logits_backward(bf16* dxn, float* dWr, const float* dz, const bf16* xn, const float* Wr,
                            int N, int d, int R) {
  check_non_negative("router_logits_backward", "N,d,R", {N, d, R});
  if (N == 0 || d == 0 || R == 0) return;  // every update is += 0
  if (ceil_div(d, 64) > 65535) {
    throw Error("router_logits_backward: " + shape_string("d", {d}) + " exceeds the grid");
  }
  const dim3 grid_dx(unsigned(ceil_div(N, 64)), unsigned(ceil_div(d, 64)));
  router_logits_backward_input_kernel<<<grid_dx, kRouterThreads, 0, stream()>>>(dxn, dz, Wr, N, d,
                                                                                R);
  CUDA_CHECK_LAUNCH("router_logits_backward_input_kernel");

  const int nchunks = int(ceil_div(N, kRouterChunk));
  if (nchunks > 65535 || ceil_div(R, 32) > 65535) {
    throw Error("router_logits_backward: " + shape_string("N,R", {N, R}) + " exceeds the grid");
  }
  const int64_t n = int64_t(R) * d;
  float* part = context().router_dw_partials.get_as<float>(size_t(nchunks) * size_t(n));
  const dim3 grid_dw(unsigned(ceil_div(d, 64)), unsigned(ceil_div(R, 32)), unsigned(nchunks));
  router_logits_backward_weight_partial_kernel<<<grid_dw, kRouterThreads, 0, stream()>>>(
      part, dz, xn, N, d, R);
  CUDA_CHECK_LAUNCH("router_logits_backward_weight_partial_kernel");
  router_logits_backward_weight_final_kernel<<<unsigned(ceil_div(n, 256)), 256, 0, stream()>>>(
      dWr, part, nchunks, n);
  CUDA_CHECK_LAUNCH("router_logits_backward_weight_final_kernel");
}

void grouped_matmul_forward(bf16* out, const bf16* in, const bf16* W, const int32_t* offsets,
                            int rows, int E, int I, int O) {
  check_grouped("grouped_matmul_forward", rows, E, I, O, {out, in, W});
  if (rows == 0 || O == 0) return;
  if (I == 0) {  // empty sums
    memset_zero(out, size_t(rows) * O * sizeof(bf16));
    return;
  }
  const int col_tiles = int(ceil_div(O, kGBN));
  const unsigned blocks =
      grid_size("grouped_matmul_forward", row_tile_slots(rows, E) * int64_t(col_tiles));
  grouped_matmul_forward_kernel<<<blocks, kGThreads, 0, stream()>>>(out, in, W, offsets, rows, E, I,
                                                                    O, col_tiles);
  CUDA_CHECK_LAUNCH("grouped_matmul_forward_kernel");
}

void grouped_matmul_backward_input(bf16* dIn, const bf16* dOut, const bf16* W,
                                   const int32_t* offsets, int rows, int E, int I, int O) {
  check_grouped("grouped_matmul_backward_input", rows, E, I, O, {dIn, dOut, W});
  if (rows == 0 || I == 0) return;
  if (O == 0) {  // empty sums
    memset_zero(dIn, size_t(rows) * I * sizeof(bf16));
    return;
  }
  const int col_tiles = int(ceil_div(I, kGBN));
  const unsigned blocks =
      grid_size("grouped_matmul_backward_input", row_tile_slots(rows, E) * int64_t(col_tiles));
  grouped_matmul_backward_input_kernel<<<blocks, kGThreads, 0, stream()>>>(
      dIn, dOut, W, offsets, rows, E, I, O, col_tiles);
  CUDA_CHECK_LAUNCH("grouped_matmul_backward_input_kernel");
}

void grouped_matmul_backward_weight(float* dW, const bf16* dOut, const bf16* in,
                                    const int32_t* offsets, int rows, int E, int I, int O) {
  check_grouped("grouped_matmul_backward_weight", rows, E, I, O, {dW, dOut, in});
  if (rows == 0 || I == 0 || O == 0) return;
  const int o_tiles = int(ceil_div(O, kGBM)), i_tiles = int(ceil_div(I, kGBN));
  const unsigned blocks =
      grid_size("grouped_matmul_backward_weight", int64_t(E) * int64_t(o_tiles) * int64_t(i_tiles));
  grouped_matmul_backward_weight_kernel<<<blocks, kGThreads, 0, stream()>>>(
      dW, dOut, in, offsets, rows, I, O, o_tiles, i_tiles);
  CUDA_CHECK_LAUNCH("grouped_matmul_backward_weight_kernel");
}

}  // namespace unipool::cuda
