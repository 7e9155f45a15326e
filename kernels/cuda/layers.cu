// CUDA layer ops (kernels/cuda/ops.h, "layers"; the CPU oracle with the math:
// kernels/cpu/layers.h): token embedding, RMSNorm, SwiGLU, scale_rows, row_dot. Activations are
// bf16, weights, weight gradients and rstd fp32, all math fp32.
//
// Rows are processed in chunks of 8 columns (one 16-byte bf16 vector): lane/thread k of a row owns
// the chunks k, k + 32, ... When the width is a multiple of 8 and the pointers are 16-byte aligned
// (the case in the model) a chunk is one vector load/store, otherwise 8 scalar accesses (the last
// chunk of a row may be partial). Both paths do the same float operations in the same order, so
// the results never depend on the alignment.
//
// DETERMINISM: no atomics. Row sums (rmsnorm, row_dot) run per lane in chunk order, then by a fixed
// xor tree across the warp; sums across rows are per output element in token order (embedding dE)
// or by fixed row chunks with partials in Scratch, added in a fixed order (rmsnorm dw).
#include <cub/device/device_radix_sort.cuh>

#include <cstdint>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace unipool::cuda {

namespace {

constexpr int kThreads = 256;      // threads per block of the flat (grid-stride) kernels
constexpr int kWarpsPerBlock = 8;  // rows per block of the warp-per-row kernels
constexpr int kDwRowChunk = 128;   // rmsnorm_backward dw: rows per partial
constexpr int kDwSlots = 8;        // rmsnorm_backward dw: row slots per block (blockDim.y)
constexpr int kDwCols = 32;        // rmsnorm_backward dw: columns per block (blockDim.x)

// Chunks of fp32 values (E, w, dE), as load_bf16 / store_bf16 of kernels/cuda/common.cuh:
// f[j] = p[j] for j < n; the other entries are 0.
template <bool kAligned>
__device__ __forceinline__ void load_f32(const float* p, int n, float (&f)[kVec]) {
  if constexpr (kAligned) {
    const float4 a = reinterpret_cast<const float4*>(p)[0];
    const float4 b = reinterpret_cast<const float4*>(p)[1];
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
    f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
  } else {
#pragma unroll
    for (int j = 0; j < kVec; ++j) f[j] = j < n ? p[j] : 0.f;
  }
}

// p[j] = f[j] for j < n.
template <bool kAligned>
__device__ __forceinline__ void store_f32(float* p, int n, const float (&f)[kVec]) {
  if constexpr (kAligned) {
    reinterpret_cast<float4*>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
  } else {
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      if (j < n) p[j] = f[j];
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Embedding.  tokens [N], E [V,d] fp32, out/dout [N,d] bf16, dE [V,d] fp32.
// forward: out[t,i] = bf16(E[tokens[t],i]); one thread per (t, chunk), grid-stride.
template <bool kAligned>
__global__ void embedding_forward_kernel(bf16* __restrict__ out, const int32_t* __restrict__ tokens,
                                         const float* __restrict__ E, int N, int d) {
  const int chunks = (d + kVec - 1) / kVec;
  const int64_t total = int64_t(N) * chunks;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx / chunks;
    const int col = int(idx - t * chunks) * kVec;
    const int n = chunk_len<kAligned>(col, d);
    float f[kVec];
    load_f32<kAligned>(E + int64_t(tokens[t]) * d + col, n, f);
    store_bf16<kAligned>(out + t * d + col, n, f);
  }
}

// backward: dE[v,i] += Σ_{t: tokens[t]=v} dout[t,i], each sum in token order in fp32, starting from
// dE[v,i] (so the same float additions as the CPU op: bitwise equal to it on the same inputs).
// Before this kernel the (token, position) pairs are sorted by token with a stable radix sort, so a
// token's positions form one run of the sorted arrays, in position order.
// Block: kWarpsPerBlock warps; warp w of block (x, y) takes sorted index i = x·kWarpsPerBlock + w
// and the column slab y (32 lanes × 8 columns). A warp whose index is not the first of its run
// returns; the first one walks the whole run (run end found by ballots), broadcasting 32 positions
// at a time by shuffles, and adds the dout rows into registers; lane k owns the 8 columns of chunk
// 32·y + k. Every dE element is read and written by exactly one thread.
template <bool kAligned>
__global__ void embedding_backward_kernel(float* __restrict__ dE, const bf16* __restrict__ dout,
                                          const int32_t* __restrict__ sorted_tokens,
                                          const int32_t* __restrict__ sorted_pos, int N, int d) {
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int i = int(blockIdx.x) * kWarpsPerBlock + warp;
  if (i >= N) return;  // warp-uniform
  const int32_t v = sorted_tokens[i];
  if (i > 0 && sorted_tokens[i - 1] == v) return;  // not the first of its run: warp-uniform

  int end = N;  // one past the run's last sorted index
  for (int base = i + 1; base < N; base += 32) {
    const int j = base + lane;
    const unsigned other = __ballot_sync(kFullMask, j >= N || sorted_tokens[j] != v);
    if (other != 0) {
      end = base + __ffs(int(other)) - 1;
      break;
    }
  }

  const int col = (int(blockIdx.y) * 32 + lane) * kVec;
  const bool active = col < d;
  const int n = active ? chunk_len<kAligned>(col, d) : 0;
  float* dst = dE + int64_t(v) * d + col;
  float acc[kVec];
  if (active) load_f32<kAligned>(dst, n, acc);
  for (int j0 = i; j0 < end; j0 += 32) {
    const int count = min(32, end - j0);
    const int my_pos = lane < count ? sorted_pos[j0 + lane] : 0;
#pragma unroll 4
    for (int k = 0; k < count; ++k) {
      const int t = __shfl_sync(kFullMask, my_pos, k);
      if (active) {
        float g[kVec];
        load_bf16<kAligned>(dout + int64_t(t) * d + col, n, g);
#pragma unroll
        for (int c = 0; c < kVec; ++c) acc[c] += g[c];
      }
    }
  }
  if (active) store_f32<kAligned>(dst, n, acc);
}

// positions[t] = t: the values the token sort carries along.
__global__ void iota_kernel(int32_t* __restrict__ positions, int N) {
  const int t = int(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < N) positions[t] = t;
}

// ---------------------------------------------------------------------------------------------------
// RMSNorm.  x, out, dout, dx [N,d] bf16; w, dw [d] fp32; rstd [N] fp32. One warp per row for the
// row ops (fp32 sums: per lane in chunk order, then the warp's xor tree).
// forward: rstd[t] = 1/sqrt(Σ_i x[t,i]²/d + eps);  out[t,i] = bf16(x[t,i]·rstd[t]·w[i])
// out may alias x: a chunk is read and then written by the same lane, after the row's sum.
template <bool kAligned>
__global__ void rmsnorm_forward_kernel(bf16* out, float* __restrict__ rstd, const bf16* x,
                                       const float* __restrict__ w, int N, int d, float eps) {
  const int row = int(blockIdx.x) * kWarpsPerBlock + int(threadIdx.x) / 32;
  const int lane = int(threadIdx.x) % 32;
  if (row >= N) return;
  const bf16* xr = x + int64_t(row) * d;
  bf16* o = out + int64_t(row) * d;
  float s = 0.f;
  for (int col = lane * kVec; col < d; col += 32 * kVec) {
    const int n = chunk_len<kAligned>(col, d);
    float f[kVec];
    load_bf16<kAligned>(xr + col, n, f);
#pragma unroll
    for (int j = 0; j < kVec; ++j) s += f[j] * f[j];  // entries j >= n are 0
  }
  s = warp_sum(s);
  const float rs = 1.0f / sqrtf(s / float(d) + eps);
  if (lane == 0) rstd[row] = rs;
  for (int col = lane * kVec; col < d; col += 32 * kVec) {
    const int n = chunk_len<kAligned>(col, d);
    float f[kVec], wf[kVec];
    load_bf16<kAligned>(xr + col, n, f);
    load_f32<kAligned>(w + col, n, wf);
#pragma unroll
    for (int j = 0; j < kVec; ++j) f[j] = f[j] * rs * wf[j];
    store_bf16<kAligned>(o + col, n, f);
  }
}

// backward, dx part: one warp per row t.
//   S = Σ_i dout[t,i]·w[i]·x[t,i];  dx[t,j] = bf16(dx[t,j] + (rstd·(dout[t,j]·w[j]) − x[t,j]·b)),
//   b = rstd³·S/d  (dx read, added in fp32 and rounded to bf16 once)
template <bool kAligned>
__global__ void rmsnorm_backward_dx_kernel(bf16* __restrict__ dx, const bf16* __restrict__ dout,
                                           const bf16* __restrict__ x, const float* __restrict__ w,
                                           const float* __restrict__ rstd, int N, int d) {
  const int row = int(blockIdx.x) * kWarpsPerBlock + int(threadIdx.x) / 32;
  const int lane = int(threadIdx.x) % 32;
  if (row >= N) return;
  const bf16* gr = dout + int64_t(row) * d;
  const bf16* xr = x + int64_t(row) * d;
  bf16* dxr = dx + int64_t(row) * d;
  float s = 0.f;
  for (int col = lane * kVec; col < d; col += 32 * kVec) {
    const int n = chunk_len<kAligned>(col, d);
    float g[kVec], xf[kVec], wf[kVec];
    load_bf16<kAligned>(gr + col, n, g);
    load_bf16<kAligned>(xr + col, n, xf);
    load_f32<kAligned>(w + col, n, wf);
#pragma unroll
    for (int j = 0; j < kVec; ++j) s += g[j] * wf[j] * xf[j];
  }
  s = warp_sum(s);
  const float a = rstd[row];
  const float b = a * a * a * s / float(d);
  for (int col = lane * kVec; col < d; col += 32 * kVec) {
    const int n = chunk_len<kAligned>(col, d);
    float g[kVec], xf[kVec], wf[kVec], acc[kVec];
    load_bf16<kAligned>(gr + col, n, g);
    load_bf16<kAligned>(xr + col, n, xf);
    load_f32<kAligned>(w + col, n, wf);
    load_bf16<kAligned>(dxr + col, n, acc);
#pragma unroll
    for (int j = 0; j < kVec; ++j) acc[j] += a * (g[j] * wf[j]) - xf[j] * b;
    store_bf16<kAligned>(dxr + col, n, acc);
  }
}

// backward, dw stage 1: part[c,i] = Σ_{t in chunk c} dout[t,i]·x[t,i]·rstd[t], chunk c = rows
// [c·128, min(N, (c+1)·128)). part [nchunks, d]. Block (32 columns, 8 row slots), grid
// (ceil(d/32), nchunks): thread (i, y) sums the rows y, y+8, ... of the chunk in order, then the
// slot y = 0 thread adds the 8 slot sums in slot order.
__global__ void rmsnorm_backward_dw_partial_kernel(float* __restrict__ part,
                                                   const bf16* __restrict__ dout,
                                                   const bf16* __restrict__ x,
                                                   const float* __restrict__ rstd, int N, int d) {
  __shared__ float slot_sum[kDwSlots][kDwCols];
  const int i = int(blockIdx.x) * kDwCols + int(threadIdx.x);
  const int c = int(blockIdx.y);
  const int end = min(N, (c + 1) * kDwRowChunk);
  float s = 0.f;
  if (i < d) {
    for (int t = c * kDwRowChunk + int(threadIdx.y); t < end; t += kDwSlots) {
      const int64_t k = int64_t(t) * d + i;
      s += __bfloat162float(dout[k]) * __bfloat162float(x[k]) * rstd[t];
    }
  }
  slot_sum[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && i < d) {
    float total = slot_sum[0][threadIdx.x];
#pragma unroll
    for (int y = 1; y < kDwSlots; ++y) total += slot_sum[y][threadIdx.x];
    part[int64_t(c) * d + i] = total;
  }
}

// backward, dw stage 2: dw[i] += Σ_c part[c,i]. Block (32 columns, 8 slots): thread (i, y) sums the
// chunks y, y+8, ... in order, then the slot sums are added in slot order.
__global__ void rmsnorm_backward_dw_final_kernel(float* __restrict__ dw,
                                                 const float* __restrict__ part, int nchunks,
                                                 int d) {
  __shared__ float slot_sum[kDwSlots][kDwCols];
  const int i = int(blockIdx.x) * kDwCols + int(threadIdx.x);
  float s = 0.f;
  if (i < d) {
    for (int c = int(threadIdx.y); c < nchunks; c += kDwSlots) s += part[int64_t(c) * d + i];
  }
  slot_sum[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && i < d) {
    float total = slot_sum[0][threadIdx.x];
#pragma unroll
    for (int y = 1; y < kDwSlots; ++y) total += slot_sum[y][threadIdx.x];
    dw[i] += total;
  }
}

// ---------------------------------------------------------------------------------------------------
// SwiGLU.  h13 [N,2F] bf16, row t = [g (F) | v (F)]; a, da [N,F]; dh13 [N,2F]. One thread per
// (t, chunk), grid-stride.
// forward:  a = bf16(g·σ(g)·v),  σ(g) = 1/(1+exp(−g))
template <bool kAligned>
__global__ void swiglu_forward_kernel(bf16* __restrict__ a, const bf16* __restrict__ h13, int N,
                                      int F) {
  const int chunks = (F + kVec - 1) / kVec;
  const int64_t total = int64_t(N) * chunks;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx / chunks;
    const int col = int(idx - t * chunks) * kVec;
    const int n = chunk_len<kAligned>(col, F);
    const bf16* gp = h13 + t * 2 * F + col;
    float g[kVec], v[kVec], out[kVec];
    load_bf16<kAligned>(gp, n, g);
    load_bf16<kAligned>(gp + F, n, v);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float sig = 1.0f / (1.0f + expf(-g[j]));
      out[j] = g[j] * sig * v[j];
    }
    store_bf16<kAligned>(a + t * F + col, n, out);
  }
}

