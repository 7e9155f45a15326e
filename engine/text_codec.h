// The tokenizer of a checkpoint, for the commands that turn text into ids and back (`unipool
// sample`, `unipool eval --task`): GPT-2 BPE for a vocabulary of 50257, bytes for 257.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/config.h"

namespace unipool {

struct TextCodec {
  std::string name;                                                // "bytes" or "gpt2"
  int32_t eod = 0;                                                 // the end-of-document token
  std::function<std::vector<int32_t>(const std::string&)> encode;  // thread-safe
  std::function<std::string(int32_t)> decode;  // one token; EOD as "<|endoftext|>"
};

// name: auto (by model.vocab_size: 257 bytes, 50257 gpt2), bytes or gpt2. Error when the name is
// unknown, the vocabulary fits no tokenizer, or the GPT-2 files are missing.
TextCodec make_codec(const std::string& name, const ModelConfig& model);

}  // namespace unipool
