// CUDA router ops (fp32): softmax, sigmoid and NormRouter scores, top-k, expert counts, the
// balancing and z losses, the balancing bookkeeping and the UniPool-lock column ops (scale_columns,
// select_columns_forward/backward, map_ids). Contract: kernels/cuda/ops.h; math and CPU
// oracle: kernels/cpu/router.h (same names, same argument order).
//
// Mapping. The per-row ops run one warp per token row (kRowWarps rows per block); lane l handles
// the columns l, l+32, …, so a row sum is a fixed per-lane order followed by a fixed xor tree.
// Scalar results (the two losses, dsigma) add the per-row values in double over fixed chunks of
// kChunkRows rows (one block per chunk: warp w takes rows w, w+8, … of the chunk in order, then the
// 8 warp sums in warp order) into double partials in op-owned Scratch; one block then adds the
// partials (thread i: partials i, i+256, … in order, then a fixed tree) and writes the value.
// No float atomics: every result is bitwise reproducible run to run (expert_counts uses integer
// atomics, which are exact and order-free).
//
// Limits: any E >= 1 and 1 <= k <= E, except expert_counts (E <= kMaxCountExperts, its shared
// histogram). Ids from topk_forward are always in [0, E) (a NaN score ranks as −inf); the ops that
// read ids skip an id outside [0, E) instead of touching memory out of bounds.
#include <algorithm>
#include <climits>
#include <cmath>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace unipool::cuda {

namespace {

constexpr int kThreads = 256;             // threads per block (all kernels here)
constexpr int kRowWarps = kThreads / 32;  // token rows per block of the warp-per-row kernels
constexpr int kChunkRows = 64;            // rows per partial of the scalar sums
constexpr int kMaxCountExperts = 4096;    // expert_counts: E ints of shared memory

void check_rows(const char* op, int N, int E) {
  if (N < 0 || E < 1) {
    throw Error(std::string("cuda::") + op + ": need N >= 0 and E >= 1, got N = " +
                std::to_string(N) + ", E = " + std::to_string(E));
  }
}

// The chunk partial of a scalar sum: each warp passes the sum of its rows (any lane's copy; lane 0
// is used); partial[blockIdx.x] = Σ_w warp_acc[w] in warp order. Called by every thread of the
// block (contains __syncthreads).
__device__ __forceinline__ void store_chunk_partial(double* partial, double warp_acc) {
  __shared__ double warp_part[kRowWarps];
  if (threadIdx.x % 32 == 0) warp_part[threadIdx.x / 32] = warp_acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0;
    for (int w = 0; w < kRowWarps; ++w) s += warp_part[w];
    partial[blockIdx.x] = s;
  }
}

// Scalar finish: v = float(scale · Σ_p partial[p] / divisor) (the sum in double, in a fixed order);
// out[0] = v, or out[0] += v when accumulate. One block of kThreads threads; nparts may be 0.
__global__ void finish_scalar_kernel(float* out, const double* __restrict__ partial, int nparts,
                                     double scale, double divisor, bool accumulate) {
  __shared__ double sum[kThreads];
  double s = 0;
  for (int p = threadIdx.x; p < nparts; p += kThreads) s += partial[p];
  sum[threadIdx.x] = s;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width >>= 1) {
    if (int(threadIdx.x) < width) sum[threadIdx.x] += sum[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const float v = float(scale * sum[0] / divisor);
    out[0] = accumulate ? out[0] + v : v;
  }
}

void finish_scalar(const char* name, float* out, const double* partial, int nparts, double scale,
                   double divisor, bool accumulate) {
  finish_scalar_kernel<<<1, kThreads, 0, stream()>>>(out, partial, nparts, scale, divisor,
                                                     accumulate);
  check_cuda(cudaGetLastError(), name, __FILE__, __LINE__);
}

