// One-token-at-a-time forward with a KV cache (see generator.h), and the sampler.
// Read step() top to bottom next to Model<T>::forward in model.cpp: the same ops, on one row.
#include "model/generator.h"

#include "model/init.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "kernels/cpu/ops.h"
#include "model/normrouter_constant.h"

namespace unipool {

using namespace cpu;

// ---------------------------------------------------------------------------------------------
// Construction: every buffer sized once.

Generator::Generator(const Layout& layout, const float* params)
    : layout_(layout), params_(params), max_len_(layout.config.seq_len) {
  const ModelConfig& c = layout_.config;
  check(params != nullptr, "generator: no weights");
  const int d = c.d_model, hd = c.head_dim(), kv = c.n_kv_head * hd, F = c.ffn_hidden;
  const int k = c.top_k, R = c.router_width();
  rope_cos_.resize(static_cast<size_t>(max_len_) * hd / 2);
  rope_sin_.resize(rope_cos_.size());
  rope_tables(rope_cos_.data(), rope_sin_.data(), max_len_, hd, c.rope_base);
  k_cache_.resize(static_cast<size_t>(c.n_layer) * max_len_ * kv);
  v_cache_.resize(k_cache_.size());
  x_.resize(d);
  h_.resize(d);
  xn_.resize(d);
  qkv_.resize(c.qkv_width());
  att_.resize(static_cast<size_t>(c.n_head) * hd);
  scores_.resize(static_cast<size_t>(max_len_) + 16);
  h13_.resize(2 * static_cast<size_t>(F));
  act_.resize(F);
  if (c.is_moe()) {
    z_.resize(R);
    s_.resize(R);
    ids_.resize(k);
    gates_.resize(k);
    y_.resize(static_cast<size_t>(k) * d);
    if (c.router == RouterKind::norm) router_c_ = normrouter_constant(R, k);
  }
  logits_.resize(c.padded_vocab());
}

// ---------------------------------------------------------------------------------------------
// One step

const float* Generator::step(int32_t token) {
  const ModelConfig& c = layout_.config;
  check(token >= 0 && token < c.vocab_size, "generator: token id " + std::to_string(token) +
                                                " is outside the vocabulary [0, " +
                                                std::to_string(c.vocab_size) + ")");
  check(pos_ < max_len_, "generator: the KV cache is full (model.seq_len = " +
                             std::to_string(max_len_) + " positions); reset() first");
  const int d = c.d_model;
  embedding_forward(x_.data(), &token, param(layout_.tok_embeddings), 1, d);
  for (int l = 0; l < c.n_layer; ++l) {
    attention_block(l);  // x → h, xn = RMSNorm(h)
    if (c.is_moe()) {
      moe_ffn(l);  // h → x
    } else {
      dense_ffn(l);
    }
  }
  ++pos_;
  rmsnorm_forward(xn_.data(), &rstd_, x_.data(), param(layout_.final_norm), 1, d, c.norm_eps);
  matmul_forward(logits_.data(), xn_.data(), param(layout_.output), 1, d, c.padded_vocab());
  return logits_.data();
}

// rope_forward's rotation (rotate-half) of the nrot = nh + nkv query and key heads at the front of
// one qkv row, at position pos. Written out here rather than calling rope_forward(B = 1, Tlen = 1):
// rope_forward opens an OpenMP region for its rows, and waking the thread team for one row costs
// more than the row itself (up to milliseconds per call on busy cores).
void Generator::rope_one_position(float* qkv, int nrot, int hd, int pos) const {
  const int half = hd / 2;
  const float* c = rope_cos_.data() + static_cast<size_t>(pos) * half;
  const float* s = rope_sin_.data() + static_cast<size_t>(pos) * half;
  for (int hh = 0; hh < nrot; ++hh) {
    float* x = qkv + hh * hd;
    for (int i = 0; i < half; ++i) {
      const float x1 = x[i], x2 = x[i + half];
      x[i] = x1 * c[i] - x2 * s[i];
      x[i + half] = x2 * c[i] + x1 * s[i];
    }
  }
}

// h = x + Wo · Attn(RoPE(Wqkv · RMSNorm(x))) with this position's K, V appended to the cache;
// then xn = RMSNorm(h) for the FFN.
void Generator::attention_block(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  const int d = c.d_model, nh = c.n_head, nkv = c.n_kv_head, hd = c.head_dim(), kv = nkv * hd;
  rmsnorm_forward(xn_.data(), &rstd_, x_.data(), param(v.attn_norm), 1, d, c.norm_eps);
  matmul_forward(qkv_.data(), xn_.data(), param(v.wqkv), 1, d, c.qkv_width());
  rope_one_position(qkv_.data(), nh + nkv, hd, pos_);
  float* kc = k_cache_.data() + static_cast<size_t>(l) * max_len_ * kv;
  float* vc = v_cache_.data() + static_cast<size_t>(l) * max_len_ * kv;
  std::copy_n(qkv_.data() + nh * hd, kv, kc + static_cast<size_t>(pos_) * kv);
  std::copy_n(qkv_.data() + (nh + nkv) * hd, kv, vc + static_cast<size_t>(pos_) * kv);
  attention_decode(att_.data(), qkv_.data(), kc, vc, kv, pos_ + 1, nh, nkv, hd, scores_.data());
  std::copy(x_.begin(), x_.end(), h_.begin());
  matmul_forward(h_.data(), att_.data(), param(v.wo), 1, d, d, /*accumulate=*/true);
  rmsnorm_forward(xn_.data(), &rstd_, h_.data(), param(v.ffn_norm), 1, d, c.norm_eps);
}

// x = h + W2 · (silu(g) ⊙ v), [g; v] = W13 · xn
void Generator::dense_ffn(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  const int d = c.d_model, F = c.ffn_hidden;
  matmul_forward(h13_.data(), xn_.data(), param(v.w13), 1, d, 2 * F);
  swiglu_forward(act_.data(), h13_.data(), 1, F);
  std::copy(h_.begin(), h_.end(), x_.begin());
  matmul_forward(x_.data(), act_.data(), param(v.w2), 1, F, d, /*accumulate=*/true);
}

// Router → top-k → each chosen expert on this token: y_j = W2_e (p_j · silu(g) ⊙ v) → x = h + Σ_j
// y_j in slot order.
void Generator::moe_ffn(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  const int d = c.d_model, F = c.ffn_hidden, k = c.top_k, R = c.router_width();
  matmul_forward(z_.data(), xn_.data(), param(v.router), 1, d, R);
  if (c.router == RouterKind::norm) {
    norm_router_forward(s_.data(), &znorm_, z_.data(), param(v.router_scale), router_c_, 1, R);
  } else {
    softmax_forward(s_.data(), z_.data(), 1, R);
  }
  topk_forward(ids_.data(), gates_.data(), s_.data(), 1, R, k, c.router_renorm);
  const int64_t w13_size = 2LL * F * d, w2_size = static_cast<int64_t>(d) * F;
  for (int j = 0; j < k; ++j) {
    const int64_t e = ids_[j];
    matmul_forward(h13_.data(), xn_.data(), param(v.w13) + e * w13_size, 1, d, 2 * F);
    swiglu_forward(act_.data(), h13_.data(), 1, F);
    scale_rows(act_.data(), act_.data(), &gates_[j], 1, F);  // the gate before W2
    matmul_forward(y_.data() + static_cast<int64_t>(j) * d, act_.data(), param(v.w2) + e * w2_size,
                   1, F, d);
  }
  std::copy(h_.begin(), h_.end(), x_.begin());
  for (int j = 0; j < k; ++j) {
    const float* y = y_.data() + static_cast<int64_t>(j) * d;
    for (int i = 0; i < d; ++i) x_[i] += y[i];
  }
}

// ---------------------------------------------------------------------------------------------
// Sampling

int32_t argmax(const float* x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

int32_t Sampler::sample(const float* logits, int n, double temperature, int top_k) {
  check(n >= 1, "sampler: no logits");
  if (temperature <= 0 || top_k == 1) return argmax(logits, n);
  const int k = top_k <= 0 || top_k >= n ? n : top_k;
  if (static_cast<int>(order_.size()) != n) {
    order_.resize(n);
    probs_.resize(n);
  }
  // Candidates in (logit descending, id ascending) order; only the first k need sorting.
  for (int i = 0; i < n; ++i) order_[i] = i;
  auto before = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  if (k < n) {
    std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), before);
  } else {
    std::sort(order_.begin(), order_.end(), before);
  }
  const double m = logits[order_[0]];
  double sum = 0;
  for (int i = 0; i < k; ++i) {
    probs_[i] = std::exp((static_cast<double>(logits[order_[i]]) - m) / temperature);
    sum += probs_[i];
  }
  const double u = rng_.uniform() * sum;
  double run = 0;
  for (int i = 0; i < k; ++i) {
    run += probs_[i];
    if (u < run) return order_[i];
  }
  return order_[k - 1];  // u landed on the rounding of the last partial sum
}

