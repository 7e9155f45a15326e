// CUDA elementwise / row ops (fp32). Shapes, formulas and the determinism rules: elementwise.cuh.
#include "kernels/cuda/elementwise.cuh"

#include <algorithm>

namespace unipool::cuda {

namespace {

constexpr int kThreads = 256;       // threads per block of the flat (grid-stride) kernels
constexpr int kWarpsPerBlock = 4;   // rows per block of the warp-per-row kernels
constexpr int kColTile = 32;        // embedding_backward: columns per block
constexpr int kEmbedGroups = 64;    // embedding_backward: dE row v belongs to group v % 64
constexpr int kGroupsPerBlock = 8;  // embedding_backward: groups per block (blockDim.y)
constexpr int kTokenTile = 256;     // embedding_backward: tokens staged in shared memory at once
static_assert(kEmbedGroups % kGroupsPerBlock == 0, "groups must tile the blocks");

// Blocks for a grid-stride loop over n elements.
unsigned flat_blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return unsigned(std::min<int64_t>(b, int64_t(1) << 20));
}

unsigned row_blocks(int rows) {
  return unsigned((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

// Σ over the 32 lanes of a warp by a fixed xor tree (every lane gets the same bits).
__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

// ---------------------------------------------------------------------------------------------------
// Embedding.  tokens [N], E [V,d], out/dout [N,d], dE [V,d].
// forward: out[t,i] = E[tokens[t],i]; one thread per (t, i), grid-stride.
__global__ void embedding_forward_kernel(float* __restrict__ out,
                                         const int32_t* __restrict__ tokens,
                                         const float* __restrict__ E, int N, int d) {
  const int64_t n = int64_t(N) * d;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx / d;
    const int i = int(idx - t * d);
    out[idx] = E[int64_t(tokens[t]) * d + i];
  }
}

// backward: dE[v,i] += Σ_{t: tokens[t]=v} dout[t,i].
// Block (kColTile, kGroupsPerBlock), grid (ceil(d/kColTile), kEmbedGroups/kGroupsPerBlock): thread
// (column i, group g) scans all tokens in order and adds the rows of the tokens with v % 64 == g
// into dE[v,i]. Each dE element is owned by exactly one thread and summed in token order: no
// atomics, bitwise reproducible (and the same order as the CPU op). A warp shares g, so it never
// diverges.
__global__ void embedding_backward_kernel(float* __restrict__ dE, const float* __restrict__ dout,
                                          const int32_t* __restrict__ tokens, int N, int d) {
  __shared__ int32_t tok[kTokenTile];
  const int i = blockIdx.x * kColTile + threadIdx.x;
  const int g = blockIdx.y * kGroupsPerBlock + threadIdx.y;
  const int tid = threadIdx.y * kColTile + threadIdx.x;
  for (int t0 = 0; t0 < N; t0 += kTokenTile) {
    const int len = min(kTokenTile, N - t0);
    __syncthreads();  // the previous tile is no longer read
    for (int k = tid; k < len; k += kColTile * kGroupsPerBlock) tok[k] = tokens[t0 + k];
    __syncthreads();
    if (i < d) {
      for (int k = 0; k < len; ++k) {
        const uint32_t v = uint32_t(tok[k]);
        if (int(v % kEmbedGroups) != g) continue;
        dE[int64_t(v) * d + i] += dout[int64_t(t0 + k) * d + i];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// RMSNorm.  x, out [N,d]; w [d]; rstd [N]. One warp per row (fp32 sums, fixed lane order + tree).
// forward: rstd[t] = 1/sqrt(Σ_i x[t,i]²/d + eps);  out[t,i] = x[t,i]·rstd[t]·w[i]  (out may alias
// x: every read of the row happens before the warp's first write of it)
__global__ void rmsnorm_forward_kernel(float* out, float* __restrict__ rstd, const float* x,
                                       const float* __restrict__ w, int N, int d, float eps) {
  const int row = blockIdx.x * kWarpsPerBlock + int(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* xr = x + int64_t(row) * d;
  float* o = out + int64_t(row) * d;
  float s = 0.f;
  for (int i = lane; i < d; i += 32) s += xr[i] * xr[i];
  s = warp_sum(s);  // also the barrier before out (which may be x) is written
  const float rs = 1.0f / sqrtf(s / float(d) + eps);
  if (lane == 0) rstd[row] = rs;
  for (int i = lane; i < d; i += 32) o[i] = xr[i] * rs * w[i];
}

// backward, dx part: one warp per row t.
//   S = Σ_i dout[t,i]·w[i]·x[t,i];  dx[t,j] += rstd·(dout[t,j]·w[j]) − x[t,j]·(rstd³·S/d)
__global__ void rmsnorm_backward_dx_kernel(float* __restrict__ dx, const float* __restrict__ dout,
                                           const float* __restrict__ x, const float* __restrict__ w,
                                           const float* __restrict__ rstd, int N, int d) {
  const int row = blockIdx.x * kWarpsPerBlock + int(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* g = dout + int64_t(row) * d;
  const float* xr = x + int64_t(row) * d;
  float* dxr = dx + int64_t(row) * d;
  float s = 0.f;
  for (int i = lane; i < d; i += 32) s += g[i] * w[i] * xr[i];
  s = warp_sum(s);
  const float rs = rstd[row];
  const float a = rs;
  const float b = rs * rs * rs * s / float(d);
  for (int i = lane; i < d; i += 32) dxr[i] += a * (g[i] * w[i]) - xr[i] * b;
}

// backward, dw stage 1: part[c,i] = Σ_{t in chunk c} dout[t,i]·x[t,i]·rstd[t], chunk c = rows
// [c·128, min(N,(c+1)·128)) in row order. part [ceil(N/128), d]; grid (ceil(d/256), nchunks).
__global__ void rmsnorm_backward_dw_partial_kernel(float* __restrict__ part,
                                                   const float* __restrict__ dout,
                                                   const float* __restrict__ x,
                                                   const float* __restrict__ rstd, int N, int d) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int c = blockIdx.y;
  if (i >= d) return;
  const int end = min(N, (c + 1) * kNormRowChunk);
  float s = 0.f;
  for (int t = c * kNormRowChunk; t < end; ++t) {
    const int64_t k = int64_t(t) * d + i;
    s += dout[k] * x[k] * rstd[t];
  }
  part[int64_t(c) * d + i] = s;
}

// backward, dw stage 2: dw[i] += Σ_c part[c,i], chunks in order. One thread per column.
__global__ void rmsnorm_backward_dw_final_kernel(float* __restrict__ dw,
                                                 const float* __restrict__ part, int nchunks,
                                                 int d) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= d) return;
  float s = 0.f;
  for (int c = 0; c < nchunks; ++c) s += part[int64_t(c) * d + i];
  dw[i] += s;
}

// ---------------------------------------------------------------------------------------------------
// SwiGLU.  h13 [N,2F] = [g | v] per row; a, da [N,F]; dh13 [N,2F]. One thread per (t, i).
// forward:  a[t,i] = g·σ(g)·v,  σ(g) = 1/(1+exp(−g))
__global__ void swiglu_forward_kernel(float* __restrict__ a, const float* __restrict__ h13, int N,
                                      int F) {
  const int64_t n = int64_t(N) * F;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx / F;
    const int64_t i = idx - t * F;
    const float g = h13[t * 2 * F + i];
    const float v = h13[t * 2 * F + F + i];
    const float sig = 1.0f / (1.0f + expf(-g));
    a[idx] = g * sig * v;
  }
}

// backward: dg = da·v·σ(g)·(1 + g·(1 − σ(g))),  dv = da·g·σ(g);  dh13[t,:] = [dg | dv]
__global__ void swiglu_backward_kernel(float* __restrict__ dh13, const float* __restrict__ da,
                                       const float* __restrict__ h13, int N, int F) {
  const int64_t n = int64_t(N) * F;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx / F;
    const int64_t i = idx - t * F;
    const float g = h13[t * 2 * F + i];
    const float v = h13[t * 2 * F + F + i];
    const float d = da[idx];
    const float sig = 1.0f / (1.0f + expf(-g));
    dh13[t * 2 * F + i] = d * v * sig * (1.0f + g * (1.0f - sig));
    dh13[t * 2 * F + F + i] = d * g * sig;
  }
}

// ---------------------------------------------------------------------------------------------------
// scale_rows: out[r,i] = scale[r]·in[r,i]   in, out [rows, cols] (out may alias in); one thread per
// element. (Its backward is scale_rows + row_dot.)
__global__ void scale_rows_kernel(float* out, const float* in, const float* __restrict__ scale,
                                  int rows, int cols) {
  const int64_t n = int64_t(rows) * cols;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    out[idx] = scale[idx / cols] * in[idx];
  }
}

// row_dot: out[r] = Σ_i a[r,i]·b[r,i]   a, b [rows, cols], out [rows]; one warp per row.
// (Its backward is two scale_rows.)
__global__ void row_dot_kernel(float* __restrict__ out, const float* __restrict__ a,
                               const float* __restrict__ b, int rows, int cols) {
  const int row = blockIdx.x * kWarpsPerBlock + int(threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* ar = a + int64_t(row) * cols;
  const float* br = b + int64_t(row) * cols;
  float s = 0.f;
  for (int i = lane; i < cols; i += 32) s += ar[i] * br[i];
  s = warp_sum(s);
  if (lane == 0) out[row] = s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Host launchers.

void embedding_forward(float* out, const int32_t* tokens, const float* E, int N, int d,
                       cudaStream_t stream) {
  const int64_t n = int64_t(N) * d;
  if (N <= 0 || d <= 0) return;
  embedding_forward_kernel<<<flat_blocks(n), kThreads, 0, stream>>>(out, tokens, E, N, d);
  CUDA_CHECK(cudaGetLastError());
}

void embedding_backward(float* dE, const float* dout, const int32_t* tokens, int N, int d,
                        cudaStream_t stream) {
  if (N <= 0 || d <= 0) return;
  const dim3 block(kColTile, kGroupsPerBlock);
  const dim3 grid(unsigned((d + kColTile - 1) / kColTile), kEmbedGroups / kGroupsPerBlock);
  embedding_backward_kernel<<<grid, block, 0, stream>>>(dE, dout, tokens, N, d);
  CUDA_CHECK(cudaGetLastError());
}

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int d,
                     double eps, cudaStream_t stream) {
  if (N <= 0 || d <= 0) return;
  rmsnorm_forward_kernel<<<row_blocks(N), kWarpsPerBlock * 32, 0, stream>>>(out, rstd, x, w, N, d,
                                                                            float(eps));
  CUDA_CHECK(cudaGetLastError());
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int N, int d, float* scratch, cudaStream_t stream) {
  if (N <= 0 || d <= 0) return;
  check(scratch != nullptr, "cuda::rmsnorm_backward: scratch is null (needs " +
                                std::to_string(rmsnorm_backward_scratch_floats(N, d)) + " floats)");
  rmsnorm_backward_dx_kernel<<<row_blocks(N), kWarpsPerBlock * 32, 0, stream>>>(dx, dout, x, w,
                                                                                rstd, N, d);
  CUDA_CHECK(cudaGetLastError());
  const int nchunks = (N + kNormRowChunk - 1) / kNormRowChunk;
  const unsigned col_blocks = unsigned((d + kThreads - 1) / kThreads);
  rmsnorm_backward_dw_partial_kernel<<<dim3(col_blocks, unsigned(nchunks)), kThreads, 0, stream>>>(
      scratch, dout, x, rstd, N, d);
  CUDA_CHECK(cudaGetLastError());
  rmsnorm_backward_dw_final_kernel<<<col_blocks, kThreads, 0, stream>>>(dw, scratch, nchunks, d);
  CUDA_CHECK(cudaGetLastError());
}

void swiglu_forward(float* a, const float* h13, int N, int F, cudaStream_t stream) {
  if (N <= 0 || F <= 0) return;
  swiglu_forward_kernel<<<flat_blocks(int64_t(N) * F), kThreads, 0, stream>>>(a, h13, N, F);
  CUDA_CHECK(cudaGetLastError());
}

void swiglu_backward(float* dh13, const float* da, const float* h13, int N, int F,
                     cudaStream_t stream) {
  if (N <= 0 || F <= 0) return;
  swiglu_backward_kernel<<<flat_blocks(int64_t(N) * F), kThreads, 0, stream>>>(dh13, da, h13, N, F);
  CUDA_CHECK(cudaGetLastError());
}

void scale_rows(float* out, const float* in, const float* scale, int rows, int cols,
                cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  scale_rows_kernel<<<flat_blocks(int64_t(rows) * cols), kThreads, 0, stream>>>(out, in, scale,
                                                                                rows, cols);
  CUDA_CHECK(cudaGetLastError());
}

void row_dot(float* out, const float* a, const float* b, int rows, int cols, cudaStream_t stream) {
  if (rows <= 0) return;
  if (cols <= 0) {  // the empty sum
    CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float) * size_t(rows), stream));
    return;
  }
  row_dot_kernel<<<row_blocks(rows), kWarpsPerBlock * 32, 0, stream>>>(out, a, b, rows, cols);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace unipool::cuda