// ---------------------------------------------------------------------------------------------------
// Softmax router.  z, s, ds, dz [N,E]; one warp per row.
// forward:  s[t,:] = softmax(z[t,:]) = exp(z − m)/Σ exp(z − m), m = max_i z[t,i]  (s may alias z:
//           every read of a row precedes the warp's writes of it, or is the same element)
__global__ void softmax_forward_kernel(float* s, const float* z, int N, int E) {
  const int row = blockIdx.x * kRowWarps + int(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;  // whole warps leave together
  const float* zr = z + int64_t(row) * E;
  float* sr = s + int64_t(row) * E;
  float m = -INFINITY;
  for (int i = lane; i < E; i += 32) m = fmaxf(m, zr[i]);
  m = warp_max(m);
  float sum = 0.f;
  for (int i = lane; i < E; i += 32) sum += expf(zr[i] - m);
  const float inv = 1.0f / warp_sum(sum);
  for (int i = lane; i < E; i += 32) sr[i] = expf(zr[i] - m) * inv;
}

// backward: dz[t,:] = s ⊙ (ds − <s, ds>)   (dz overwritten)
__global__ void softmax_backward_kernel(float* dz, const float* ds, const float* __restrict__ s,
                                        int N, int E) {
  const int row = blockIdx.x * kRowWarps + int(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* sr = s + int64_t(row) * E;
  const float* dsr = ds + int64_t(row) * E;
  float* dzr = dz + int64_t(row) * E;
  float sd = 0.f;
  for (int i = lane; i < E; i += 32) sd += sr[i] * dsr[i];
  sd = warp_sum(sd);
  for (int i = lane; i < E; i += 32) dzr[i] = sr[i] * (dsr[i] - sd);
}

// ---------------------------------------------------------------------------------------------------
// Sigmoid router.  z, s, ds, dz: n = N·E elements, grid-stride, elementwise.
// forward:  s = 1/(1 + exp(−z))   (s may alias z)
// backward: dz = ds · s · (1 − s)
__global__ void sigmoid_forward_kernel(float* s, const float* z, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    s[i] = 1.0f / (1.0f + expf(-z[i]));
}

__global__ void sigmoid_backward_kernel(float* dz, const float* ds, const float* __restrict__ s,
                                        int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dz[i] = ds[i] * s[i] * (1.0f - s[i]);
}

// ---------------------------------------------------------------------------------------------------
// NormRouter.  z, s, ds, dz [N,E]; norm [N]; sigma [1] (σ); c the constant; σc = float(σ·c) (double
// product); ε = 1e-8.
// forward (warp per row):  n = ||z[t,:]||₂ → norm[t];  u = z/(n+ε);  s = σc·relu(u)
__global__ void norm_router_forward_kernel(float* s, float* __restrict__ norm, const float* z,
                                           const float* __restrict__ sigma, double c, int N,
                                           int E) {
  const int row = blockIdx.x * kRowWarps + int(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const float sigma_c = float(double(sigma[0]) * c);
  const float* zr = z + int64_t(row) * E;
  float* sr = s + int64_t(row) * E;
  float sq = 0.f;
  for (int i = lane; i < E; i += 32) sq += zr[i] * zr[i];
  const float n = sqrtf(warp_sum(sq));
  if (lane == 0) norm[row] = n;
  const float D = n + 1e-8f;
  for (int i = lane; i < E; i += 32) {
    const float u = zr[i] / D;
    sr[i] = u > 0.f ? sigma_c * u : 0.f;
  }
}

// backward, one block per chunk of kChunkRows rows (warp per row), σc = σ·c in double:
//   P = Σ_{z_i>0} z_i·ds_i;  a = σc/D;  b = σc·P/(n·D²)   (D = n+ε; the scalars in double)
//   dz[t,i] = (z_i > 0 ? a·ds_i : 0) − z_i·b        (dz overwritten; 0 on rows with n == 0)
//   partial[chunk] = Σ_{t in chunk} P_t/D_t         (dsigma's sum; finish: dsigma += c·Σ partial)
__global__ void norm_router_backward_kernel(float* dz, double* __restrict__ partial,
                                            const float* ds, const float* __restrict__ z,
                                            const float* __restrict__ norm,
                                            const float* __restrict__ sigma, double c, int N,
                                            int E) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const double sc = double(sigma[0]) * c;
  const int row_end = min(N, int(blockIdx.x) * kChunkRows + kChunkRows);
  double acc = 0;
  for (int t = int(blockIdx.x) * kChunkRows + warp; t < row_end; t += kRowWarps) {
    const float* zr = z + int64_t(t) * E;
    const float* dsr = ds + int64_t(t) * E;
    float* dzr = dz + int64_t(t) * E;
    const float n = norm[t];
    if (!(n > 0.f)) {  // warp-uniform
      for (int i = lane; i < E; i += 32) dzr[i] = 0.f;
      continue;
    }
    const float D = n + 1e-8f;
    float P = 0.f;
    for (int i = lane; i < E; i += 32) {
      const float zi = zr[i];
      P += zi > 0.f ? zi * dsr[i] : 0.f;
    }
    P = warp_sum(P);
    const double Dd = double(D);
    const float a = float(sc / Dd);
    const float b = float(sc * double(P) / (double(n) * Dd * Dd));
    for (int i = lane; i < E; i += 32) {
      const float zi = zr[i];
      const float gu = zi > 0.f ? a * dsr[i] : 0.f;
      dzr[i] = gu - zi * b;
    }
    acc += double(P) / Dd;
  }
  store_chunk_partial(partial, acc);
}

// ---------------------------------------------------------------------------------------------------
// Top-k.  s [N,E]; ids, gates, dgates [N,k].
// forward, one warp per row: k passes; pass j finds the first element, in the order (value
// descending, index ascending), that comes after pass j−1's pick: per lane over its columns, then
// a xor-tree argmax (a total order, so every lane ends with the same pick). This is exactly the
// stable descending sort's first k (ties → lower index). NaN scores rank as −inf (ids stay valid).
// The key of column i is s[t,i] + bias[i] when bias is given (the aux-free router's selection),
// else s[t,i]. gates[t,j] = s[t,ids[t,j]] (unbiased); renorm: gates /= Σ_j (the sum in double in
// slot order, zero sum → zero gates), as the CPU op.
__device__ __forceinline__ float topk_key(float v) {
  return v != v ? -INFINITY : v;
}
// (v, i) comes before (bv, bi) in the order; bi == INT_MAX means "no candidate yet".
__device__ __forceinline__ bool topk_before(float v, int i, float bv, int bi) {
  return bi == INT_MAX || v > bv || (v == bv && i < bi);
}

__global__ void topk_forward_kernel(int32_t* __restrict__ ids, float* __restrict__ gates,
                                    const float* __restrict__ s, const float* __restrict__ bias,
                                    int N, int E, int k, bool renorm) {
  const int row = blockIdx.x * kRowWarps + int(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* sr = s + int64_t(row) * E;
  int32_t* ir = ids + int64_t(row) * k;
  float* gr = gates + int64_t(row) * k;
  float prev_v = 0.f;  // the previous pick (key, index); prev_i < 0: none yet
  int prev_i = -1;
  for (int j = 0; j < k; ++j) {
    float best_v = -INFINITY;
    int best_i = INT_MAX;
    for (int i = lane; i < E; i += 32) {
      const float v = topk_key(bias != nullptr ? sr[i] + bias[i] : sr[i]);
      const bool after = prev_i < 0 || v < prev_v || (v == prev_v && i > prev_i);
      if (after && topk_before(v, i, best_v, best_i)) {
        best_v = v;
        best_i = i;
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float other_v = __shfl_xor_sync(kFullMask, best_v, off);
      const int other_i = __shfl_xor_sync(kFullMask, best_i, off);
      if (other_i != INT_MAX && topk_before(other_v, other_i, best_v, best_i)) {
        best_v = other_v;
        best_i = other_i;
      }
    }
    // k <= E: some element is always left, so best_i < E here.
    prev_v = best_v;
    prev_i = best_i;
    if (lane == 0) {
      ir[j] = best_i;
      gr[j] = sr[best_i];
    }
  }
  if (renorm && lane == 0) {  // lane 0 reads back its own writes
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += double(gr[j]);
    const float inv = sum != 0 ? float(1.0 / sum) : 0.f;
    for (int j = 0; j < k; ++j) gr[j] *= inv;
  }
}

// backward, one thread per row (its k slots in order; the scalars in double as the CPU op):
//   no renorm: ds[t,ids[t,m]] += dgates[t,m]
//   renorm:    ds[t,ids[t,m]] += (dgates[t,m] − Σ_j gates[t,j]·dgates[t,j]) / Σ_j s[t,ids[t,j]]
//              (nothing when that sum is 0)
__global__ void topk_backward_kernel(float* __restrict__ ds, const float* __restrict__ dgates,
                                     const int32_t* __restrict__ ids,
                                     const float* __restrict__ gates, const float* __restrict__ s,
                                     int N, int E, int k, bool renorm) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= N) return;
  const int32_t* ir = ids + int64_t(t) * k;
  const float* dg = dgates + int64_t(t) * k;
  float* dsr = ds + int64_t(t) * E;
  if (!renorm) {
    for (int j = 0; j < k; ++j) {
      const int e = ir[j];
      if (e >= 0 && e < E) dsr[e] += dg[j];
    }
    return;
  }
  const float* sr = s + int64_t(t) * E;
  const float* gr = gates + int64_t(t) * k;
  double sum = 0, gdg = 0;
  for (int j = 0; j < k; ++j) {
    const int e = ir[j];
    if (e >= 0 && e < E) sum += double(sr[e]);
    gdg += double(gr[j]) * double(dg[j]);
  }
  if (sum == 0) return;
  const double inv = 1.0 / sum;
  for (int j = 0; j < k; ++j) {
    const int e = ir[j];
    if (e >= 0 && e < E) dsr[e] += float((double(dg[j]) - gdg) * inv);
  }
}

// expert_counts: counts[e] = #{slots with ids == e}   ids [N·k], counts [E] (zeroed first).
// Grid-stride over slots; a shared histogram per block (E ints), then one global add per nonzero
// bin. Integer atomics: exact, so the result does not depend on their order.
__global__ void expert_counts_kernel(int32_t* __restrict__ counts, const int32_t* __restrict__ ids,
                                     int64_t n, int E) {
  extern __shared__ int32_t hist[];
  for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int32_t e = ids[i];
    if (e >= 0 && e < E) atomicAdd(&hist[e], 1);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    if (hist[e] != 0) atomicAdd(&counts[e], hist[e]);
  }
}

// ---------------------------------------------------------------------------------------------------
// Balancing term.  s, ds [N,E]; weight [E]; loss [1].
// forward, one block per row chunk: row value = Σ_i weight_i·s[t,i] (fp32, lanes + tree);
//   partial[chunk] = Σ rows (double); finish: loss = float(coeff·Σ partial)
__global__ void balance_loss_forward_kernel(double* __restrict__ partial,
                                            const float* __restrict__ s,
                                            const float* __restrict__ weight, int N, int E) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_end = min(N, int(blockIdx.x) * kChunkRows + kChunkRows);
  double acc = 0;
  for (int t = int(blockIdx.x) * kChunkRows + warp; t < row_end; t += kRowWarps) {
    const float* sr = s + int64_t(t) * E;
    float v = 0.f;
    for (int i = lane; i < E; i += 32) v += weight[i] * sr[i];
    acc += double(warp_sum(v));
  }
  store_chunk_partial(partial, acc);
}

