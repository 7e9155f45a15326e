// The model of SPEC.md §1, written once: the forward op sequence and its exact reverse, calling the
// op list of kernels/cpu. Every variant (dense, vanilla MoE, UniPool global or grouped pools,
// softmax or NormRouter, router sharing, any top-k) is the same code reading a different Layout.
//
// One training micro-batch:
//   forward(inputs, targets, train=true, loss_scale)   embedding → L × [attention, FFN/MoE] →
//                                                       final norm → LM head + cross-entropy
//                                                       (the head's gradient is formed here, in
//                                                       chunks, so full logits are never kept)
//   backward()                                          the same list in reverse; every weight
//                                                       gradient ACCUMULATES into grads()
// Activations are sized once at construction for the worst-case routing (every row of a layer on
// one expert) and never reallocated.
#pragma once
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/layout.h"

namespace unipool {

struct Losses {
  double lm = 0;   // mean cross-entropy over the micro-batch's tokens
  double aux = 0;  // Σ of balancing / z-loss terms (unscaled by loss_scale)
};

// The pool loss's one-step-behind counts (SPEC.md §1 "Balancing losses"): per pool group,
// ĝ = (1/L_g) Σ_l c^(l) of the previous training micro-batch, and the running sum being built.
struct PoolLossState {
  std::vector<std::vector<double>> ghat;     // [groups][M]
  std::vector<std::vector<double>> running;  // [groups][M]
  bool valid = false;                        // false until the first training micro-batch ends

  nlohmann::json to_json() const;
  void from_json(const nlohmann::json& j, int groups, int M);  // Error on a shape mismatch
};

template <typename T>
class Model {
 public:
  Model(const Layout& layout, const LossConfig& loss, int batch, int seq_len);

  const Layout& layout() const { return layout_; }
  int batch() const { return B_; }
  int seq_len() const { return T_; }
  T* params() { return params_.data(); }
  const T* params() const { return params_.data(); }
  T* grads() { return grads_.data(); }
  const T* grads() const { return grads_.data(); }
  T* param(int tensor) { return params_.data() + layout_.tensors[tensor].offset; }
  T* grad(int tensor) { return grads_.data() + layout_.tensors[tensor].offset; }
  void zero_grads();
  size_t activation_bytes() const;

  // inputs/targets: [batch, seq_len] token ids < vocab_size. With train = true the activations are
  // kept for backward(), the pool-loss state advances, and the objective's gradient is formed with
  // weight loss_scale (1/grad_accum: the objective is the mean over micro-batches).
  Losses forward(const int32_t* inputs, const int32_t* targets, bool train,
                 double loss_scale = 1.0);
  void backward();

  PoolLossState pool_state;
  bool advance_pool_state = true;  // tests freeze ĝ to evaluate the same function repeatedly

  // The smallest distance of the last forward from a routing discontinuity: over every MoE layer
  // and token, the gap between the k-th and (k+1)-th score, and for the NormRouter the smallest
  // |u_i| (the ReLU kink). Finite-difference tests require it to be well above their step.
  double routing_margin() const;

  // Routing of the last forward, per layer: ids [N, k] (for probes and tests).
  const int32_t* routed_experts(int layer) const { return moe_[layer].ids.data(); }

  // Per-token cross-entropy of the last forward, [batch · seq_len] (over all padded columns).
  const T* token_losses() const { return losses_.data(); }

 private:
  struct LayerActivations {
    std::vector<T> x;          // [N, d] residual stream entering the layer
    std::vector<T> xn_attn;    // [N, d] RMSNorm(x)
    std::vector<T> rstd_attn;  // [N]
    std::vector<T> qkv;        // [N, qkv_width], q and k after RoPE
    std::vector<T> att;        // [N, d] attention output before Wo
    std::vector<T> lse;        // [B, nh, T] attention log-sum-exp
    std::vector<T> h;          // [N, d] x + attention block
    std::vector<T> xn_ffn;     // [N, d] RMSNorm(h)
    std::vector<T> rstd_ffn;   // [N]
    std::vector<T> h13;        // [rows, 2F] gate|up pre-activations (rows = N dense, N·k MoE)
    std::vector<T> act;        // [rows, F] silu(g) ⊙ v (before the gate)
  };
  struct MoeActivations {
    std::vector<T> z;              // [N, R] router logits
    std::vector<T> s;              // [N, R] router scores (softmax probabilities or NormRouter s)
    std::vector<T> znorm;          // [N] NormRouter ||z||
    std::vector<int32_t> ids;      // [N, k]
    std::vector<T> gates;          // [N, k]
    std::vector<int32_t> counts;   // [R]
    std::vector<int32_t> offsets;  // [R + 1] expert-major row ranges
    std::vector<int32_t> row_slot, slot_row;  // [N·k]
    std::vector<T> row_gate;                  // [N·k] gate of each expert-major row
    std::vector<T> xg;                        // [N·k, d] tokens gathered expert-major
    std::vector<T> aux_grad;  // [R] d(objective)/d s[t, i], the same for every token t
    double sigma = 0, c = 0;  // NormRouter scale and constant used in the forward
  };

  void attention_block_forward(int l);
  void attention_block_backward(int l);
  void dense_ffn_forward(int l);
  void dense_ffn_backward(int l);
  void moe_forward(int l, bool train, double loss_scale, Losses& losses);
  void moe_backward(int l);
  // y[rows, d] = W2_e (gate ⊙ silu(g) ⊙ v), [g; v] = W13_e x, for one expert's contiguous rows.
  void expert_ffn_forward(const T* w13, const T* w2, const T* x, const T* gate, int row0, int rows,
                          LayerActivations& a, T* y);
  double lm_head(bool train, double loss_scale);

  Layout layout_;
  LossConfig loss_config_;
  int B_, T_, N_;
  double loss_scale_ = 1.0;
  std::vector<T> params_, grads_;
  std::vector<LayerActivations> acts_;
  std::vector<MoeActivations> moe_;
  std::vector<T> rope_cos_, rope_sin_;
  std::vector<T> x_final_, xn_final_, rstd_final_, dxn_final_;  // final norm and its input grad
  std::vector<int32_t> tokens_, targets_;
  std::vector<T> losses_;  // [N] per-token cross-entropy
  std::vector<T> logits_;  // [chunk, Vp] LM-head scratch (becomes dlogits in place)
  // backward scratch, shared by all layers
  std::vector<T> dres_, dxn_, datt_, dqkv_, dh13_, dact_, drows_, dgate_, ds_, dz_;
  std::vector<T> expert_weight_;  // [R] weights of a balancing term (counts or ĝ)
  std::vector<T> ytmp_;           // [N·k, d] expert outputs before the combine
  int head_chunk_ = 0;
  bool have_forward_ = false;
};

extern template class Model<float>;
extern template class Model<double>;

}  // namespace unipool
