// `unipool bench`: times training steps of a config on random tokens (no data needed) and prints
// tok/s and achieved GFLOP/s, counting 6 × active matmul parameters + 6·L·d·T per token.
#include <omp.h>

#include <chrono>
#include <cstdio>

#include "engine/train.h"
#include "engine/trainer.h"
#include "model/init.h"

namespace unipool {

void run_bench(const Config& c, const BenchOptions& options) {
  const std::string backend = select_backend(c);
  Trainer trainer(c);
  uint64_t counter = 0;
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
      static_cast<double>(c.train.micro_batch) * c.model.seq_len * c.train.grad_accum;
  const double flops_per_token = trainer.layout.flops_per_token();
  std::printf(
      "bench | backend %s, %d threads | %s L%d d%d F%d | %.2fM params, %.2fM active | B %d × T %d "
      "× accum %d | "
      "%.3f GFLOP/token\n",
      backend.c_str(), omp_get_max_threads(), c.model.ffn.c_str(), c.model.n_layer, c.model.d_model,
      c.model.ffn_hidden, trainer.layout.num_parameters() / 1e6,
      trainer.layout.active_parameters(false) / 1e6, c.train.micro_batch, c.model.seq_len,
      c.train.grad_accum, flops_per_token / 1e9);
  for (int i = 0; i < options.warmup; ++i) trainer.train_step(random_batch);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < options.steps; ++i) {
    const auto ts = std::chrono::steady_clock::now();
    const StepResult r = trainer.train_step(random_batch);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    std::printf("  step %d: loss %.4f, %.3f s, %.0f tok/s\n", i + 1, r.loss, dt,
                tokens_per_step / dt);
    std::fflush(stdout);
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double tok_per_s = tokens_per_step * options.steps / total;
  std::printf("result: %.0f tok/s | %.1f GFLOP/s | %.3f s/step\n", tok_per_s,
              tok_per_s * flops_per_token / 1e9, total / options.steps);
}

}  // namespace unipool