// backward (warp per row): ds[t,i] += float(coeff·weight_i)   (double product, as the CPU op)
__global__ void balance_loss_backward_kernel(float* __restrict__ ds,
                                             const float* __restrict__ weight, double coeff, int N,
                                             int E) {
  const int row = blockIdx.x * kRowWarps + int(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  float* dsr = ds + int64_t(row) * E;
  for (int i = lane; i < E; i += 32) dsr[i] += float(coeff * double(weight[i]));
}

// ---------------------------------------------------------------------------------------------------
// z-loss on the raw logits z [N,E]; loss [1].  Per row (warp): m = max z, S = Σ exp(z − m) (fp32),
// lse = m + log S (double).
// forward, one block per row chunk: partial[chunk] = Σ rows lse² (double);
//   finish: loss = float(coeff·Σ partial / N)
__device__ __forceinline__ double row_logsumexp(const float* zr, int E, int lane, float* m_out,
                                                float* sum_out) {
  float m = -INFINITY;
  for (int i = lane; i < E; i += 32) m = fmaxf(m, zr[i]);
  m = warp_max(m);
  float sum = 0.f;
  for (int i = lane; i < E; i += 32) sum += expf(zr[i] - m);
  sum = warp_sum(sum);
  *m_out = m;
  *sum_out = sum;
  return double(m) + log(double(sum));
}

__global__ void z_loss_forward_kernel(double* __restrict__ partial, const float* __restrict__ z,
                                      int N, int E) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_end = min(N, int(blockIdx.x) * kChunkRows + kChunkRows);
  double acc = 0;
  for (int t = int(blockIdx.x) * kChunkRows + warp; t < row_end; t += kRowWarps) {
    float m, sum;
    const double lse = row_logsumexp(z + int64_t(t) * E, E, lane, &m, &sum);
    acc += lse * lse;
  }
  store_chunk_partial(partial, acc);
}

