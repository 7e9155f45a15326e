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

// Selects the backend for train.backend (cpu | cuda | auto: cuda when a device is present) and
// sets the CPU thread count. Returns "cpu" or "cuda"; asking for cuda without a device is an Error.
std::string select_backend(const Config& config);

// One line naming the backend: the GPU's name and memory, or the CPU thread count.
std::string backend_banner(const std::string& backend);

// Device memory the run holds (GPU), 0 on the CPU.
size_t device_bytes(const std::string& backend);

}  // namespace unipool
