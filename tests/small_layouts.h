// Small parameter layouts (model/layout.h) of the optimizer tests: the CPU optimizer
// (tests/test_optimizer.cpp) and the CUDA optimizer against it (tests/test_cuda_optimizer.cpp).
#pragma once
#include "model/config.h"
#include "model/layout.h"

namespace unipool::test {

// A tiny UniPool layout with shared tensors, for the CPU optimizer: the 4 layers share one pool
// (pools.0.*, used 4 times) and router_share 2 makes each router serve 2 layers, so the global
// norm must count each shared tensor once; NormRouter's scalar router scales (rank 0) are not
// weight-decayed.
inline Layout small_pool_layout() {
  ModelConfig m;
  m.vocab_size = 11;
  m.vocab_multiple = 4;
  m.seq_len = 4;
  m.n_layer = 4;
  m.d_model = 8;
  m.n_head = 2;
  m.n_kv_head = 1;
  m.ffn_hidden = 6;
  m.ffn = FfnKind::unipool;
  m.pool_size = 6;
  m.router = RouterKind::norm;
  m.router_share = 2;
  return make_layout(m);
}

// A small UniPool layout for the CUDA optimizer's chunking: tensors of 1 element (router scale),
// partial chunks and several chunks of the GPU's 32768 (tok_embeddings [1024, 64], pool w13
// [8, 192, 64], w2 [8, 64, 96]).
inline Layout unipool_layout() {
  ModelConfig c;
  c.vocab_size = 1000;
  c.vocab_multiple = 64;
  c.seq_len = 32;
  c.n_layer = 2;
  c.d_model = 64;
  c.n_head = 2;
  c.n_kv_head = 1;
  c.ffn_hidden = 96;
  c.ffn = FfnKind::unipool;
  c.pool_size = 8;
  c.router = RouterKind::norm;
  return make_layout(c);
}

// A dense layout, different from unipool_layout(): the GPU's cached chunk table must follow a
// change of layout.
inline Layout dense_layout() {
  ModelConfig c;
  c.vocab_size = 300;
  c.vocab_multiple = 64;
  c.seq_len = 16;
  c.n_layer = 1;
  c.d_model = 40;
  c.n_head = 2;
  c.n_kv_head = 1;
  c.ffn_hidden = 52;
  c.ffn = FfnKind::dense;
  return make_layout(c);
}

}  // namespace unipool::test