// backward (warp per row): dz[t,i] += f·exp(z[t,i] − m),  f = float(coeff·2·lse/(N·S))
__global__ void z_loss_backward_kernel(float* dz, const float* z, double coeff, int N, int E) {
  const int row = blockIdx.x * kRowWarps + int(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* zr = z + int64_t(row) * E;
  float* dzr = dz + int64_t(row) * E;
  float m, sum;
  const double lse = row_logsumexp(zr, E, lane, &m, &sum);
  const float f = float(coeff * 2.0 * lse / (double(N) * double(sum)));
  for (int i = lane; i < E; i += 32) dzr[i] += f * expf(zr[i] - m);
}

// ---------------------------------------------------------------------------------------------------
// Balancing bookkeeping, one thread per element.
// counts_to_float: out[i] = float(counts[i])
// ---------------------------------------------------------------------------------------------------
// Target-cardinality entropy term (as the CPU op).  s [N,E]; support [E] or null; loss [1];
// weight [E]; columns [E] double scratch.
// stage 1, one block per column i: columns[i] = Σ_t s[t,i] in double (thread j: rows j, j+256, …
// in order, then a fixed tree).
__global__ void entropy_column_sums_kernel(double* __restrict__ columns,
                                           const float* __restrict__ s, int N, int E) {
  __shared__ double part[kThreads];
  const int i = blockIdx.x;
  double acc = 0;
  for (int t = threadIdx.x; t < N; t += kThreads) acc += double(s[int64_t(t) * E + i]);
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width >>= 1) {
    if (int(threadIdx.x) < width) part[threadIdx.x] += part[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) columns[i] = part[0];
}

// stage 2, one thread (E is a router width: a few hundred): p̄, S, q, H, h, Σ q·h, loss, weight in
// double, in column order, exactly the CPU op's arithmetic after its column sums.
__global__ void entropy_finish_kernel(float* loss, float* __restrict__ weight,
                                      double* __restrict__ columns,
                                      const float* __restrict__ support, double coeff,
                                      double log_target, int N, int E) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double S = 0;
  for (int i = 0; i < E; ++i) {
    const bool visible = support == nullptr || support[i] != 0.f;
    columns[i] = visible ? columns[i] / N : 0.0;
    S += columns[i];
  }
  const double eps = 1e-8;
  double H = 0, qh = 0;
  for (int i = 0; i < E; ++i) {
    const double qi = columns[i] / (S + eps);
    columns[i] = qi;
    H -= qi * log(qi + eps);
    qh += qi * (-log(qi + eps) - qi / (qi + eps));
  }
  const double gap = H - log_target;
  loss[0] = float(coeff * gap * gap);
  const double scale = 2.0 * coeff * gap / (double(N) * (S + eps));
  for (int i = 0; i < E; ++i) {
    const bool visible = support == nullptr || support[i] != 0.f;
    const double qi = columns[i];
    weight[i] = visible ? float(scale * ((-log(qi + eps) - qi / (qi + eps)) - qh)) : 0.f;
  }
}

