// `unipool eval` and `unipool sample`: what a trained checkpoint is for.
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
};

struct EvalResult {
  std::string checkpoint;  // the ckpt-STEP directory used
  double loss = 0;         // mean LM cross-entropy over the micro-batches
  int64_t tokens = 0;      // batches · micro_batch · seq_len
};

// Config = the checkpoint's state.json "config" with the overrides applied (e.g.
// data.train=... to evaluate on another dataset, train.micro_batch, train.threads). Loads
// model.safetensors and computes the mean LM loss over the first `batches` micro-batches of the
// split, exactly as the training loop's evaluation does (the loader starts at the split's first
// sample, so the number equals the val_loss logged at that step with the same eval_batches).
// Runs on the backend train.backend selects (the GPU when present, as the training loop does).
// Prints "val loss X | ppl Y | N tokens" ("test loss" / "train loss" for the other splits).
// Error for a missing or invalid checkpoint, a bad override or missing data.
EvalResult run_eval(const EvalOptions& options);

struct SampleOptions {
  std::string checkpoint;
  std::string prompt;        // "" starts from the end-of-document token
  int tokens = 200;          // new tokens per sample
  double temperature = 0.8;  // 0: greedy (argmax)
  int top_k = 40;            // 0: the whole vocabulary
  uint64_t seed = 1234;      // same seed + same checkpoint = same text
  int samples = 1;
  std::string tokenizer = "auto";  // auto | bytes | gpt2 (auto: by model.vocab_size 257 / 50257)
};

// Generates `samples` continuations of the prompt with the KV-cached CPU generator, printing each
// (prompt + continuation, streamed as it is drawn) and the speed. End-of-document tokens are
// printed as "<|endoftext|>" and generation continues past them. Returns the texts printed (prompt
// + continuation each). Error for a missing checkpoint, an unknown tokenizer, a prompt longer than
// model.seq_len tokens, or bad options.
std::vector<std::string> run_sample(const SampleOptions& options);

}  // namespace unipool