// ---------------------------------------------------------------------------------------------
// Generation loop

std::vector<int32_t> generate(Generator& g, Sampler& sampler, const std::vector<int32_t>& prompt,
                              int tokens, double temperature, int top_k,
                              const std::function<void(int32_t)>& on_token) {
  check(!prompt.empty(), "generate: the prompt needs at least one token");
  check(static_cast<int>(prompt.size()) <= g.max_len(),
        "generate: the prompt has " + std::to_string(prompt.size()) +
            " tokens, more than model.seq_len = " + std::to_string(g.max_len()));
  check(tokens >= 0, "generate: the number of tokens must be >= 0");
  std::vector<int32_t> context(prompt);  // everything so far, for sliding the window
  context.reserve(prompt.size() + tokens);
  g.reset();
  const float* logits = nullptr;
  for (int32_t t : prompt) logits = g.step(t);
  std::vector<int32_t> out;
  out.reserve(tokens);
  for (int i = 0; i < tokens; ++i) {
    const int32_t next = sampler.sample(logits, g.vocab_size(), temperature, top_k);
    out.push_back(next);
    context.push_back(next);
    if (on_token) on_token(next);
    if (i + 1 == tokens) break;
    if (g.position() == g.max_len()) {  // full: restart from the last half of the context
      const int keep = std::max(1, g.max_len() / 2);
      g.reset();
      for (size_t j = context.size() - keep; j + 1 < context.size(); ++j) g.step(context[j]);
    }
    logits = g.step(next);
  }
  return out;
}

}  // namespace unipool
