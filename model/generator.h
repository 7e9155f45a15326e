// Autoregressive generation on the CPU with a KV cache: the training forward of model/model.cpp
// rewritten for one token at a time (docs/model.md), plus a seeded sampler.
//
//   Generator g(layout, params);         weights: the fp32 arena of `layout` (not copied; it must
//                                        outlive the generator)
//   g.reset();                           empty cache, next position 0
//   const float* logits = g.step(tok);   appends `tok` at the next position and returns the
//                                        logits of the token after it, [vocab_size]
//
// One step runs, per layer, exactly the ops of the training forward on a single row:
//   RMSNorm → Wqkv → RoPE at this position → K, V appended to the layer's cache →
//   attention of the one query row against the cache (attention_decode) → Wo, residual →
//   RMSNorm → dense SwiGLU, or router → top-k → the k chosen experts on this token (gate applied
//   before W2) → the k outputs summed in slot order, residual
// then the final RMSNorm and the LM head. Every op is the cpu op the training forward calls
// (kernels/cpu/*), so the logits equal the training forward's row for row (the matmuls even bit
// for bit: gemm sums each output element in an order independent of the number of rows).
// Everything is allocated in the constructor; step() allocates nothing. The cache holds
// max_len() = model.seq_len positions (RoPE was trained on positions 0..seq_len−1); a step beyond
// it is an Error (generate() below slides the window instead).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "base/random.h"
#include "model/layout.h"

namespace unipool {

class Generator {
 public:
  Generator(const Layout& layout, const float* params);

  void reset() { pos_ = 0; }
  const float* step(int32_t token);  // logits [vocab_size] for the next token

  int max_len() const { return max_len_; }
  int position() const { return pos_; }  // tokens in the cache
  int vocab_size() const { return layout_.config.vocab_size; }
  const Layout& layout() const { return layout_; }
  // The whole LM-head row of the last step, [padded_vocab] (the padded columns take part in the
  // training loss's softmax; step()'s logits are the first vocab_size of them).
  const float* padded_logits() const { return logits_.data(); }

 private:
  const float* param(int tensor) const { return params_ + layout_.tensors[tensor].offset; }
  void rope_one_position(float* qkv, int nrot, int hd, int pos) const;
  void attention_block(int l);
  void dense_ffn(int l);
  void moe_ffn(int l);

  Layout layout_;
  const float* params_;
  int max_len_;
  int pos_ = 0;
  double router_c_ = 0;  // NormRouter constant c(M, k)

  std::vector<float> rope_cos_, rope_sin_;  // [max_len, hd/2]
  std::vector<float> k_cache_, v_cache_;    // [L, max_len, nkv·hd] keys after RoPE, values
  std::vector<float> x_;                    // [d] residual stream
  std::vector<float> h_;                    // [d] residual after attention
  std::vector<float> xn_;                   // [d] normed input of the current block
  float rstd_ = 0;
  std::vector<float> qkv_;     // [qkv_width]
  std::vector<float> att_;     // [nh·hd] attention output before Wo
  std::vector<float> scores_;  // attention_decode scratch
  std::vector<float> h13_;     // [2F]
  std::vector<float> act_;     // [F]
  std::vector<float> z_, s_;   // [R] router logits, scores
  float znorm_ = 0;
  std::vector<int32_t> ids_;   // [k]
  std::vector<float> gates_;   // [k]
  std::vector<float> y_;       // [k, d] expert outputs in slot order
  std::vector<float> logits_;  // [Vp]
};

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
std::vector<int32_t> generate(Generator& generator, Sampler& sampler,
                              const std::vector<int32_t>& prompt, int tokens, double temperature,
                              int top_k, const std::function<void(int32_t)>& on_token = {});

}  // namespace unipool
