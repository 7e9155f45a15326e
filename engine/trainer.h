// One training run's state on the CPU backend: layout, model, AdamW moments and the optimizer step
// (SPEC.md §1 "Objective and optimizer"). `unipool train` and `unipool bench` both drive it.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/config.h"
#include "model/layout.h"
#include "model/model.h"

namespace unipool {

struct StepResult {
  double loss = 0;       // LM loss, mean over the step's micro-batches
  double aux_loss = 0;   // Σ balancing terms, mean over micro-batches
  double grad_norm = 0;  // global L2 norm before clipping
  double lr = 0;
};

class Trainer {
 public:
  explicit Trainer(const Config& config);

  // Fills one micro-batch: inputs and targets, [micro_batch, seq_len] each.
  using BatchSource = std::function<void(int32_t* inputs, int32_t* targets)>;

  // One optimizer step: zero gradients, grad_accum × (forward + backward), norm, clip, AdamW.
  // A non-finite loss or gradient norm throws Error before any weight changes.
  StepResult train_step(const BatchSource& next_batch);

  // Mean LM loss over `batches` micro-batches (no gradients, no pool-loss state change).
  double evaluate(const BatchSource& next_batch, int batches);

  const Config config;
  const Layout layout;
  Model<float> model;
  std::vector<float> exp_avg, exp_avg_sq;  // AdamW moments, same layout as the weights
  int step = 0;                            // optimizer steps done

 private:
  std::vector<int32_t> inputs_, targets_;
};

}  // namespace unipool
