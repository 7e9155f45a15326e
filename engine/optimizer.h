// The optimizer step of SPEC.md §1 "Objective and optimizer": global-norm clipping over every
// parameter (each shared tensor once, because it is one entry of the layout), decoupled AdamW with
// weight decay on tensors of rank >= 2, and the warmup + cosine learning-rate schedule.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/config.h"
#include "model/layout.h"

namespace unipool {

// LR at optimizer step s (1-based): linear warmup to the peak over W steps, cosine to min_lr at S.
double learning_rate(const OptimConfig& optim, int total_steps, int step);

// sqrt(Σ g²) over every tensor of the layout, each once. Fixed order: tensors in layout order,
// each in chunks of kNormChunk elements summed in double; chunk sums are added in chunk order, so
// the result does not depend on the thread count.
template <typename T>
double global_grad_norm(const Layout& layout, const T* grads);

// One AdamW step on every tensor (also on those whose gradient is zero: an unused expert still
// moves through its moments). grad_scale multiplies the gradient first (the clip factor).
//   θ ← θ·(1 − lr·wd)   (rank >= 2 only)
//   m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  θ ← θ − lr · m̂ / (sqrt(v̂) + eps)
// copy: null, or an arena that receives every updated θ (the CUDA backend's bf16 weight copy has
// this argument; on the CPU the GEMMs read θ itself and the engine passes null).
template <typename T>
void adamw_step(const Layout& layout, T* params, const T* grads, T* m, T* v, T* copy, int step,
                double lr, double grad_scale, const OptimConfig& optim);

// The clip factor: clip/(norm + 1e-6) when norm > clip > 0, else 1.
double clip_factor(double norm, double clip);

}  // namespace unipool
