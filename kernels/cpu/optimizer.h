// CPU optimizer ops: the global gradient norm and AdamW over a table of tensors
// (kernels/op_types.h). Header-only templates on T (float for training, double for tests), like
// every CPU op. The CUDA twins are in kernels/cuda/optimizer.cu.
//
// DETERMINISM: the norm sums each tensor in fixed chunks of kNormChunk elements (double), the
// chunks in chunk order and the tensors in table order, so it does not depend on the thread count;
// AdamW is elementwise.
#pragma once
// Part of the CPU op list: include kernels/cpu/ops.h (which declares every op), not this file.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/op_types.h"

namespace unipool::cpu {

constexpr int64_t kNormChunk = int64_t(1) << 15;

// Σ g² over every tensor of the table, each once (the global norm is its square root, taken by the
// trainer after adding the ranks' shares).
template <typename T>
double grad_sum_squares(const TensorTable& tensors, const T* grads) {
  double total = 0;
  std::vector<double> partial;
  for (const TensorSpan& t : tensors) {
    const T* g = grads + t.offset;
    const int64_t chunks = (t.numel + kNormChunk - 1) / kNormChunk;
    partial.assign(chunks, 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t end = std::min(t.numel, (c + 1) * kNormChunk);
      double s = 0;
      for (int64_t i = c * kNormChunk; i < end; ++i) s += static_cast<double>(g[i]) * g[i];
      partial[c] = s;
    }
    for (double s : partial) total += s;
  }
  return total;
}

// One AdamW step on every tensor of the table (also on those whose gradient is zero: an unused
// expert still moves through its moments). g = grad·grad_scale, then
//   θ ← θ·(1 − lr·wd)   (tensors with decay only)
//   m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  θ ← θ − lr · m̂ / (sqrt(v̂) + eps)
// copy: null, or an arena that receives every updated θ (the CUDA twin writes its bf16 weight copy
// there; on the CPU the GEMMs read θ itself and the engine passes null).
template <typename T>
void adamw_step(const TensorTable& tensors, T* params, const T* grads, T* m, T* v, T* copy,
                const AdamWParams& o) {
  const T b1 = static_cast<T>(o.beta1), b2 = static_cast<T>(o.beta2);
  const T bias1 = static_cast<T>(1.0 - std::pow(o.beta1, o.step));
  const T bias2 = static_cast<T>(1.0 - std::pow(o.beta2, o.step));
  const T scale = static_cast<T>(o.grad_scale), eps = static_cast<T>(o.eps),
          lr_t = static_cast<T>(o.lr);
  for (const TensorSpan& t : tensors) {
    const T decay = t.decay ? static_cast<T>(1.0 - o.lr * o.weight_decay) : T(1);
    T* p = params + t.offset;
    const T* g = grads + t.offset;
    T* mt = m + t.offset;
    T* vt = v + t.offset;
#pragma omp parallel for schedule(static) if (t.numel > 4096)
    for (int64_t i = 0; i < t.numel; ++i) {
      const T grad = g[i] * scale;
      mt[i] = b1 * mt[i] + (T(1) - b1) * grad;
      vt[i] = b2 * vt[i] + (T(1) - b2) * grad * grad;
      const T m_hat = mt[i] / bias1, v_hat = vt[i] / bias2;
      p[i] = p[i] * decay - lr_t * m_hat / (std::sqrt(v_hat) + eps);
    }
    if (copy != nullptr) std::copy(p, p + t.numel, copy + t.offset);
  }
}

}  // namespace unipool::cpu
