// `unipool train`: the training loop around the trainer (engine/trainer.h).
#pragma once
#include <cstddef>
#include <string>

#include "base/error.h"
#include "data/loader.h"
#include "engine/config.h"

namespace unipool {

struct TrainOptions {
  bool resume = false;     // --resume given
  std::string resume_dir;  // its value; empty = newest checkpoint in train.out_dir
  std::string init_from;   // --init-from FILE.safetensors
  bool overwrite = false;  // --overwrite: a fresh run may replace the run in train.out_dir
};

// The data loader of a config (data.*, model.seq_len, model.vocab_size, train.seed): the one
// place a config becomes a loader, for training, its validation and `unipool eval`.
data::LoaderSpec loader_spec(const Config& config);

// The evaluation data of a config: data.valid's files whole and in order when it is set, else
// the valid part of data.train's split (read with data::Split::valid).
data::LoaderSpec validation_spec(const Config& config);

// A run ended by a stop signal (SIGINT, SIGTERM, SIGUSR1) after finishing its step and writing a
// checkpoint (docs/failure.md §Signals). `main` prints the message and exits with 128 + signal.
struct RunStopped : Error {
  RunStopped(const std::string& message, int signal_number)
      : Error(message), signal(signal_number) {}
  int signal;
};

// Runs the whole training; throws Error on bad input or a non-finite loss (after which the last
// good checkpoint is untouched).
void run_train(const Config& config, const TrainOptions& options);

}  // namespace unipool
