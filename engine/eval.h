// `unipool eval`: the loss and perplexity of a checkpoint on a split of its data (or another).
//
// A checkpoint argument is a ckpt-STEP directory (state.json + model.safetensors), or a run
// directory (train.out_dir), in which case its newest complete checkpoint is used.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace unipool {

struct EvalOptions {
  std::string checkpoint;
  std::vector<std::string> overrides;  // "key=value", applied to the checkpoint's config
  int batches = 0;                     // micro-batches; 0: train.eval_batches
  std::string split = "valid";         // valid | test | train
  // Zero-shot downstream evaluation instead (engine/zero_shot.h) when task is set:
  std::string task;         // hellaswag, arc_easy, ... (engine/tasks.h)
  std::string data;         // the task's file; without a task: a token file (PREFIX) read whole
  int limit = 0;            // the first N examples (0: all)
  std::string out;          // the results JSON ("": none)
  std::string per_example;  // JSON lines, one per example ("": none)
};

struct EvalResult {
  std::string checkpoint;  // the ckpt-STEP directory used
  double loss = 0;         // mean LM cross-entropy over the micro-batches
  int64_t tokens = 0;      // batches · micro_batch · seq_len
};

// Config = the checkpoint's state.json "config" with the overrides applied (e.g.
// data.train=... to evaluate on another dataset, train.micro_batch, train.threads). Loads
// model.safetensors and computes the mean LM loss over the first `batches` micro-batches of the
// split (for valid: data.valid when the config has it), or of the token file `data` read whole and
// in order, exactly as the training loop's evaluation does (the loader starts at the split's first
// sample, so the number equals the val_loss logged at that step with the same eval_batches).
// Runs on the backend train.backend selects (the GPU when present, as the training loop does).
// Prints "val loss X | ppl Y | N tokens" ("test loss" / "train loss" for the other splits).
// Error for a missing or invalid checkpoint, a bad override or missing data.
EvalResult run_eval(const EvalOptions& options);

}  // namespace unipool
