#include "engine/optimizer.h"

#include <algorithm>
#include <cmath>

namespace unipool {

double learning_rate(const OptimConfig& o, int total_steps, int step) {
  const int W = o.warmup_steps, S = total_steps;
  if (W > 0 && step <= W) return o.lr * step / W;
  if (step >= S) return o.min_lr;
  const double progress = static_cast<double>(step - W) / static_cast<double>(S - W);
  return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

double clip_factor(double norm, double clip) {
  return (clip > 0 && norm > clip) ? clip / (norm + 1e-6) : 1.0;
}

namespace {
constexpr int64_t kNormChunk = 1 << 15;
}

template <typename T>
double global_grad_norm(const Layout& layout, const T* grads) {
  double total = 0;
  std::vector<double> partial;
  for (const ParamTensor& t : layout.tensors) {
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
  return std::sqrt(total);
}

template <typename T>
void adamw_step(const Layout& layout, T* params, const T* grads, T* m, T* v, T* copy, int step,
                double lr, double grad_scale, const OptimConfig& o) {
  const T b1 = static_cast<T>(o.beta1), b2 = static_cast<T>(o.beta2);
  const T bias1 = static_cast<T>(1.0 - std::pow(o.beta1, step));
  const T bias2 = static_cast<T>(1.0 - std::pow(o.beta2, step));
  const T scale = static_cast<T>(grad_scale), eps = static_cast<T>(o.eps),
          lr_t = static_cast<T>(lr);
  for (const ParamTensor& t : layout.tensors) {
    const T decay = t.decay ? static_cast<T>(1.0 - lr * o.weight_decay) : T(1);
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

template double global_grad_norm<float>(const Layout&, const float*);
template double global_grad_norm<double>(const Layout&, const double*);
template void adamw_step<float>(const Layout&, float*, const float*, float*, float*, float*, int,
                                double, double, const OptimConfig&);
template void adamw_step<double>(const Layout&, double*, const double*, double*, double*, double*,
                                 int, double, double, const OptimConfig&);

}  // namespace unipool
