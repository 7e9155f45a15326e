// `unipool bench` and `unipool bench-tokenizer`: speed, measured (docs/benchmarks.md).
#pragma once
#include <string>
#include <vector>

#include "engine/config.h"

namespace unipool {

struct BenchOptions {
  int steps = 5;
  int warmup = 1;
};
// Times `steps` training steps of the config on random tokens (after `warmup` untimed ones);
// prints tok/s, GFLOP/s (MFU on a GPU), memory and the time per phase of a step.
void run_bench(const Config& config, const BenchOptions& options);

// GPT-2 tokenizer speed (MB/s) on text files with `threads` encoding threads.
void run_tokenizer_bench(const std::vector<std::string>& files, int threads);

}  // namespace unipool
