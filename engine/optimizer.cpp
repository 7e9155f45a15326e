#include "engine/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "base/error.h"

namespace unipool {

namespace {

// The first step of the decay window (D in engine/optimizer.h); S for a constant schedule.
int decay_start(const OptimConfig& o, int steps) {
  switch (o.schedule) {
    case LrSchedule::cosine:
    case LrSchedule::linear:
      return o.warmup_steps;
    case LrSchedule::wsd:
      return std::max(o.warmup_steps, steps - o.decay_steps);
    case LrSchedule::constant:
      break;
  }
  return steps;
}

// q at `step`: 0 before the window, 1 at its end and after.
double decay_progress(const OptimConfig& o, const LrPlan& plan, int step) {
  const int S = plan.steps;
  if (step >= S) return 1.0;
  if (plan.anchor_step > 0 && step >= plan.anchor_step)
    return plan.anchor_progress + (1.0 - plan.anchor_progress) * double(step - plan.anchor_step) /
                                      double(S - plan.anchor_step);
  const int D = decay_start(o, S);
  if (step <= D) return 0.0;
  return double(step - D) / double(S - D);
}

std::string format_lr(double lr) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3e", lr);
  return buf;
}

}  // namespace

nlohmann::json LrPlan::to_json() const {
  return {{"steps", steps}, {"anchor_step", anchor_step}, {"anchor_progress", anchor_progress}};
}

LrPlan LrPlan::from_json(const nlohmann::json& j) {
  check(j.is_object(), "checkpoint state: schedule must be an object");
  LrPlan p;
  try {
    p.steps = j.at("steps").get<int>();
    p.anchor_step = j.at("anchor_step").get<int>();
    p.anchor_progress = j.at("anchor_progress").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("checkpoint state: schedule: ") + e.what());
  }
  check(p.steps >= 1 && p.anchor_step >= 0 && p.anchor_step < p.steps &&
            p.anchor_progress >= 0 && p.anchor_progress <= 1,
        "checkpoint state: schedule: steps, anchor_step or anchor_progress out of range");
  return p;
}

double learning_rate(const OptimConfig& o, const LrPlan& plan, int step) {
  const int W = o.warmup_steps;
  if (W > 0 && step <= W) return o.lr * step / W;
  const double q = decay_progress(o, plan, step);
  switch (o.schedule) {
    case LrSchedule::cosine:
      return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + std::cos(M_PI * q));
    case LrSchedule::linear:
    case LrSchedule::wsd:
      return o.lr - (o.lr - o.min_lr) * q;
    case LrSchedule::constant:
      break;
  }
  return o.lr;
}

LrPlan continue_lr_plan(const OptimConfig& before, const LrPlan& saved, const OptimConfig& after,
                        int steps, int done, std::vector<std::string>* notes) {
  LrPlan plan;
  plan.steps = steps;
  const bool same_shape = before.schedule == after.schedule &&
                          before.warmup_steps == after.warmup_steps;
  const bool same_window = saved.steps == steps && before.decay_steps == after.decay_steps;
  const double q = decay_progress(before, saved, done);
  if (same_shape && same_window) {
    plan = saved;
  } else if (same_shape && q > 0) {
    // Already decaying: keep the progress reached, spread the rest over the steps left.
    plan.anchor_step = done;
    plan.anchor_progress = q;
    if (q < 1.0)
      notes->push_back("schedule: the " + std::string(name_of(after.schedule)) +
                       " decay continues from step " + std::to_string(done) + " (" +
                       std::to_string(int(std::lround(100 * q))) +
                       "% done) and reaches optim.min_lr at step " + std::to_string(steps));
    else
      notes->push_back("schedule: the checkpoint had finished its decay: the run continues at "
                       "optim.min_lr (for a new decay, resume from a checkpoint before it, or "
                       "train with optim.schedule = wsd)");
  } else if (saved.steps != steps) {
    notes->push_back("schedule: the " + std::string(name_of(after.schedule)) +
                     " schedule is re-planned for train.steps = " + std::to_string(steps));
  }
  // Continuity: the new plan must give the last step done the rate it had.
  const double was = learning_rate(before, saved, done);
  const double now = learning_rate(after, plan, done);
  if (std::fabs(now - was) > 1e-9 * std::max(std::fabs(was), 1e-30))
    notes->push_back("warning: the learning rate jumps: step " + std::to_string(done) + " had " +
                     format_lr(was) + ", this run's schedule continues from " + format_lr(now) +
                     " (step " + std::to_string(done + 1) + ": " +
                     format_lr(learning_rate(after, plan, done + 1)) + ")");
  return plan;
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