// backward: dg = da·v·σ(g)·(1 + g·(1 − σ(g))),  dv = da·g·σ(g);  dh13[t,:] = [dg | dv] (=)
template <bool kAligned>
__global__ void swiglu_backward_kernel(bf16* __restrict__ dh13, const bf16* __restrict__ da,
                                       const bf16* __restrict__ h13, int N, int F) {
  const int chunks = (F + kVec - 1) / kVec;
  const int64_t total = int64_t(N) * chunks;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx / chunks;
    const int col = int(idx - t * chunks) * kVec;
    const int n = chunk_len<kAligned>(col, F);
    const int64_t row = t * 2 * F + col;
    float g[kVec], v[kVec], dav[kVec], dg[kVec], dv[kVec];
    load_bf16<kAligned>(h13 + row, n, g);
    load_bf16<kAligned>(h13 + row + F, n, v);
    load_bf16<kAligned>(da + t * F + col, n, dav);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float sig = 1.0f / (1.0f + expf(-g[j]));
      dg[j] = dav[j] * v[j] * sig * (1.0f + g[j] * (1.0f - sig));
      dv[j] = dav[j] * g[j] * sig;
    }
    store_bf16<kAligned>(dh13 + row, n, dg);
    store_bf16<kAligned>(dh13 + row + F, n, dv);
  }
}

