// `unipool train` and `unipool bench`: the training loop around Trainer (engine/trainer.h).
#pragma once
#include <cstddef>
#include <string>

#include "engine/config.h"

namespace unipool {

struct TrainOptions {
  bool resume = false;     // --resume given
  std::string resume_dir;  // its value; empty = newest checkpoint in train.out_dir
  std::string init_from;   // --init-from FILE.safetensors
};

// Runs the whole training; throws Error on bad input or a non-finite loss (after which the last
// good checkpoint is untouched).
void run_train(const Config& config, const TrainOptions& options);

struct BenchOptions {
  int steps = 5;
  int warmup = 1;
};
// Times `steps` training steps of the config on random tokens; prints tok/s and GFLOP/s.
void run_bench(const Config& config, const BenchOptions& options);

}  // namespace unipool
