// One training run's state on one backend: layout, model, AdamW moments and the optimizer step
// (docs/model.md §Objective and optimizer). `unipool train` and `unipool bench` both drive it.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/config.h"
#include "model/backend.h"
#include "model/layout.h"
#include "model/model.h"

namespace unipool {

struct StepResult {
  double loss = 0;       // LM loss, mean over the step's micro-batches
  double aux_loss = 0;   // Σ balancing terms, mean over micro-batches
  double grad_norm = 0;  // global L2 norm before clipping
  double lr = 0;
};

// Fills one micro-batch: inputs and targets, [micro_batch, seq_len] each (host memory).
using BatchSource = std::function<void(int32_t* inputs, int32_t* targets)>;

template <class Backend>
class TrainerOn {
 public:
  using Param = typename Backend::Param;

  // Builds the model and initialises its weights from train.seed (on the host, then uploaded).
  explicit TrainerOn(const Config& config);

  // One optimizer step: zero gradients, grad_accum × (forward + backward), norm, clip, AdamW.
  // A non-finite loss or gradient norm throws Error before any weight changes.
  StepResult train_step(const BatchSource& next_batch);

  // Mean LM loss over `batches` micro-batches (no gradients, no pool-loss state change).
  double evaluate(const BatchSource& next_batch, int batches);

  // Checkpoints go through host memory. host_state() returns host arrays holding the master
  // weights and the AdamW moments (on the CPU the trainer's own arrays; on the GPU copies made
  // now); after writing into them, commit_host_state() makes them the trainer's state (on the GPU:
  // uploads them and rewrites the bf16 weight copy).
  struct HostState {
    Param* params;
    Param* exp_avg;
    Param* exp_avg_sq;
  };
  HostState host_state();
  void commit_host_state();

  const Config config;
  const Layout layout;
  Model<Backend> model;
  typename Backend::template Array<Param> exp_avg, exp_avg_sq;  // AdamW moments, arena layout
  int step = 0;                                                 // optimizer steps done

 private:
  std::vector<int32_t> inputs_, targets_;
  std::vector<Param> host_params_, host_exp_avg_, host_exp_avg_sq_;  // GPU only: staging
};

// The CPU engine's trainer (fp32).
using Trainer = TrainerOn<CpuBackend<float>>;

extern template class TrainerOn<CpuBackend<float>>;
#ifdef UNIPOOL_HAVE_CUDA
extern template class TrainerOn<CudaBackend>;
#endif

}  // namespace unipool