// ---------------------------------------------------------------------------------------------------
// scale_rows: out[r,i] = bf16(scale[r]·in[r,i])   in, out [rows, cols] (out may alias in: a chunk
// is read and written by one thread); one thread per (r, chunk), grid-stride.
template <bool kAligned>
__global__ void scale_rows_kernel(bf16* out, const bf16* in, const float* __restrict__ scale,
                                  int rows, int cols) {
  const int chunks = (cols + kVec - 1) / kVec;
  const int64_t total = int64_t(rows) * chunks;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / chunks;
    const int col = int(idx - r * chunks) * kVec;
    const int n = chunk_len<kAligned>(col, cols);
    const float s = scale[r];
    float f[kVec];
    load_bf16<kAligned>(in + r * cols + col, n, f);
#pragma unroll
    for (int j = 0; j < kVec; ++j) f[j] = s * f[j];
    store_bf16<kAligned>(out + r * cols + col, n, f);
  }
}

// row_dot: out[r] = Σ_i a[r,i]·b[r,i]   a, b [rows, cols] bf16, out [rows] fp32; one warp per row.
template <bool kAligned>
__global__ void row_dot_kernel(float* __restrict__ out, const bf16* __restrict__ a,
                               const bf16* __restrict__ b, int rows, int cols) {
  const int row = int(blockIdx.x) * kWarpsPerBlock + int(threadIdx.x) / 32;
  const int lane = int(threadIdx.x) % 32;
  if (row >= rows) return;
  const bf16* ar = a + int64_t(row) * cols;
  const bf16* br = b + int64_t(row) * cols;
  float s = 0.f;
  for (int col = lane * kVec; col < cols; col += 32 * kVec) {
    const int n = chunk_len<kAligned>(col, cols);
    float fa[kVec], fb[kVec];
    load_bf16<kAligned>(ar + col, n, fa);
    load_bf16<kAligned>(br + col, n, fb);
#pragma unroll
    for (int j = 0; j < kVec; ++j) s += fa[j] * fb[j];
  }
  s = warp_sum(s);
  if (lane == 0) out[row] = s;
}

