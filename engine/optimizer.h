// The optimizer's schedule (docs/model.md §Objective and optimizer): the warmup + cosine learning
// rate, the clip factor, and the AdamW scalars of one step. The update itself is an op of each
// backend (kernels/cpu/optimizer.h, kernels/cuda/optimizer.cu).
#pragma once
#include "engine/config.h"
#include "kernels/op_types.h"

namespace unipool {

// LR at optimizer step s (1-based): linear warmup to the peak over W steps, cosine to min_lr at S.
double learning_rate(const OptimConfig& optim, int total_steps, int step);

// The clip factor: clip/(norm + 1e-6) when norm > clip > 0, else 1.
double clip_factor(double norm, double clip);

// The scalars of AdamW step `step` with learning rate lr and gradient scale grad_scale.
AdamWParams adamw_params(const OptimConfig& optim, int step, double lr, double grad_scale);

}  // namespace unipool
