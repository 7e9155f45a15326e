// The model variants the tests sweep (finite differences in tests/test_model.cpp, GPU vs CPU in
// tests/test_cuda_model.cpp, generation in tests/test_generator.cpp): one struct and one way to
// apply it to a config, so every test names a variant the same way.
#pragma once
#include "engine/config.h"

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
}

}  // namespace unipool::test
