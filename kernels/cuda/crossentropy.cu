// CUDA fused cross-entropy forward + backward over the LM head's logits (kernels/cuda/ops.h; the
// CPU oracle with the math: kernels/cpu/crossentropy.h).
//
//   logits [rows, V] bf16, targets [rows] in [0, V), losses [rows] fp32 (=):
//     losses[r] = logsumexp(logits[r,:]) − logits[r, targets[r]]
//   when dloss != 0 the logits are overwritten in place by the gradient of dloss·Σ_r losses[r]:
//     logits[r,i] ← bf16(softmax(logits[r,:])_i·dloss − [i == targets[r]]·dloss)
//   (softmax and the one-hot subtraction in fp32, one rounding to bf16.) dloss = 0 only evaluates:
//   the logits are not written at all.
//
// One block per row, three sweeps over the row (it stays in L2 between them): max, Σ exp(x − max),
// then the gradient. Each thread owns the chunks of 8 columns k, k + blockDim, ... (a 16-byte
// vector when V is a multiple of 8 and the logits are 16-byte aligned, else 8 scalar accesses in
// the same order), accumulates in fp32 in chunk order, and the block combines the threads by a
// fixed tree: bitwise reproducible, independent of the alignment. Targets are not checked on the
// device (the host validated them); a target outside [0, V) gives a NaN loss and no one-hot term,
// never an out-of-bounds access.
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace unipool::cuda {

namespace {

constexpr int kThreads = 512;  // threads per row (block)
constexpr int kWarps = kThreads / 32;
constexpr int kArgmaxThreads = 256;  // threads per row of target_is_argmax
// One block per row r (see the file comment).
//   m = max_i x_i;  S = Σ_i exp(x_i − m);  losses[r] = m + log S − x_target  (the last in double)
//   backward (dloss != 0): x_i ← bf16(exp(x_i − m)·(dloss/S) − [i == target]·dloss)
// In place: thread 0 reads x_target before the first barrier; every other element is read and
// written by the thread that owns its chunk, and the writes come after the two reductions.
template <bool kAligned>
__global__ void __launch_bounds__(kThreads)
    crossentropy_kernel(float* __restrict__ losses, bf16* __restrict__ logits,
                        const int32_t* __restrict__ targets, int V, double dloss) {
  __shared__ float red[kWarps];
  bf16* x = logits + int64_t(blockIdx.x) * V;
  const int target = targets[blockIdx.x];
  const bool target_ok = target >= 0 && target < V;
  float x_target = 0.f;
  if (threadIdx.x == 0 && target_ok) x_target = __bfloat162float(x[target]);

  float m = -INFINITY;
  for (int col = int(threadIdx.x) * kVec; col < V; col += kThreads * kVec) {
    const int n = chunk_len<kAligned>(col, V);
    float f[kVec];
    load_bf16<kAligned>(x + col, n, f);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      if (j < n) m = fmaxf(m, f[j]);
    }
  }
  m = block_max<kWarps>(m, red);

  float s = 0.f;
  for (int col = int(threadIdx.x) * kVec; col < V; col += kThreads * kVec) {
    const int n = chunk_len<kAligned>(col, V);
    float f[kVec];
    load_bf16<kAligned>(x + col, n, f);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      if (j < n) s += expf(f[j] - m);
    }
  }
  s = block_sum<kWarps>(s, red);

  if (threadIdx.x == 0) {
    losses[blockIdx.x] = target_ok ? float(double(m) + log(double(s)) - double(x_target))
                                   : __int_as_float(0x7fc00000);
  }
  if (dloss == 0.0) return;

  const float scale = float(dloss / double(s));
  const float dloss_f = float(dloss);
  for (int col = int(threadIdx.x) * kVec; col < V; col += kThreads * kVec) {
    const int n = chunk_len<kAligned>(col, V);
    float f[kVec];
    load_bf16<kAligned>(x + col, n, f);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      f[j] = expf(f[j] - m) * scale - (col + j == target ? dloss_f : 0.f);
    }
    store_bf16<kAligned>(x + col, n, f);
  }
}

// One block per row r of target_is_argmax: the target is greedy unless some column i < V beats it,
// x_i > x_t, or ties it from the left, x_i == x_t with i < t (torch.argmax takes the lowest index).
// Each thread tests the columns tid, tid + blockDim, ...; the block counts the verdicts.
__global__ void __launch_bounds__(kArgmaxThreads)
    target_is_argmax_kernel(int32_t* __restrict__ greedy, const bf16* __restrict__ logits,
                            const int32_t* __restrict__ targets, int V, int ld) {
  __shared__ int red[kArgmaxThreads / 32];
  const bf16* x = logits + int64_t(blockIdx.x) * ld;
  const int target = targets[blockIdx.x];
  const bool target_ok = target >= 0 && target < V;
  const float xt = target_ok ? __bfloat162float(x[target]) : 0.f;
  int beaten = !target_ok;
  for (int i = int(threadIdx.x); i < V && !beaten; i += kArgmaxThreads) {
    const float xi = __bfloat162float(x[i]);
    beaten = xi > xt || (xi == xt && i < target);
  }
  const int beaten_by = block_sum<kArgmaxThreads / 32>(beaten, red);
  if (threadIdx.x == 0) greedy[blockIdx.x] = beaten_by > 0 ? 0 : 1;
}

}  // namespace

void crossentropy_forward_backward(float* losses, bf16* logits, const int32_t* targets, int rows,
                                   int V, double dloss) {
  if (rows <= 0) return;
  check(V > 0, "cuda::crossentropy_forward_backward: V = " + std::to_string(V));
  const bool aligned = V % kVec == 0 && aligned16(logits);
  const auto kernel = aligned ? crossentropy_kernel<true> : crossentropy_kernel<false>;
  kernel<<<unsigned(rows), kThreads, 0, stream()>>>(losses, logits, targets, V, dloss);
  CUDA_CHECK_LAUNCH("crossentropy_kernel");
}

void target_is_argmax(int32_t* greedy, const bf16* logits, const int32_t* targets, int rows, int V,
                      int ld) {
  if (rows <= 0) return;
  check(V > 0 && ld >= V,
        "cuda::target_is_argmax: V = " + std::to_string(V) + ", ld = " + std::to_string(ld));
  target_is_argmax_kernel<<<unsigned(rows), kArgmaxThreads, 0, stream()>>>(greedy, logits, targets,
                                                                           V, ld);
  CUDA_CHECK_LAUNCH("target_is_argmax_kernel");
}

}  // namespace unipool::cuda