// Routing statistics (as the CPU op): one thread per token, its k slots in order; integer atomics
// (exact, so their order does not matter). Ids outside [0, E) are skipped.
__global__ void routing_stats_kernel(int32_t* __restrict__ stats, const int32_t* __restrict__ ids,
                                     const float* __restrict__ gates, int N, int k, int E) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= N) return;
  bool all_zero = true;
  for (int j = 0; j < k; ++j) {
    const int64_t slot = int64_t(t) * k + j;
    const int e = ids[slot];
    if (e < 0 || e >= E) continue;
    atomicAdd(&stats[1 + e], 1);
    if (gates[slot] != 0.f) {
      atomicAdd(&stats[1 + E + e], 1);
      all_zero = false;
    }
  }
  if (all_zero) atomicAdd(&stats[0], 1);
}

__global__ void counts_to_float_kernel(float* __restrict__ out, const int32_t* __restrict__ counts,
                                       int E) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < E) out[i] = float(counts[i]);
}

// axpy: y[i] += float(a·x[i])   (double product, rounded once)
__global__ void axpy_kernel(float* y, const float* x, double a, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += float(a * double(x[i]));
}

// pool_counts_update: running[i] += float(counts[i]); when finish: ghat[i] = running[i]/layers,
// running[i] = 0
__global__ void pool_counts_update_kernel(float* __restrict__ running, float* __restrict__ ghat,
                                          const int32_t* __restrict__ counts, bool finish,
                                          int layers, int E) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= E) return;
  const float r = running[i] + float(counts[i]);
  if (finish) {
    ghat[i] = r / float(layers);
    running[i] = 0.f;
  } else {
    running[i] = r;
  }
}

// ---------------------------------------------------------------------------------------------------
// UniPool-lock column ops, one thread per element, grid-stride (every output element written by
// one thread: no atomics, no order to fix).
// scale_columns: x [N,E] (n = N·E), scale [E]:  x[t,i] = x[t,i] · scale[i]   (in place, one fp32
// multiply: no FMA to contract, so bitwise the CPU op's)
__global__ void scale_columns_kernel(float* x, const float* __restrict__ scale, int64_t n, int E) {
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < n;
       p += int64_t(gridDim.x) * blockDim.x)
    x[p] = x[p] * scale[p % E];
}

