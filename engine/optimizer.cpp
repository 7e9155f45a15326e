#include "engine/optimizer.h"

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

AdamWParams adamw_params(const OptimConfig& o, int step, double lr, double grad_scale) {
  AdamWParams p;
  p.step = step;
  p.lr = lr;
  p.beta1 = o.beta1;
  p.beta2 = o.beta2;
  p.eps = o.eps;
  p.weight_decay = o.weight_decay;
  p.grad_scale = grad_scale;
  return p;
}

}  // namespace unipool