// Rounds p up to a multiple of 256 bytes (sub-buffers carved out of one Scratch).
size_t round_up_256(size_t bytes) {
  return (bytes + 255) / 256 * 256;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Host launchers. kAligned (the vector path) when the width is a multiple of 8 and every pointer of
// the op is 16-byte aligned.

void embedding_forward(bf16* out, const int32_t* tokens, const float* E, int N, int d) {
  if (N <= 0 || d <= 0) return;
  const int64_t items = int64_t(N) * ((d + kVec - 1) / kVec);
  const bool aligned = d % kVec == 0 && aligned16(out) && aligned16(E);
  const auto kernel = aligned ? embedding_forward_kernel<true> : embedding_forward_kernel<false>;
  kernel<<<grid_stride_blocks(items, kThreads), kThreads, 0, stream()>>>(out, tokens, E, N, d);
  CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

void embedding_backward(float* dE, const bf16* dout, const int32_t* tokens, int N, int d) {
  if (N <= 0 || d <= 0) return;
  // Scratch: sorted tokens [N], positions [N], sorted positions [N], the radix sort's space.
  size_t sort_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, tokens, static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), N, 0, 32, stream()));
  const size_t ints = round_up_256(sizeof(int32_t) * size_t(N));
  char* base = static_cast<char*>(context().embedding_sort.get(3 * ints + round_up_256(sort_bytes)));
  int32_t* sorted_tokens = reinterpret_cast<int32_t*>(base);
  int32_t* positions = reinterpret_cast<int32_t*>(base + ints);
  int32_t* sorted_pos = reinterpret_cast<int32_t*>(base + 2 * ints);
  void* sort_space = base + 3 * ints;

  iota_kernel<<<blocks_for(N, kThreads), kThreads, 0, stream()>>>(positions, N);
  CUDA_CHECK_LAUNCH("iota_kernel");
  // Stable: equal tokens keep their position order.
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_space, sort_bytes, tokens, sorted_tokens,
                                             static_cast<const int32_t*>(positions), sorted_pos, N,
                                             0, 32, stream()));
  CUDA_CHECK_LAUNCH("cub::DeviceRadixSort::SortPairs (embedding_backward)");

  const int chunks = (d + kVec - 1) / kVec;
  const unsigned slabs = unsigned((chunks + 31) / 32);
  check(slabs <= 65535u, "cuda::embedding_backward: d = " + std::to_string(d) + " is too wide");
  const dim3 grid(blocks_for(N, kWarpsPerBlock), slabs);
  const bool aligned = d % kVec == 0 && aligned16(dE) && aligned16(dout);
  const auto kernel = aligned ? embedding_backward_kernel<true> : embedding_backward_kernel<false>;
  kernel<<<grid, kWarpsPerBlock * 32, 0, stream()>>>(dE, dout, sorted_tokens, sorted_pos, N, d);
  CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}

