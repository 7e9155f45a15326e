// The model variants the tests sweep (finite differences in tests/test_model.cpp, GPU vs CPU in
// tests/test_cuda_model.cpp, generation in tests/test_generator.cpp): one struct and one way to
// apply it to a config, so every test names a variant the same way.
#pragma once
#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "engine/config.h"
#include "model/model.h"

namespace unipool::test {

struct ModelVariant {
  const char* name;
  FfnKind ffn;
  RouterKind router;
  int top_k = 1;
  int router_share = 1;
  int pool_group = 0;
  int pool_size = 0;  // 0: the test's own default
  bool renorm = false;
  double aux = 0, pool_aux = 0, z_loss = 0;
  bool expert_bias = false;
  // UniPool-lock: the sets of a phase (lock_alpha >= 0; none when < 0), locked (the compact
  // path), and β of the entropy term. Either builds the model with lock.enabled.
  double lock_alpha = -1;
  bool lock_locked = false;
  double entropy = 0;
  bool lock() const { return lock_alpha >= 0 || entropy > 0; }
};

// Sets the variant's keys of c.model and c.loss (the shape stays the test's).
inline void apply_variant(Config& c, const ModelVariant& v) {
  ModelConfig& m = c.model;
  m.ffn = v.ffn;
  m.router = v.router;
  m.top_k = v.top_k;
  m.router_share = v.router_share;
  m.pool_group = v.pool_group;
  if (v.pool_size > 0) m.pool_size = v.pool_size;
  m.router_renorm = v.renorm;
  c.loss.aux_coeff = v.aux;
  c.loss.pool_aux_coeff = v.pool_aux;
  c.loss.z_loss_coeff = v.z_loss;
  m.expert_bias = v.expert_bias;
  if (v.lock()) {  // (its preconditions: a validation at the freeze and at the lock)
    m.lock.enabled = true;
    m.lock.entropy_target = std::min(2, m.pool_size / m.n_layer);
    c.train.eval_every = 1;
  }
}

// The variant's UniPool-lock routing and β on a model built from its config: the pool shuffled
// (a fixed seed) and cut into the layers' sets.
template <class M>
void apply_lock_variant(M& model, const Config& c, const ModelVariant& v) {
  if (!v.lock()) return;
  model.set_entropy_coeff(v.entropy);
  if (v.lock_alpha < 0) return;
  const int M_ = c.model.pool_size, K = c.model.lock_set_size();
  std::vector<int> experts(static_cast<size_t>(M_));
  std::iota(experts.begin(), experts.end(), 0);
  std::shuffle(experts.begin(), experts.end(), std::mt19937(11));
  LockRouting r;
  for (int l = 0; l < c.model.n_layer; ++l)
    r.sets.emplace_back(experts.begin() + l * K, experts.begin() + (l + 1) * K);
  r.alpha = v.lock_alpha;
  r.locked = v.lock_locked;
  model.set_lock_routing(r);
}

}  // namespace unipool::test
