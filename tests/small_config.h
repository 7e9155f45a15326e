// The small training configs of the end-to-end tests (tests/test_train.cpp, tests/test_eval.cpp).
#pragma once
#include <string>

#include "data/tokenize.h"
#include "engine/config.h"

namespace unipool::test {

// The small configs of these tests: Vp = 320, T 32, L 2, d 32, 2 heads (hd 16), 1 KV head, F 32.
inline Config small_config(FfnKind ffn, const std::string& data_prefix,
                           const std::string& out_dir) {
  using namespace unipool;
  Config c;
  ModelConfig& m = c.model;
  m.vocab_size = data::kBytesVocab;
  m.vocab_multiple = 64;
  m.seq_len = 32;
  m.n_layer = 2;
  m.d_model = 32;
  m.n_head = 2;
  m.n_kv_head = 1;
  m.ffn_hidden = 32;
  m.ffn = ffn;
  c.loss = LossConfig{};
  if (ffn == FfnKind::moe) {
    m.experts_per_layer = 4;
    m.router = RouterKind::softmax;
    c.loss.aux_coeff = 0.01;
  } else if (ffn == FfnKind::unipool) {
    m.pool_size = 8;
    m.router = RouterKind::norm;
    c.loss.pool_aux_coeff = 0.01;
    c.train.grad_accum = 2;  // the pool loss's one-step-behind ĝ carries across micro-batches
  }
  c.optim.lr = 3e-3;
  c.optim.min_lr = 3e-4;
  c.optim.warmup_steps = 0;
  c.train.steps = 6;
  c.train.micro_batch = 4;
  c.train.seed = 1234;
  c.train.eval_every = 0;
  c.train.eval_batches = 2;
  c.train.ckpt_every = 0;
  c.train.ckpt_keep = 3;
  c.train.out_dir = out_dir;
  c.train.backend = BackendKind::cpu;
  c.train.log_every = 1000;
  c.train.threads = 2;
  c.data.train = {{1.0, data_prefix}};
  c.data.format = "megatron";
  c.data.split = "90,9,1";
  validate_config(c, /*check_data=*/false);
  return c;
}

}  // namespace unipool::test