void rmsnorm_forward(bf16* out, float* rstd, const bf16* x, const float* w, int N, int d,
                     double eps) {
  if (N <= 0 || d <= 0) return;
  const bool aligned = d % kVec == 0 && aligned16(out) && aligned16(x) && aligned16(w);
  const auto kernel = aligned ? rmsnorm_forward_kernel<true> : rmsnorm_forward_kernel<false>;
  kernel<<<blocks_for(N, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream()>>>(out, rstd, x, w, N, d,
                                                                              float(eps));
  CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void rmsnorm_backward(bf16* dx, float* dw, const bf16* dout, const bf16* x, const float* w,
                      const float* rstd, int N, int d) {
  if (N <= 0 || d <= 0) return;
  const bool aligned =
      d % kVec == 0 && aligned16(dx) && aligned16(dout) && aligned16(x) && aligned16(w);
  const auto kernel =
      aligned ? rmsnorm_backward_dx_kernel<true> : rmsnorm_backward_dx_kernel<false>;
  kernel<<<blocks_for(N, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream()>>>(dx, dout, x, w, rstd,
                                                                              N, d);
  CUDA_CHECK_LAUNCH("rmsnorm_backward_dx_kernel");

  const int nchunks = (N + kDwRowChunk - 1) / kDwRowChunk;
  check(nchunks <= 65535, "cuda::rmsnorm_backward: N = " + std::to_string(N) + " is too large");
  float* part = context().rmsnorm_dw_partials.get_as<float>(size_t(nchunks) * size_t(d));
  const unsigned col_blocks = unsigned((d + kDwCols - 1) / kDwCols);
  const dim3 block(kDwCols, kDwSlots);
  rmsnorm_backward_dw_partial_kernel<<<dim3(col_blocks, unsigned(nchunks)), block, 0, stream()>>>(
      part, dout, x, rstd, N, d);
  CUDA_CHECK_LAUNCH("rmsnorm_backward_dw_partial_kernel");
  rmsnorm_backward_dw_final_kernel<<<col_blocks, block, 0, stream()>>>(dw, part, nchunks, d);
  CUDA_CHECK_LAUNCH("rmsnorm_backward_dw_final_kernel");
}

void swiglu_forward(bf16* a, const bf16* h13, int N, int F) {
  if (N <= 0 || F <= 0) return;
  const int64_t items = int64_t(N) * ((F + kVec - 1) / kVec);
  const bool aligned = F % kVec == 0 && aligned16(a) && aligned16(h13);
  const auto kernel = aligned ? swiglu_forward_kernel<true> : swiglu_forward_kernel<false>;
  kernel<<<grid_stride_blocks(items, kThreads), kThreads, 0, stream()>>>(a, h13, N, F);
  CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

void swiglu_backward(bf16* dh13, const bf16* da, const bf16* h13, int N, int F) {
  if (N <= 0 || F <= 0) return;
  const int64_t items = int64_t(N) * ((F + kVec - 1) / kVec);
  const bool aligned = F % kVec == 0 && aligned16(dh13) && aligned16(da) && aligned16(h13);
  const auto kernel = aligned ? swiglu_backward_kernel<true> : swiglu_backward_kernel<false>;
  kernel<<<grid_stride_blocks(items, kThreads), kThreads, 0, stream()>>>(dh13, da, h13, N, F);
  CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

void scale_rows(bf16* out, const bf16* in, const float* scale, int rows, int cols) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t items = int64_t(rows) * ((cols + kVec - 1) / kVec);
  const bool aligned = cols % kVec == 0 && aligned16(out) && aligned16(in);
  const auto kernel = aligned ? scale_rows_kernel<true> : scale_rows_kernel<false>;
  kernel<<<grid_stride_blocks(items, kThreads), kThreads, 0, stream()>>>(out, in, scale, rows,
                                                                         cols);
  CUDA_CHECK_LAUNCH("scale_rows_kernel");
}

void row_dot(float* out, const bf16* a, const bf16* b, int rows, int cols) {
  if (rows <= 0) return;
  if (cols <= 0) {  // the empty sum
    memset_zero(out, sizeof(float) * size_t(rows));
    return;
  }
  const bool aligned = cols % kVec == 0 && aligned16(a) && aligned16(b);
  const auto kernel = aligned ? row_dot_kernel<true> : row_dot_kernel<false>;
  kernel<<<blocks_for(rows, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream()>>>(out, a, b, rows,
                                                                                 cols);
  CUDA_CHECK_LAUNCH("row_dot_kernel");
}

}  // namespace unipool::cuda
