// The configuration the model reads: its shape and variant (the model.* keys) and the balancing
// terms (the loss.* keys). docs/config.md lists every key with its default and rules; docs/model.md
// defines what each variant computes. Loading, defaults from other keys and validation are the
// engine's (engine/config.h); the model only reads these plain structs.
#pragma once
#include <cstdint>
#include <string>

namespace unipool {

// model.ffn: what follows each attention block.
enum class FfnKind {
  dense,   // one SwiGLU per layer
  moe,     // E private experts per layer (vanilla MoE)
  unipool  // one pool of M experts shared by a group of adjacent layers
};
// model.router: how an MoE layer scores its experts.
enum class RouterKind {
  softmax,  // s = softmax(z)
  norm,     // NormRouter: s = σ·c·ReLU(z/||z||)
  sigmoid   // s = sigmoid(z); gates renormalised over the chosen k when k > 1 (aux-free routing)
};

// The name of a kind as configs write it ("dense", "norm", ...).
inline const char* name_of(FfnKind k) {
  switch (k) {
    case FfnKind::dense:
      return "dense";
    case FfnKind::moe:
      return "moe";
    case FfnKind::unipool:
      return "unipool";
  }
  return "?";
}
inline const char* name_of(RouterKind k) {
  switch (k) {
    case RouterKind::softmax:
      return "softmax";
    case RouterKind::norm:
      return "norm";
    case RouterKind::sigmoid:
      return "sigmoid";
  }
  return "?";
}
// The kind called `name`; false (and *out unchanged) when none is.
inline bool parse_kind(const std::string& name, FfnKind* out) {
  for (FfnKind k : {FfnKind::dense, FfnKind::moe, FfnKind::unipool})
    if (name == name_of(k)) return *out = k, true;
  return false;
}
inline bool parse_kind(const std::string& name, RouterKind* out) {
  for (RouterKind k : {RouterKind::softmax, RouterKind::norm, RouterKind::sigmoid})
    if (name == name_of(k)) return *out = k, true;
  return false;
}

// train.recompute: which activations the backward recomputes instead of keeping them from the
// forward (docs/model.md §Activation recompute). The results are bitwise the same.
enum class Recompute {
  none,  // keep every activation
  moe,   // the MoE block's (routing, gathered inputs, expert hidden states)
  full   // every layer's except its input
};
inline const char* name_of(Recompute k) {
  switch (k) {
    case Recompute::none:
      return "none";
    case Recompute::moe:
      return "moe";
    case Recompute::full:
      return "full";
  }
  return "?";
}
inline bool parse_kind(const std::string& name, Recompute* out) {
  for (Recompute k : {Recompute::none, Recompute::moe, Recompute::full})
    if (name == name_of(k)) return *out = k, true;
  return false;
}

// lock.*: UniPool-lock (docs/model.md §UniPool-lock): a full-pool phase, then each layer keeps its
// own K = M/L experts of the one global pool. The model reads `enabled`, `compact` and
// `entropy_target`; the schedule, the partition and the fail-stop are the trainer's
// (engine/lock.h). Defaults are the reference's (Centaurus-Alpha/UniPool, progressive curriculum).
struct LockConfig {
  bool enabled = false;
  double lock_fraction = 2.0 / 60;    // the hard lock at step round(lock_fraction·steps)
  double anneal_fraction = 1.0 / 60;  // the anneal window before it (the freeze at its start)
  double entropy_warmup_fraction = 1.0 / 60;  // β ramps 0 → entropy_coeff over this share of steps
  double entropy_coeff = 5e-3;                // β of the target-cardinality entropy term
  int entropy_target = 8;                     // M*: the effective number of experts aimed at
  double coverage = 0.95;                     // share of a layer's routed tokens its set must cover
  double max_val_loss_excess = 0.05;  // fail-stop: validation loss above the freeze's by more
  int loss_excess_consecutive = 2;    // ... at this many validations in a row stops the run
  int ema_lookback = 5;               // validation count snapshots the partition is smoothed over
  double ema_alpha = 0.5;             // EMA weight of the newest snapshot
  bool compact = true;                // after the lock, the router's tail runs on the K columns
};

struct ModelConfig {
  int vocab_size = 50257;
  int vocab_multiple = 1024;
  int seq_len = 1024;
  int n_layer = 12;
  int d_model = 768;
  int n_head = 12;
  int n_kv_head = 4;
  int ffn_hidden = 3072;  // F: dense FFN width and each expert's width
  double norm_eps = 1e-5;
  double rope_base = 1e6;
  double init_std = 0.01;
  FfnKind ffn = FfnKind::dense;
  int experts_per_layer = 8;  // moe: E private experts per layer
  int pool_size = 96;         // unipool: M experts per pool
  int pool_group = 0;  // unipool: N adjacent layers share a pool; 0 = all layers (one global pool)
  int top_k = 1;
  RouterKind router = RouterKind::softmax;
  bool router_renorm = false;  // softmax router: renormalise the k gates
  int router_share = 1;        // B: layers bB..bB+B-1 share one router (PathMoE); 1 = independent
  bool expert_bias = false;    // top-k on s + b, b a per-router bias moved by the load (aux-free)
  LockConfig lock;             // UniPool-lock (the lock.* keys)

  // Fits an int in a validated config (engine/config.cpp checks it in 64 bits).
  int padded_vocab() const {
    return static_cast<int>((int64_t(vocab_size) + vocab_multiple - 1) / vocab_multiple *
                            vocab_multiple);
  }
  int head_dim() const { return d_model / n_head; }
  bool is_moe() const { return ffn != FfnKind::dense; }
  bool has_pools() const { return ffn == FfnKind::unipool; }
  int router_width() const {
    switch (ffn) {
      case FfnKind::dense:
        return 0;
      case FfnKind::moe:
        return experts_per_layer;
      case FfnKind::unipool:
        return pool_size;
    }
    return 0;
  }
  int pool_layers() const { return pool_group == 0 ? n_layer : pool_group; }  // N
  int n_pools() const { return has_pools() ? n_layer / pool_layers() : 0; }
  int n_routers() const { return is_moe() ? n_layer / router_share : 0; }
  int qkv_width() const { return (n_head + 2 * n_kv_head) * head_dim(); }
  // The gates are renormalised over the chosen k: the softmax router when asked, the sigmoid
  // router whenever k > 1.
  bool renormalise_gates() const {
    return router == RouterKind::sigmoid ? top_k > 1 : router_renorm;
  }
  int lock_set_size() const { return lock.enabled ? pool_size / n_layer : 0; }  // K = M / L
};

struct LossConfig {
  double aux_coeff = 0;       // per-layer Switch loss α (default 0.01 for moe, 0 for unipool)
  double pool_aux_coeff = 0;  // pool loss α_pool (default 0.01 for unipool)
  double z_loss_coeff = 0;
  double bias_update_rate = 1e-3;  // model.expert_bias: b += rate · sign(mean load − load)
};

}  // namespace unipool
