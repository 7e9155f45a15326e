// One training run's state on one backend: layout, model, AdamW moments and the optimizer step
// (docs/model.md §Objective and optimizer), on one rank of a data-parallel run (engine/comm.h,
// docs/distributed.md). `unipool train` and `unipool bench` both drive it.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/comm.h"
#include "engine/config.h"
#include "engine/lock.h"
#include "engine/optimizer.h"
#include "model/backend.h"
#include "model/layout.h"
#include "model/model.h"

namespace unipool {

struct StepResult {
  double loss = 0;       // LM loss, mean over the step's micro-batches and ranks
  double aux_loss = 0;   // Σ balancing terms, mean over micro-batches and ranks
  double grad_norm = 0;  // global L2 norm before clipping
  double lr = 0;
  double comm_seconds = 0;  // time spent in collectives during the step (this rank)
  // MoE models, per layer, over the step's tokens (all micro-batches and ranks): the share of
  // tokens whose chosen gates are all 0, and the experts that got a token with a nonzero gate.
  std::vector<double> zero_gate;
  std::vector<int> experts_used;
};

// Fills one micro-batch: inputs and targets, [micro_batch, seq_len] each (host memory).
using BatchSource = std::function<void(int32_t* inputs, int32_t* targets)>;

template <class Backend>
class TrainerOn {
 public:
  using Param = typename Backend::Param;

  // Builds the model and initialises its weights from train.seed (on the host, then uploaded: the
  // same on every rank). `comm` (which must outlive the trainer) joins the ranks; its bulk
  // collectives must work on the backend's memory. The default is a single process.
  explicit TrainerOn(const Config& config, Communicator* comm = nullptr);

  // One optimizer step, collective over the ranks: zero gradients, grad_accum × (forward +
  // backward) on this rank's micro-batches, the gradients summed over ranks (each rank sums its
  // shard, in rank order), the global norm, clip, AdamW (ZeRO-0: every rank on the whole arena;
  // ZeRO-1: each on its shard, then the weights all-gathered). A non-finite loss or gradient norm
  // throws Error on every rank before any weight changes.
  StepResult train_step(const BatchSource& next_batch);

  // Mean LM loss over `batches` micro-batches of the global sequence, collective: with N ranks,
  // rank r evaluates micro-batches r, r + N, ... (what its loader's next_batch returns), and the
  // sums are added over ranks. No gradients, no pool-loss state change.
  double evaluate(const BatchSource& next_batch, int batches);

  // The routing health of the last evaluate(), over all ranks (docs/run-directory.md
  // §metrics.jsonl): {"layers": [{"zero_gate", "experts_used", "imbalance", "entropy_bits"}, ...],
  // "dead_experts"}; an empty object for a dense model.
  nlohmann::json routing_health() const;

  // UniPool-lock (lock.enabled): the curriculum's turn after the evaluation that followed step
  // `step` (collective: rank 0 decides from the last evaluate()'s counts, every rank takes its
  // state). The metrics go into the evaluation line; a non-empty stop is the fail-stop's message.
  // Without the lock: an empty decision.
  LockCurriculum::Decision lock_after_evaluation(double val_loss);

  // Checkpoints go through host memory on rank 0. gather_state() (collective) returns host arrays
  // that hold, on rank 0, the master weights and the whole AdamW moments (gathered from the ranks'
  // shards under ZeRO-1); on other ranks the moments are null. After rank 0 wrote new values into
  // them, scatter_state() (collective) makes them every rank's state (weights everywhere, moments
  // or their shards; on the GPU uploaded and the bf16 copy rewritten). On one CPU rank these are
  // the trainer's own arrays and scatter_state() does nothing.
  struct HostState {
    Param* params;
    Param* exp_avg;
    Param* exp_avg_sq;
  };
  HostState gather_state();
  void scatter_state();

  // The model's state beyond weights for a checkpoint (collective; complete on rank 0): the pool
  // loss's ĝ of rank 0 under "pool_loss", and every rank's under "pool_loss.ranks". import_state
  // gives rank r the saved rank r's ĝ, or rank (r mod saved ranks)'s when the run had fewer ranks
  // (docs/distributed.md §Resume).
  nlohmann::json export_state();
  void import_state(const nlohmann::json& state);

  // Bytes of AdamW moments this rank holds (all of them, or its shard under ZeRO-1).
  size_t optimizer_bytes() const { return 2 * exp_avg.size() * sizeof(Param); }

 private:
  std::unique_ptr<Communicator> own_comm_;  // the single process when none was given (first: comm
                                            // may refer to it)

 public:
  const Config config;
  const Layout layout;
  Communicator& comm;
  const Shard shard;  // this rank's part of the arena (gradient sums, ZeRO-1's optimizer state)
  Model<Backend> model;
  // AdamW moments, arena layout: the whole arena, or (ZeRO-1) this rank's shard of it.
  typename Backend::template Array<Param> exp_avg, exp_avg_sq;
  int step = 0;                        // optimizer steps done
  LrPlan lr_plan;                      // the learning rate's plan (a resume may re-plan it)
  std::optional<LockCurriculum> lock;  // UniPool-lock's curriculum (lock.enabled)

 private:
  bool sharded() const { return config.train.zero == 1; }
  TensorTable shard_table_;  // optimizer_table ∩ shard, offsets from its start
  std::vector<int32_t> inputs_, targets_;
  std::vector<Param> host_params_, host_exp_avg_, host_exp_avg_sq_;  // staging (see gather_state)
  // The last evaluate()'s routing statistics summed over ranks: per MoE layer [1 + 2R] (see
  // Model::routing_stats), then the number of tokens.
  std::vector<double> eval_routing_;
  // Before a training step: the routing and β the curriculum gives it.
  void apply_lock_schedule();
};

// The CPU engine's trainer (fp32).
using Trainer = TrainerOn<CpuBackend<float>>;

// Builds a trainer and says so on rank 0's console ("start-up: allocating and initialising
// 777.9M parameters (seed 1234) ... done in 31.2 s"): a 182M UniPool model allocates and fills
// several GB before its first step (`unipool train` and `unipool bench`).
template <class B>
std::unique_ptr<TrainerOn<B>> make_trainer_telling(const Config& config, Communicator& comm);

extern template class TrainerOn<CpuBackend<float>>;
#ifdef UNIPOOL_HAVE_CUDA
extern template class TrainerOn<CudaBackend>;
#endif

}  // namespace unipool