// select_columns_forward: in [N,E], out [N,K] (n = N·K), cols [K]:
//   out[t,j] = in[t, cols[j]]   (a column outside [0, E) reads as 0)
__global__ void select_columns_forward_kernel(float* __restrict__ out, const float* __restrict__ in,
                                              const int32_t* __restrict__ cols, int64_t n, int E,
                                              int K) {
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < n;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = p / K;
    const int c = cols[p % K];
    out[p] = c >= 0 && c < E ? in[t * E + c] : 0.f;
  }
}

// select_columns_backward, after din [N,E] is zeroed (+0): dout [N,K] (n = N·K), cols [K]
// distinct:  din[t, cols[j]] = dout[t,j]   (a column outside [0, E) is skipped)
__global__ void select_columns_scatter_kernel(float* __restrict__ din,
                                              const float* __restrict__ dout,
                                              const int32_t* __restrict__ cols, int64_t n, int E,
                                              int K) {
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < n;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = p / K;
    const int c = cols[p % K];
    if (c >= 0 && c < E) din[t * E + c] = dout[p];
  }
}

// map_ids: ids [n], table [K]:  ids[p] = table[ids[p]]   (ids in [0, K), not checked)
__global__ void map_ids_kernel(int32_t* __restrict__ ids, const int32_t* __restrict__ table,
                               int64_t n) {
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < n;
       p += int64_t(gridDim.x) * blockDim.x)
    ids[p] = table[ids[p]];
}

