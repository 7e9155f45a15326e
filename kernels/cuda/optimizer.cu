// CUDA optimizer step (kernels/cuda/ops.h; the CPU twin with the math: kernels/cpu/optimizer.h):
// the global gradient norm, AdamW with the bf16 weight copy, and the float <-> bf16 copies.
//
// Both the norm and AdamW walk the tensor table (kernels/op_types.h) as a table of chunks: every
// tensor split into chunks of kChunk elements (the last one shorter), one thread block per chunk,
// in table order. The chunk table is built on the host, uploaded once and reused while the tensor
// table stays the same. The model's tensor offsets are multiples of 16 floats (model/layout.h), so
// chunks start 64-byte aligned in an aligned arena.
//
// DETERMINISM: no atomics. The norm's chunks are reduced by fixed trees into per-chunk partials in
// Scratch, then one block adds the partials in a fixed order; AdamW is elementwise.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace unipool::cuda {

namespace {

constexpr int64_t kChunk = int64_t(1) << 15;  // elements per chunk (one block)
constexpr int kThreads = 256;                 // threads per chunk block
constexpr int kWarps = kThreads / 32;
constexpr int kFinalThreads = 1024;  // the norm's single block over the chunk partials

// One chunk of one tensor: elements [offset, offset + len) of the arena.
struct Chunk {
  int64_t offset;
  int32_t len;    // 1 .. kChunk
  int32_t decay;  // 1: the tensor is weight-decayed
};
static_assert(sizeof(Chunk) == 16, "Chunk is compared with memcmp: no padding");

// The chunk table of the tensors on the device (uploaded when it differs from the last one);
// count = number of chunks, all_aligned = every chunk starts at a multiple of 4 elements.
const Chunk* chunk_table(const TensorTable& tensors, int* count, bool* all_aligned) {
  std::vector<Chunk> table;
  bool aligned = true;
  for (const TensorSpan& t : tensors) {
    aligned = aligned && t.offset % 4 == 0;
    for (int64_t c0 = 0; c0 < t.numel; c0 += kChunk) {
      table.push_back(
          Chunk{t.offset + c0, int32_t(std::min(kChunk, t.numel - c0)), t.decay ? 1 : 0});
    }
  }
  check(table.size() <= size_t(INT32_MAX), "cuda optimizer: too many chunks");
  *count = int(table.size());
  *all_aligned = aligned;
  if (table.empty()) return nullptr;
  Context& ctx = context();
  const size_t bytes = table.size() * sizeof(Chunk);
  if (bytes != ctx.chunk_table_host.size() ||
      std::memcmp(table.data(), ctx.chunk_table_host.data(), bytes) != 0) {
    Chunk* dev = ctx.chunk_table.get_as<Chunk>(table.size());
    memcpy_to_device(dev, table.data(), bytes);  // stream-ordered, waits
    const auto* first = reinterpret_cast<const unsigned char*>(table.data());
    ctx.chunk_table_host.assign(first, first + bytes);
  }
  return static_cast<const Chunk*>(ctx.chunk_table.get(bytes));
}

// ---------------------------------------------------------------------------------------------------
// Global gradient norm.  grads: the fp32 gradient arena; chunks [nchunks]; partial [nchunks].
// stage 1, one block per chunk: partial[c] = Σ_{i in chunk c} g[i]² in double (squares of floats
// are exact in double). Thread k takes the groups of 4 elements k, k + kThreads, ..., each group's
// elements in order (a float4 load when kAligned and the group is full, else scalar loads: the
// same additions either way), then the block's fixed tree.
template <bool kAligned>
__global__ void __launch_bounds__(kThreads)
    grad_norm_partial_kernel(double* __restrict__ partial, const float* __restrict__ grads,
                             const Chunk* __restrict__ chunks) {
  __shared__ double red[kWarps];
  const Chunk ch = chunks[blockIdx.x];
  const float* g = grads + ch.offset;
  const int groups = (ch.len + 3) / 4;
  double s = 0.0;
  for (int q = int(threadIdx.x); q < groups; q += kThreads) {
    const int i0 = q * 4;
    if (kAligned && i0 + 4 <= ch.len) {
      const float4 v = *reinterpret_cast<const float4*>(g + i0);
      s += double(v.x) * double(v.x);
      s += double(v.y) * double(v.y);
      s += double(v.z) * double(v.z);
      s += double(v.w) * double(v.w);
    } else {
      for (int j = 0; j < 4 && i0 + j < ch.len; ++j) s += double(g[i0 + j]) * double(g[i0 + j]);
    }
  }
  s = block_sum<kWarps>(s, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// stage 2, one block: total[0] = Σ_c partial[c] in double; thread k adds the partials k, k + 1024,
// ... in order, then the block's fixed tree.
__global__ void __launch_bounds__(kFinalThreads)
    grad_norm_final_kernel(double* __restrict__ total, const double* __restrict__ partial,
                           int nchunks) {
  __shared__ double red[kFinalThreads / 32];
  double s = 0.0;
  for (int c = int(threadIdx.x); c < nchunks; c += kFinalThreads) s += partial[c];
  s = block_sum<kFinalThreads / 32>(s, red);
  if (threadIdx.x == 0) total[0] = s;
}

// ---------------------------------------------------------------------------------------------------
// AdamW (kernels/cpu/optimizer.h, the same float operations in the same order). One block per
// chunk, thread k takes the groups of 4 elements k, k + kThreads, ... (float4 loads/stores when
// kAligned and the group is full).
//   grad = g·scale;  m = β1·m + (1−β1)·grad;  v = β2·v + (1−β2)·grad·grad
//   p = p·decay − lr·(m/bias1) / (sqrt(v/bias2) + eps)       decay = 1 − lr·wd, or 1 (rank < 2)
//   copy[i] = bf16(p)  when copy != nullptr
struct AdamParams {
  float beta1, beta2, one_minus_beta1, one_minus_beta2;  // (1 − β) rounded as the CPU's T(1) − b
  float bias1, bias2;                                    // 1 − β^step, computed in double
  float grad_scale, eps, lr, decay;                      // decay: for tensors with decay
};

__device__ __forceinline__ float adamw_update(float p, float g, float& m, float& v,
                                              const AdamParams& h, float decay) {
  const float grad = g * h.grad_scale;
  m = h.beta1 * m + h.one_minus_beta1 * grad;
  v = h.beta2 * v + h.one_minus_beta2 * grad * grad;
  const float m_hat = m / h.bias1, v_hat = v / h.bias2;
  return p * decay - h.lr * m_hat / (sqrtf(v_hat) + h.eps);
}

struct alignas(8) Bf16x4 {
  bf16 v[4];
};

template <bool kAligned>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(float* __restrict__ params, const float* __restrict__ grads, float* __restrict__ m,
                 float* __restrict__ v, bf16* __restrict__ copy, const Chunk* __restrict__ chunks,
                 AdamParams h) {
  const Chunk ch = chunks[blockIdx.x];
  const float decay = ch.decay ? h.decay : 1.0f;
  float* p = params + ch.offset;
  const float* g = grads + ch.offset;
  float* mt = m + ch.offset;
  float* vt = v + ch.offset;
  bf16* ct = copy != nullptr ? copy + ch.offset : nullptr;
  const int groups = (ch.len + 3) / 4;
  for (int q = int(threadIdx.x); q < groups; q += kThreads) {
    const int i0 = q * 4;
    if (kAligned && i0 + 4 <= ch.len) {
      float4 pv = *reinterpret_cast<const float4*>(p + i0);
      const float4 gv = *reinterpret_cast<const float4*>(g + i0);
      float4 mv = *reinterpret_cast<const float4*>(mt + i0);
      float4 vv = *reinterpret_cast<const float4*>(vt + i0);
      pv.x = adamw_update(pv.x, gv.x, mv.x, vv.x, h, decay);
      pv.y = adamw_update(pv.y, gv.y, mv.y, vv.y, h, decay);
      pv.z = adamw_update(pv.z, gv.z, mv.z, vv.z, h, decay);
      pv.w = adamw_update(pv.w, gv.w, mv.w, vv.w, h, decay);
      *reinterpret_cast<float4*>(p + i0) = pv;
      *reinterpret_cast<float4*>(mt + i0) = mv;
      *reinterpret_cast<float4*>(vt + i0) = vv;
      if (ct != nullptr) {
        Bf16x4 pack;
        pack.v[0] = __float2bfloat16_rn(pv.x);
        pack.v[1] = __float2bfloat16_rn(pv.y);
        pack.v[2] = __float2bfloat16_rn(pv.z);
        pack.v[3] = __float2bfloat16_rn(pv.w);
        *reinterpret_cast<Bf16x4*>(ct + i0) = pack;
      }
    } else {
      for (int i = i0; i < i0 + 4 && i < ch.len; ++i) {
        float mi = mt[i], vi = vt[i];
        const float pi = adamw_update(p[i], g[i], mi, vi, h, decay);
        p[i] = pi;
        mt[i] = mi;
        vt[i] = vi;
        if (ct != nullptr) ct[i] = __float2bfloat16_rn(pi);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Conversions, grid-stride over groups of 4 elements (vector accesses when kAligned and the group
// is full).  float_to_bf16: dst[i] = bf16(src[i]) (round to nearest even);  bf16_to_float: exact.
template <bool kAligned>
__global__ void float_to_bf16_kernel(bf16* __restrict__ dst, const float* __restrict__ src,
                                     int64_t n) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < groups;
       q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i0 = q * 4;
    if (kAligned && i0 + 4 <= n) {
      const float4 f = *reinterpret_cast<const float4*>(src + i0);
      Bf16x4 pack;
      pack.v[0] = __float2bfloat16_rn(f.x);
      pack.v[1] = __float2bfloat16_rn(f.y);
      pack.v[2] = __float2bfloat16_rn(f.z);
      pack.v[3] = __float2bfloat16_rn(f.w);
      *reinterpret_cast<Bf16x4*>(dst + i0) = pack;
    } else {
      for (int64_t i = i0; i < i0 + 4 && i < n; ++i) dst[i] = __float2bfloat16_rn(src[i]);
    }
  }
}

template <bool kAligned>
__global__ void bf16_to_float_kernel(float* __restrict__ dst, const bf16* __restrict__ src,
                                     int64_t n) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < groups;
       q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i0 = q * 4;
    if (kAligned && i0 + 4 <= n) {
      const Bf16x4 pack = *reinterpret_cast<const Bf16x4*>(src + i0);
      *reinterpret_cast<float4*>(dst + i0) =
          make_float4(__bfloat162float(pack.v[0]), __bfloat162float(pack.v[1]),
                      __bfloat162float(pack.v[2]), __bfloat162float(pack.v[3]));
    } else {
      for (int64_t i = i0; i < i0 + 4 && i < n; ++i) dst[i] = __bfloat162float(src[i]);
    }
  }
}

// Blocks for the conversions' grid-stride loop over the ⌈n/4⌉ groups (n > 0).
unsigned conversion_blocks(int64_t n) {
  return grid_stride_blocks(ceil_div(n, 4), kThreads);
}

}  // namespace

double grad_sum_squares(const TensorTable& tensors, const float* grads) {
  int nchunks = 0;
  bool offsets_aligned = false;
  const Chunk* chunks = chunk_table(tensors, &nchunks, &offsets_aligned);
  if (nchunks == 0) return 0.0;
  double* partial = context().grad_norm_partials.get_as<double>(size_t(nchunks) + 1);
  double* total = partial + nchunks;
  const bool aligned = offsets_aligned && aligned_to(grads, 16);
  const auto kernel = aligned ? grad_norm_partial_kernel<true> : grad_norm_partial_kernel<false>;
  kernel<<<unsigned(nchunks), kThreads, 0, stream()>>>(partial, grads, chunks);
  CUDA_CHECK_LAUNCH("grad_norm_partial_kernel");
  grad_norm_final_kernel<<<1, kFinalThreads, 0, stream()>>>(total, partial, nchunks);
  CUDA_CHECK_LAUNCH("grad_norm_final_kernel");
  double sum_sq = 0.0;
  memcpy_to_host(&sum_sq, total, sizeof(double));  // the one host synchronisation
  return sum_sq;
}

void adamw_step(const TensorTable& tensors, float* params, const float* grads, float* m, float* v,
                bf16* copy, const AdamWParams& optim) {
  int nchunks = 0;
  bool offsets_aligned = false;
  const Chunk* chunks = chunk_table(tensors, &nchunks, &offsets_aligned);
  if (nchunks == 0) return;
  // The scalars exactly as kernels/cpu/optimizer.h computes them for T = float.
  AdamParams h;
  h.beta1 = float(optim.beta1);
  h.beta2 = float(optim.beta2);
  h.one_minus_beta1 = 1.0f - h.beta1;
  h.one_minus_beta2 = 1.0f - h.beta2;
  h.bias1 = float(1.0 - std::pow(optim.beta1, optim.step));
  h.bias2 = float(1.0 - std::pow(optim.beta2, optim.step));
  h.grad_scale = float(optim.grad_scale);
  h.eps = float(optim.eps);
  h.lr = float(optim.lr);
  h.decay = float(1.0 - optim.lr * optim.weight_decay);
  const bool aligned = offsets_aligned && aligned_to(params, 16) && aligned_to(grads, 16) &&
                       aligned_to(m, 16) && aligned_to(v, 16) &&
                       (copy == nullptr || aligned_to(copy, 8));
  const auto kernel = aligned ? adamw_kernel<true> : adamw_kernel<false>;
  kernel<<<unsigned(nchunks), kThreads, 0, stream()>>>(params, grads, m, v, copy, chunks, h);
  CUDA_CHECK_LAUNCH("adamw_kernel");
}

void float_to_bf16_copy(bf16* dst, const float* src, int64_t n) {
  if (n <= 0) return;
  const bool aligned = aligned_to(src, 16) && aligned_to(dst, 8);
  const auto kernel = aligned ? float_to_bf16_kernel<true> : float_to_bf16_kernel<false>;
  kernel<<<conversion_blocks(n), kThreads, 0, stream()>>>(dst, src, n);
  CUDA_CHECK_LAUNCH("float_to_bf16_kernel");
}

void bf16_to_float_copy(float* dst, const bf16* src, int64_t n) {
  if (n <= 0) return;
  const bool aligned = aligned_to(dst, 16) && aligned_to(src, 8);
  const auto kernel = aligned ? bf16_to_float_kernel<true> : bf16_to_float_kernel<false>;
  kernel<<<conversion_blocks(n), kThreads, 0, stream()>>>(dst, src, n);
  CUDA_CHECK_LAUNCH("bf16_to_float_kernel");
}

}  // namespace unipool::cuda
