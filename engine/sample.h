// `unipool sample`: text generated from a checkpoint with the KV-cached generator
// (model/generator.h).
//
// A checkpoint argument is a ckpt-STEP directory (state.json + model.safetensors), or a run
// directory (train.out_dir), in which case its newest complete checkpoint is used.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace unipool {

struct SampleOptions {
  std::string checkpoint;
  std::vector<std::string> overrides;  // "key=value" on the checkpoint's config (train.backend)
  std::string prompt;                  // "" starts from the end-of-document token
  int tokens = 200;                    // new tokens per sample
  double temperature = 0.8;            // 0: greedy (argmax)
  int top_k = 40;                      // 0: the whole vocabulary
  uint64_t seed = 1234;                // same seed + same checkpoint = same text
  int samples = 1;
  std::string tokenizer = "auto";  // auto | bytes | gpt2 (auto: by model.vocab_size 257 / 50257)
  int threads = 0;  // CPU threads (0: the checkpoint's train.threads) (one token at a time: 1 is
                    // usually fastest)
};

// Generates `samples` continuations of the prompt with the KV-cached generator on the backend
// train.backend selects (the GPU when there is one, as for eval), printing each
// (prompt + continuation, streamed as it is drawn) and the speed. End-of-document tokens are
// printed as "<|endoftext|>" and generation continues past them. Returns the texts printed (prompt
// + continuation each). Error for a missing checkpoint, an unknown tokenizer, a prompt longer than
// model.seq_len tokens, or bad options.
std::vector<std::string> run_sample(const SampleOptions& options);

}  // namespace unipool