void check_selection(const char* op, int N, int E, int K) {
  check_rows(op, N, E);
  if (K < 1 || K > E) {
    throw Error(std::string("cuda::") + op + ": need 1 <= K <= E, got K = " + std::to_string(K) +
                ", E = " + std::to_string(E));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Host launchers (asynchronous on stream()).

void softmax_forward(float* s, const float* z, int N, int E) {
  check_rows("softmax_forward", N, E);
  if (N == 0) return;
  softmax_forward_kernel<<<blocks_for(N, kRowWarps), kThreads, 0, stream()>>>(s, z, N, E);
  CUDA_CHECK_LAUNCH("softmax_forward_kernel");
}

void softmax_backward(float* dz, const float* ds, const float* s, int N, int E) {
  check_rows("softmax_backward", N, E);
  if (N == 0) return;
  softmax_backward_kernel<<<blocks_for(N, kRowWarps), kThreads, 0, stream()>>>(dz, ds, s, N, E);
  CUDA_CHECK_LAUNCH("softmax_backward_kernel");
}

void norm_router_forward(float* s, float* norm, const float* z, const float* sigma, double c, int N,
                         int E) {
  check_rows("norm_router_forward", N, E);
  if (N == 0) return;
  norm_router_forward_kernel<<<blocks_for(N, kRowWarps), kThreads, 0, stream()>>>(s, norm, z, sigma,
                                                                                  c, N, E);
  CUDA_CHECK_LAUNCH("norm_router_forward_kernel");
}

void norm_router_backward(float* dz, float* dsigma, const float* ds, const float* z,
                          const float* norm, const float* sigma, double c, int N, int E) {
  check_rows("norm_router_backward", N, E);
  const int nparts = int(blocks_for(N, kChunkRows));
  double* partial = context().norm_router_partials.get_as<double>(size_t(std::max(nparts, 1)));
  if (nparts > 0) {
    norm_router_backward_kernel<<<unsigned(nparts), kThreads, 0, stream()>>>(dz, partial, ds, z,
                                                                             norm, sigma, c, N, E);
    CUDA_CHECK_LAUNCH("norm_router_backward_kernel");
  }
  // dsigma[0] += float(c · Σ_t P_t/D_t)   (N = 0 adds float(c·0), as the CPU op)
  finish_scalar("launch of finish_scalar_kernel (norm_router_backward)", dsigma, partial, nparts, c,
                1.0, /*accumulate=*/true);
}

void sigmoid_forward(float* s, const float* z, int N, int E) {
  check_rows("sigmoid_forward", N, E);
  const int64_t n = int64_t(N) * E;
  if (n == 0) return;
  sigmoid_forward_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream()>>>(s, z, n);
  CUDA_CHECK_LAUNCH("sigmoid_forward_kernel");
}

void sigmoid_backward(float* dz, const float* ds, const float* s, int N, int E) {
  check_rows("sigmoid_backward", N, E);
  const int64_t n = int64_t(N) * E;
  if (n == 0) return;
  sigmoid_backward_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream()>>>(dz, ds, s, n);
  CUDA_CHECK_LAUNCH("sigmoid_backward_kernel");
}

void topk_forward(int32_t* ids, float* gates, const float* s, const float* bias, int N, int E,
                  int k, bool renorm) {
  check_rows("topk_forward", N, E);
  if (k < 1 || k > E) {
    throw Error("cuda::topk_forward: need 1 <= k <= E, got k = " + std::to_string(k) +
                ", E = " + std::to_string(E));
  }
  if (N == 0) return;
  topk_forward_kernel<<<blocks_for(N, kRowWarps), kThreads, 0, stream()>>>(ids, gates, s, bias, N,
                                                                           E, k, renorm);
  CUDA_CHECK_LAUNCH("topk_forward_kernel");
}

void topk_backward(float* ds, const float* dgates, const int32_t* ids, const float* gates,
                   const float* s, int N, int E, int k, bool renorm) {
  check_rows("topk_backward", N, E);
  if (k < 1 || k > E) {
    throw Error("cuda::topk_backward: need 1 <= k <= E, got k = " + std::to_string(k) +
                ", E = " + std::to_string(E));
  }
  if (N == 0) return;
  topk_backward_kernel<<<blocks_for(N, kThreads), kThreads, 0, stream()>>>(ds, dgates, ids, gates,
                                                                           s, N, E, k, renorm);
  CUDA_CHECK_LAUNCH("topk_backward_kernel");
}

void expert_counts(int32_t* counts, const int32_t* ids, int N, int k, int E) {
  if (N < 0 || k < 1 || E < 1 || E > kMaxCountExperts) {
    throw Error("cuda::expert_counts: need N >= 0, k >= 1 and 1 <= E <= " +
                std::to_string(kMaxCountExperts) + " (the shared histogram), got N = " +
                std::to_string(N) + ", k = " + std::to_string(k) + ", E = " + std::to_string(E));
  }
  memset_zero(counts, sizeof(int32_t) * size_t(E));
  const int64_t n = int64_t(N) * k;
  if (n == 0) return;
  const int64_t per_block = int64_t(kThreads) * 16;  // ≈16 slots per thread
  const unsigned blocks = unsigned(std::min<int64_t>(ceil_div(n, per_block), 1024));
  expert_counts_kernel<<<blocks, kThreads, sizeof(int32_t) * size_t(E), stream()>>>(counts, ids, n,
                                                                                    E);
  CUDA_CHECK_LAUNCH("expert_counts_kernel");
}

void balance_loss_forward(float* loss, const float* s, const float* weight, double coeff, int N,
                          int E) {
  check_rows("balance_loss_forward", N, E);
  const int nparts = int(blocks_for(N, kChunkRows));
  double* partial = context().balance_partials.get_as<double>(size_t(std::max(nparts, 1)));
  if (nparts > 0) {
    balance_loss_forward_kernel<<<unsigned(nparts), kThreads, 0, stream()>>>(partial, s, weight, N,
                                                                             E);
    CUDA_CHECK_LAUNCH("balance_loss_forward_kernel");
  }
  // loss[0] = float(coeff · Σ)   (N = 0 gives float(coeff·0), as the CPU op)
  finish_scalar("launch of finish_scalar_kernel (balance_loss_forward)", loss, partial, nparts,
                coeff, 1.0, /*accumulate=*/false);
}

void balance_loss_backward(float* ds, const float* weight, double coeff, int N, int E) {
  check_rows("balance_loss_backward", N, E);
  if (N == 0) return;
  balance_loss_backward_kernel<<<blocks_for(N, kRowWarps), kThreads, 0, stream()>>>(ds, weight,
                                                                                    coeff, N, E);
  CUDA_CHECK_LAUNCH("balance_loss_backward_kernel");
}

void z_loss_forward(float* loss, const float* z, double coeff, int N, int E) {
  check_rows("z_loss_forward", N, E);
  if (N == 0) {  // the CPU op's 0
    memset_zero(loss, sizeof(float));
    return;
  }
  const int nparts = int(blocks_for(N, kChunkRows));
  double* partial = context().z_loss_partials.get_as<double>(size_t(nparts));
  z_loss_forward_kernel<<<unsigned(nparts), kThreads, 0, stream()>>>(partial, z, N, E);
  CUDA_CHECK_LAUNCH("z_loss_forward_kernel");
  // loss[0] = float(coeff · Σ / N)
  finish_scalar("launch of finish_scalar_kernel (z_loss_forward)", loss, partial, nparts, coeff,
                double(N), /*accumulate=*/false);
}

void z_loss_backward(float* dz, const float* z, double coeff, int N, int E) {
  check_rows("z_loss_backward", N, E);
  if (N == 0) return;
  z_loss_backward_kernel<<<blocks_for(N, kRowWarps), kThreads, 0, stream()>>>(dz, z, coeff, N, E);
  CUDA_CHECK_LAUNCH("z_loss_backward_kernel");
}

void entropy_loss_forward(float* loss, float* weight, const float* s, const float* support,
                          double coeff, double log_target, int N, int E) {
  check_rows("entropy_loss_forward", N, E);
  if (N == 0) {  // the CPU op's zeros
    memset_zero(loss, sizeof(float));
    memset_zero(weight, size_t(E) * sizeof(float));
    return;
  }
  double* columns = context().entropy_columns.get_as<double>(size_t(E));
  entropy_column_sums_kernel<<<unsigned(E), kThreads, 0, stream()>>>(columns, s, N, E);
  CUDA_CHECK_LAUNCH("entropy_column_sums_kernel");
  entropy_finish_kernel<<<1, 32, 0, stream()>>>(loss, weight, columns, support, coeff, log_target,
                                                N, E);
  CUDA_CHECK_LAUNCH("entropy_finish_kernel");
}

void routing_stats(int32_t* stats, const int32_t* ids, const float* gates, int N, int k, int E) {
  if (N < 0 || k < 1 || E < 1) {
    throw Error("cuda::routing_stats: need N >= 0, k >= 1 and E >= 1, got N = " +
                std::to_string(N) + ", k = " + std::to_string(k) + ", E = " + std::to_string(E));
  }
  if (N == 0) return;
  routing_stats_kernel<<<blocks_for(N, kThreads), kThreads, 0, stream()>>>(stats, ids, gates, N, k,
                                                                           E);
  CUDA_CHECK_LAUNCH("routing_stats_kernel");
}

void counts_to_float(float* out, const int32_t* counts, int E) {
  if (E <= 0) return;
  counts_to_float_kernel<<<blocks_for(E, kThreads), kThreads, 0, stream()>>>(out, counts, E);
  CUDA_CHECK_LAUNCH("counts_to_float_kernel");
}

void axpy(float* y, const float* x, double a, int n) {
  if (n <= 0) return;
  axpy_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(y, x, a, n);
  CUDA_CHECK_LAUNCH("axpy_kernel");
}

void pool_counts_update(float* running, float* ghat, const int32_t* counts, bool finish, int layers,
                        int E) {
  if (finish && layers < 1) {
    throw Error("cuda::pool_counts_update: need layers >= 1, got " + std::to_string(layers));
  }
  if (E <= 0) return;
  pool_counts_update_kernel<<<blocks_for(E, kThreads), kThreads, 0, stream()>>>(
      running, ghat, counts, finish, layers, E);
  CUDA_CHECK_LAUNCH("pool_counts_update_kernel");
}

void scale_columns(float* x, const float* scale, int N, int E) {
  check_rows("scale_columns", N, E);
  const int64_t n = int64_t(N) * E;
  if (n == 0) return;
  scale_columns_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream()>>>(x, scale, n, E);
  CUDA_CHECK_LAUNCH("scale_columns_kernel");
}

void select_columns_forward(float* out, const float* in, const int32_t* cols, int N, int E, int K) {
  check_selection("select_columns_forward", N, E, K);
  const int64_t n = int64_t(N) * K;
  if (n == 0) return;
  select_columns_forward_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream()>>>(
      out, in, cols, n, E, K);
  CUDA_CHECK_LAUNCH("select_columns_forward_kernel");
}

void select_columns_backward(float* din, const float* dout, const int32_t* cols, int N, int E,
                             int K) {
  check_selection("select_columns_backward", N, E, K);
  const int64_t n = int64_t(N) * K;
  if (n == 0) return;
  memset_zero(din, sizeof(float) * size_t(N) * size_t(E));  // +0 (all bits 0), on stream()
  select_columns_scatter_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream()>>>(
      din, dout, cols, n, E, K);
  CUDA_CHECK_LAUNCH("select_columns_scatter_kernel");
}

void map_ids(int32_t* ids, const int32_t* table, int64_t n) {
  if (n < 0) throw Error("cuda::map_ids: need n >= 0, got n = " + std::to_string(n));
  if (n == 0) return;
  map_ids_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream()>>>(ids, table, n);
  CUDA_CHECK_LAUNCH("map_ids_kernel");
}

}  // namespace unipool::cuda
