// The unigram baseline of a split: the entropy, in nats, of the token frequencies of the split a
// Loader with the same spec reads. It is the validation loss a model reaches that knows nothing but
// how often each token occurs, so a trained model's loss should end clearly below it.
//
// Per dataset of the blend: the split's token stream (its document range, as the Loader cuts it;
// docs/data.md) is counted whole when it holds at most max_tokens / (datasets with samples)
// tokens; a longer one is counted in 1024 evenly spaced windows that add up to that many tokens
// (counted = false then tells the caller it is an estimate). The datasets' frequencies are mixed
// with the blend's normalised weights, the shares the Loader draws from them: p(t) = Σ_d w_d ·
// n_d(t) / n_d. Every token counted must be below spec.vocab_size (an Error names the file and the
// position otherwise). Cost: one pass over at most max_tokens tokens of the memory-mapped files
// (the default, 50M tokens, is about a tenth of a second per 10M on one core) and a vocab_size
// array.
#pragma once
#include <cstdint>

#include "data/loader.h"

namespace unipool::data {

struct UnigramBaseline {
  double entropy = 0;    // nats per token, -Σ p(t) ln p(t)
  int64_t tokens = 0;    // tokens counted, all datasets together
  int64_t distinct = 0;  // token ids with a nonzero probability
  bool whole = true;     // every token of the split was counted (false: windows, an estimate)
};

constexpr int64_t kUnigramMaxTokens = 50'000'000;

UnigramBaseline unigram_baseline(const LoaderSpec& spec, Split split,
                                 int64_t max_tokens = kUnigramMaxTokens);

}  // namespace unipool::data
