// Autoregressive generation with a KV cache, on any backend, and a seeded sampler.
//
//   GeneratorOn<B> g(layout, params);    weights: the fp32 arena of `layout` (host memory, copied)
//   g.reset();                           empty cache, next position 0
//   const float* logits = g.step(tok);   appends `tok` at the next position and returns the
//                                        logits of the token after it, [vocab_size]
//
// The generator is the model itself (model/model.h) built for decoding: Model<B> with batch 1,
// seq_len 1 and a KV cache of model.seq_len positions. step() is Model::decode: per layer the
// training forward's blocks on one row — RMSNorm → Wqkv → RoPE at this position → K, V appended to
// the layer's cache → attention of the one query row against the cache (attention_decode) → Wo,
// residual → RMSNorm → dense SwiGLU, or the MoE block (router → top-k → dispatch → experts →
// combine) — then the final RMSNorm and the LM head in fp32. So its logits equal the training
// forward's rows (to rounding: one row instead of many). The cache holds max_len() =
// model.seq_len positions (RoPE was trained on positions 0..seq_len−1); a step beyond it is an
// Error (generate() below slides the window instead).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "base/random.h"
#include "model/layout.h"
#include "model/model.h"

namespace unipool {

template <class Backend>
class GeneratorOn {
 public:
  // lock: UniPool-lock's routing of the weights' checkpoint (engine/lock.h), if any.
  GeneratorOn(const Layout& layout, const float* params, const LockRouting& lock = {});

  void reset() { pos_ = 0; }
  const float* step(int32_t token);  // logits [vocab_size] for the next token

  int max_len() const { return model_.kv_cache_len(); }
  int position() const { return pos_; }  // tokens in the cache
  int vocab_size() const { return model_.layout().config.vocab_size; }
  const Layout& layout() const { return model_.layout(); }
  // The whole LM-head row of the last step, [padded_vocab] (the padded columns take part in the
  // training loss's softmax; step()'s logits are the first vocab_size of them).
  const float* padded_logits() const { return logits_.data(); }

 private:
  Model<Backend> model_;
  int pos_ = 0;
  std::vector<float> logits_;  // [padded_vocab]
};

// The CPU generator (fp32).
using Generator = GeneratorOn<CpuBackend<float>>;

extern template class GeneratorOn<CpuBackend<float>>;
#ifdef UNIPOOL_HAVE_CUDA
extern template class GeneratorOn<CudaBackend>;
#endif

// Token sampling from logits, reproducible: a splitmix64 stream seeded once.
//   temperature <= 0 or top_k == 1: argmax (ties to the lower id; no random number is drawn)
//   else: p_i ∝ exp((logit_i − max) / temperature) over the top_k largest logits (top_k <= 0 or
//   >= n: all; ties in the selection go to the lower id), in double; one uniform draw picks the
//   token by walking the cumulative sum in (logit descending, id ascending) order.
class Sampler {
 public:
  explicit Sampler(uint64_t seed) : rng_{seed} {}
  int32_t sample(const float* logits, int n, double temperature, int top_k);

 private:
  SplitMix64 rng_;              // base/random.h
  std::vector<int32_t> order_;  // scratch, sized on the first call for a given n
  std::vector<double> probs_;
};

int32_t argmax(const float* x, int n);  // ties to the lower index

// Feeds `prompt` (1 <= size <= max_len, else Error) to a reset generator, then samples `tokens`
// more, calling on_token(id) for each new token as it is drawn. When the cache is full the window
// slides: the generator is reset and re-fed the last max_len/2 tokens (positions restart at 0, as
// in training where every sample starts at position 0 anywhere in the token stream). Returns the
// new tokens.
template <class Backend>
std::vector<int32_t> generate(GeneratorOn<Backend>& generator, Sampler& sampler,
                              const std::vector<int32_t>& prompt, int tokens, double temperature,
                              int top_k, const std::function<void(int32_t)>& on_token = {});

}  // namespace unipool
