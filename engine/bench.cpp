// `unipool bench`: times training steps of a config on random tokens (no data needed) and prints
// tok/s, achieved FLOP/s (and MFU on a GPU), counting 6 × active matmul parameters + 6·L·d·T per
// token (model/layout.h flops_per_token), the memory the run holds, the time per phase of the
// step (model/profile.h) and the time spent in communication. Under mpirun/srun it times the
// data-parallel step of every rank (docs/distributed.md); rank 0 prints, tok/s is global.
#include "engine/bench.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include "base/clock.h"
#include "base/random.h"
#include "engine/backends.h"
#include "engine/distributed.h"
#include "engine/trainer.h"
#include "model/init.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace unipool {

namespace {

// Dense bf16 tensor-core peak of an H100 SXM (the MFU denominator of docs/benchmarks.md).
constexpr double kH100PeakFlops = 989e12;

template <class B>
void bench_on(const Config& c, const BenchOptions& options, BackendKind backend,
              Communicator& comm) {
  const bool root = comm.rank() == 0;
  const int ranks = comm.size();
  check_same_config_on_every_rank(comm, c);
  std::unique_ptr<TrainerOn<B>> owner;
  on_every_rank(comm, [&] {
    check_memory(memory_need<B>(c, make_layout(c.model), Workload::train, ranks), c, backend,
                 "unipool bench");
    owner = make_trainer_telling<B>(c, comm);
  });
  TrainerOn<B>& trainer = *owner;
  if (trainer.lock) {
    // UniPool-lock: the steady state (all but the first lock_fraction of a run) is the locked
    // phase, so that is what is timed, with the contiguous partition (layer l keeps experts
    // l·K … l·K + K − 1; which experts changes nothing in the cost).
    const int L = c.model.n_layer, K = c.model.lock_set_size();
    std::vector<std::vector<int>> sets(static_cast<size_t>(L));
    for (int l = 0; l < L; ++l)
      for (int j = 0; j < K; ++j) sets[size_t(l)].push_back(l * K + j);
    trainer.lock->install_locked(sets);
    trainer.step = trainer.lock->schedule().lock;
    if (root)
      std::printf(
          "UniPool-lock: timing the locked phase (each layer routes inside its %d experts; "
          "lock.compact = %s)\n",
          K, c.model.lock.compact ? "true" : "false");
  }
  uint64_t counter = uint64_t(comm.rank()) << 40;  // each rank its own random tokens
  const int vocab = c.model.vocab_size;
  auto random_batch = [&](int32_t* in, int32_t* tg) {
    const int64_t n = static_cast<int64_t>(c.train.micro_batch) * c.model.seq_len;
    for (int64_t i = 0; i < n; ++i) {
      in[i] = static_cast<int32_t>(splitmix64(c.train.seed ^ (counter + i)) % vocab);
      tg[i] = static_cast<int32_t>(splitmix64(c.train.seed ^ (counter + i + 1)) % vocab);
    }
    counter += n;
  };
  const double tokens_per_step =
      static_cast<double>(ranks) * c.train.micro_batch * c.model.seq_len * c.train.grad_accum;
  const double flops_per_token = trainer.layout.flops_per_token();
  if (root)
    std::printf(
        "bench | %s | %s L%d d%d F%d | %.2fM params, %.2fM active | B %d × T %d × accum %d | "
        "%.3f GFLOP/token\n",
        backend_banner(backend).c_str(), name_of(c.model.ffn), c.model.n_layer, c.model.d_model,
        c.model.ffn_hidden, trainer.layout.num_parameters() / 1e6,
        trainer.layout.active_parameters(false) / 1e6, c.train.micro_batch, c.model.seq_len,
        c.train.grad_accum, flops_per_token / 1e9);
  if (root && ranks > 1)
    std::printf("ranks: %d (%s), ZeRO-%d | %.0f tokens per step over all ranks\n", ranks,
                comm.transport(), c.train.zero, tokens_per_step);
  for (int i = 0; i < options.warmup; ++i) trainer.train_step(random_batch);
  trainer.model.profile.enabled = true;  // phases are timed only in the timed steps
  trainer.model.profile.reset();
  comm.barrier();  // the ranks start the timed steps together
  const Stopwatch bench_time;
  double comm_seconds = 0;  // this rank's time in collectives
  for (int i = 0; i < options.steps; ++i) {
    const Stopwatch step_time;
    const StepResult r = trainer.train_step(random_batch);
    const double dt = step_time.seconds();
    comm_seconds += r.comm_seconds;
    if (root) {
      std::printf("  step %d: loss %.4f, %.3f s, %.0f tok/s", i + 1, r.loss, dt,
                  tokens_per_step / dt);
      if (ranks > 1) std::printf(", communication %.3f s", r.comm_seconds);
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  const double total = bench_time.seconds();
  // Communication per step: the mean over ranks and the slowest rank's (a rank that finishes its
  // micro-batches early waits in the first collective: its wait counts as communication).
  std::vector<double> per_rank(size_t(ranks), 0.0);
  per_rank[size_t(comm.rank())] = comm_seconds / options.steps;
  comm.all_reduce_sum(per_rank.data(), ranks);
  if (!root) return;
  const double tok_per_s = tokens_per_step * options.steps / total;
  const double flops = tok_per_s * flops_per_token;
  std::printf("result: %.0f tok/s | %.1f GFLOP/s | %.3f s/step | activations %.1f MiB", tok_per_s,
              flops / 1e9, total / options.steps, trainer.model.activation_bytes() / 1048576.0);
  if (backend == BackendKind::cuda) {
#ifdef UNIPOOL_HAVE_CUDA
    std::printf(" | MFU %.1f%% (of %.0f TFLOP/s) | GPU memory %.1f MiB (peak %.1f MiB)",
                100.0 * flops / kH100PeakFlops, kH100PeakFlops / 1e12,
                cuda::allocated_bytes() / 1048576.0, cuda::peak_allocated_bytes() / 1048576.0);
#endif
  }
  std::printf("\n");
  if (ranks > 1) {
    double mean = 0, most = 0;
    for (double t : per_rank) mean += t / ranks, most = std::max(most, t);
    std::printf(
        "communication: %.3f ms per step (mean over ranks; %.1f%% of the step), slowest "
        "rank %.3f ms | %.1f MiB of gradients reduced per step\n",
        1e3 * mean, 100.0 * mean / (total / options.steps), 1e3 * most,
        trainer.layout.arena_size * 4.0 / 1048576.0);
  }

  // Where the time goes, per phase of the step (summed over layers and micro-batches).
  const auto& phases = trainer.model.profile.totals();
  double profiled = 0;
  for (const auto& [name, seconds] : phases) profiled += seconds;
  std::printf("phases (ms per step; %% of the profiled time):\n");
  for (const auto& [name, seconds] : phases) {
    std::printf("  %-18s %9.3f ms  %5.1f%%\n", name.c_str(), 1e3 * seconds / options.steps,
                100.0 * seconds / std::max(profiled, 1e-12));
  }
  std::printf("  %-18s %9.3f ms (of %.3f ms per step measured)\n", "total",
              1e3 * profiled / options.steps, 1e3 * total / options.steps);
}

}  // namespace

void run_bench(const Config& c, const BenchOptions& options) {
  const BackendKind backend = select_backend(c);
  Communicator& comm = training_communicator(backend, c);
  on_backend(backend,
             [&](auto b) { bench_on<typename decltype(b)::type>(c, options, backend, comm); });
}

}  // namespace unipool
