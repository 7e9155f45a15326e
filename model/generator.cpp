// The KV-cached generator (model/generator.h: Model::decode on a decoding model) and the sampler.
#include "model/generator.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace unipool {

// ---------------------------------------------------------------------------------------------
// Generator

template <class B>
GeneratorOn<B>::GeneratorOn(const Layout& layout, const float* params, const LockRouting& lock)
    : model_(layout, LossConfig{}, /*batch=*/1, /*seq_len=*/1,
             /*kv_cache_len=*/layout.config.seq_len),
      logits_(size_t(layout.config.padded_vocab())) {
  check(params != nullptr, "generator: no weights");
  model_.params_from_host(params);
  if (!lock.sets.empty()) model_.set_lock_routing(lock);
}

template <class B>
const float* GeneratorOn<B>::step(int32_t token) {
  check(pos_ < max_len(), "generator: the KV cache is full (model.seq_len = " +
                              std::to_string(max_len()) + " positions); reset() first");
  const auto& row = model_.decode(token, pos_);
  std::copy(row.begin(), row.end(), logits_.begin());
  ++pos_;
  return logits_.data();
}

template class GeneratorOn<CpuBackend<float>>;
#ifdef UNIPOOL_HAVE_CUDA
template class GeneratorOn<CudaBackend>;
#endif

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

template <class B>
std::vector<int32_t> generate(GeneratorOn<B>& g, Sampler& sampler,
                              const std::vector<int32_t>& prompt, int tokens, double temperature,
                              int top_k, const std::function<void(int32_t)>& on_token) {
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

template std::vector<int32_t> generate(GeneratorOn<CpuBackend<float>>&, Sampler&,
                                       const std::vector<int32_t>&, int, double, int,
                                       const std::function<void(int32_t)>&);
#ifdef UNIPOOL_HAVE_CUDA
template std::vector<int32_t> generate(GeneratorOn<CudaBackend>&, Sampler&,
                                       const std::vector<int32_t>&, int, double, int,
                                       const std::function<void(int32_t)>&);
#endif

}  // namespace unipool
