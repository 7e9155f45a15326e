// The optimizer's schedule (docs/model.md §Objective and optimizer, docs/config.md §Schedules): the
// learning rate (warmup, then cosine, linear, constant or warmup-stable-decay), how a resumed run
// with another horizon continues it, the clip factor, and the AdamW scalars of one step. The update itself is an op of each
// backend (kernels/cpu/optimizer.h, kernels/cuda/optimizer.cu).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "kernels/op_types.h"

namespace unipool {

// The learning rate's plan for a run: the horizon, and where a resumed run re-planned its decay.
// After the warmup (W = optim.warmup_steps steps, lr·s/W) the decaying schedules follow a progress
// q in [0, 1] through their decay window [D, S] (cosine, linear: D = W; wsd: D = max(W, S −
// optim.decay_steps); constant has no window): q = (s − D)/(S − D), and
//   cosine  lr = min_lr + (lr − min_lr)·(1 + cos(π q))/2
//   linear, wsd  lr = lr − (lr − min_lr)·q
// A run resumed inside its decay with another horizon (--set train.steps=N) keeps the progress it
// reached and spreads the rest over the steps left: from the anchor step a on,
//   q(s) = q_a + (1 − q_a)·(s − a)/(S − a),
// so the learning rate continues from the value it had and reaches min_lr at the new end.
struct LrPlan {
  int steps = 0;               // S: train.steps
  int anchor_step = 0;         // a (0: no anchor)
  double anchor_progress = 0;  // q_a

  nlohmann::json to_json() const;
  // state.json's "schedule" (what to_json wrote); Error naming the key for a malformed one.
  static LrPlan from_json(const nlohmann::json& j);
};

// LR at optimizer step `step` (1-based) under `plan`.
double learning_rate(const OptimConfig& optim, const LrPlan& plan, int step);

// How a run resumed after step `done` continues the schedule of its checkpoint (its optim config
// `before` and plan `saved`) under the new config `after` with train.steps = steps: the same plan
// when nothing changed; an anchor at `done` when the horizon or the wsd decay length changed while
// the same schedule was already decaying; else the new config's plain plan. `notes` gets a line
// for the console saying what changed, and a warning when the schedule is not continuous (the new
// plan gives step `done` another rate than it had: another optim.lr, schedule or warmup).
LrPlan continue_lr_plan(const OptimConfig& before, const LrPlan& saved, const OptimConfig& after,
                        int steps, int done, std::vector<std::string>* notes);

// The clip factor: clip/(norm + 1e-6) when norm > clip > 0, else 1.
double clip_factor(double norm, double clip);

// The scalars of AdamW step `step` with learning rate lr and gradient scale grad_scale.
AdamWParams adamw_params(const OptimConfig& optim, int step, double lr, double grad_scale);

}  // namespace unipool
