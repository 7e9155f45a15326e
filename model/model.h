// The model of docs/model.md, written once: the forward op sequence and its exact reverse, calling
// the op list of a backend (model/backend.h). Every variant (dense, vanilla MoE, UniPool global or
// grouped pools, softmax or NormRouter, router sharing, any top-k) is the same code reading a
// different Layout.
//
// One training micro-batch:
//   forward(inputs, targets, train=true, loss_scale)   embedding → L × [attention, FFN/MoE] →
//                                                       final norm → LM head + cross-entropy
//                                                       (the head's gradient is formed here, in
//                                                       chunks, so full logits are never kept)
//   backward()                                          the same list in reverse; every weight
//                                                       gradient ACCUMULATES into grads()
// Activations are sized once at construction for the worst-case routing (every row of a layer on
// one expert) and never reallocated. The same code runs on every backend (model/backend.h).
#pragma once
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/backend.h"
#include "model/layout.h"

namespace unipool {

struct Losses {
  double lm = 0;   // mean cross-entropy over the micro-batch's tokens
  double aux = 0;  // Σ of balancing / z-loss terms (unscaled by loss_scale)
};

// The pool loss's one-step-behind counts (docs/model.md §Balancing losses): per pool group,
// ĝ = (1/L_g) Σ_l c^(l) of the previous training micro-batch, and the running sum being built.
struct PoolLossState {
  std::vector<std::vector<double>> ghat;     // [groups][M]
  std::vector<std::vector<double>> running;  // [groups][M]
  bool valid = false;                        // false until the first training micro-batch ends

  nlohmann::json to_json() const;
  void from_json(const nlohmann::json& j, int groups, int M);  // Error on a shape mismatch
};

// UniPool-lock's routing restriction (docs/model.md §UniPool-lock), set by the trainer from its
// curriculum: each layer's set of K experts of the pool, how far the others are faded (their
// scores × (1 − alpha); at alpha = 1 they are also hidden from the top-k), and whether the sets
// are locked (then, with lock.compact, the router's tail runs on the K columns only). No sets: the
// whole pool, as plain UniPool.
struct LockRouting {
  std::vector<std::vector<int>> sets;  // [L][K] expert ids (any order), or empty
  double alpha = 0;                    // in [0, 1]
  bool locked = false;                 // needs alpha = 1
};

// A perturbation of one MoE layer's routing in evaluation forwards (`unipool probe`,
// docs/analysis.md): after the layer's top-k its expert ids are replaced, its gates kept.
//   random:  each token's k experts drawn uniformly without replacement from `experts` (a host
//            stream seeded by `seed`, the forward's number and the token: the same on every
//            backend and thread count)
//   permute: every chosen id e becomes experts[e] (a permutation of the router's width)
struct RoutingPerturbation {
  enum class Kind { random, permute };
  Kind kind = Kind::random;
  int layer = 0;
  std::vector<int32_t> experts;
  uint64_t seed = 0;
};

// The model on one backend (model/backend.h). Every pointer it hands out (params(), grads(), ...)
// is in the backend's memory: host memory on the CPU, device memory on the GPU; the host-side
// accessors (params_to_host, pool_state, routed_experts, token_losses, ...) copy.
template <class Backend>
class Model {
 public:
  using Act = typename Backend::Act;
  using Float = typename Backend::Float;
  using Param = typename Backend::Param;
  using Weight = typename Backend::Weight;
  template <class U>
  using Array = typename Backend::template Array<U>;

  // Buffers for `batch` sequences of `seq_len` tokens. kv_cache_len > 0 makes a decoding model
  // (batch = seq_len = 1, no gradients): see decode().
  // recompute: what the backward recomputes instead of keeping (train.recompute; the results are
  // bitwise those of Recompute::none). With recompute the per-layer views of the last forward
  // (routed_experts, routing_margin) see the buffers the layers share.
  Model(const Layout& layout, const LossConfig& loss, int batch, int seq_len, int kv_cache_len = 0,
        Recompute recompute = Recompute::none);

  const Layout& layout() const { return layout_; }
  int batch() const { return B_; }
  int seq_len() const { return T_; }
  Param* params() { return params_.data(); }
  const Param* params() const { return params_.data(); }
  Param* grads() { return grads_.data(); }
  const Param* grads() const { return grads_.data(); }
  Param* param(int tensor) { return params_.data() + layout_.tensors[tensor].offset; }
  Param* grad(int tensor) { return grads_.data() + layout_.tensors[tensor].offset; }
  // The weights the GEMMs read: the master weights on the CPU, their bf16 copy on the GPU.
  Weight* weight(int tensor);
  // The bf16 copy's arena for the optimizer to write (null when the backend has none).
  Weight* weight_copy() { return Backend::kWeightCopy ? weights_.data() : nullptr; }
  // After the master weights changed outside the optimizer (init, load): rewrite the copy.
  void refresh_weight_copy();
  void zero_grads();
  // Bytes of every activation, cache and scratch buffer (counted as they are allocated).
  size_t activation_bytes() const { return activation_bytes_; }
  // What activation_bytes() of a model built with these arguments would be, computed without
  // allocating anything (the memory check before a run, engine/backends.h).
  static size_t planned_activation_bytes(const Layout& layout, const LossConfig& loss, int batch,
                                         int seq_len, int kv_cache_len = 0,
                                         Recompute recompute = Recompute::none);

  // Host copies of the master weights and gradients, and the upload of new master weights
  // (which refreshes the weight copy).
  std::vector<Param> params_to_host() const;
  std::vector<Param> grads_to_host() const;
  void params_from_host(const Param* host);

  // inputs/targets: HOST arrays [batch, seq_len] of token ids < vocab_size (checked here). With
  // train = true the activations are kept for backward(), the pool-loss state advances, and the
  // objective's gradient is formed with weight loss_scale (1/grad_accum: the objective is the mean
  // over micro-batches). Returns the losses (on the GPU this waits for the forward to finish).
  Losses forward(const int32_t* inputs, const int32_t* targets, bool train,
                 double loss_scale = 1.0);
  void backward();

  // Decoding with a KV cache (model/generator.h), on a model built with kv_cache_len = P > 0:
  // the forward of one token at position pos (0 <= pos < P) whose positions 0..pos−1 are in the
  // cache from earlier calls. Runs the training forward's blocks on one row (RoPE at pos, its keys
  // and values appended to each layer's cache, attention_decode against the cache, the FFN or MoE
  // block as in evaluation) and returns the LM-head row in fp32, [padded_vocab] (a host copy).
  const std::vector<Float>& decode(int32_t token, int pos);
  int kv_cache_len() const { return kv_cache_len_; }

  // The pool loss's state ĝ (host copy), and its replacement (checkpoints, tests).
  PoolLossState pool_state() const;
  void set_pool_state(const PoolLossState& state);

  // The model's state beyond its weights, as the JSON keys it adds to a checkpoint's state.json
  // (docs/run-directory.md §state.json): today "pool_loss" (ĝ) for a model with pools, nothing
  // otherwise. import_state reads the same keys back (Error naming the key when one is missing or
  // does not fit this model).
  nlohmann::json export_state() const;
  void import_state(const nlohmann::json& state);
  bool advance_pool_state = true;  // tests freeze ĝ to evaluate the same function repeatedly

  // Aux-free balancing (model.expert_bias): the tokens each router sent to each expert in the
  // training forwards since the last update, [routers][width] (a host copy; exact integers), and
  // the update b_i += rate · sign(mean_j load_j − load_i) of every router's bias from the loads of
  // the whole step (summed over ranks by the caller), which also clears the loads.
  std::vector<double> router_loads() const;
  void update_expert_bias(const std::vector<double>& loads, double rate);

  // UniPool-lock (a model built with lock.enabled): the routing restriction of the next forwards,
  // and β, the coefficient of the target-cardinality entropy term of the training forwards
  // (docs/model.md §UniPool-lock). Error when they do not fit the model.
  void set_lock_routing(const LockRouting& routing);
  const LockRouting& lock_routing() const { return lock_routing_; }
  void set_entropy_coeff(double beta);

  // Perturbations of the evaluation forwards' routing, at most one per layer; empty: none.
  // Error for a training forward while any is set, or for ids outside the router's width.
  void set_routing_perturbations(const std::vector<RoutingPerturbation>& perturbations);

  // Routing statistics of the forwards run while collect_routing_stats is true (evaluation, and
  // the trainer's per-step routing health), per MoE layer [L][1 + 2R]: tokens whose k gates are
  // all 0, slots per expert, slots per expert with a nonzero gate (the routing_stats op; exact
  // integers). They are read back with the losses at the end of each such forward, so reading
  // them costs no extra wait on the GPU. reset_routing_stats() zeroes them.
  bool collect_routing_stats = false;
  void reset_routing_stats();
  std::vector<int64_t> routing_stats() const;
  int64_t routing_stats_tokens() const { return routing_stats_tokens_; }  // tokens counted

  // The smallest distance of the last forward from a routing discontinuity: over every MoE layer
  // and token, the gap between the k-th and (k+1)-th score, and for the NormRouter the smallest
  // |u_i| (the ReLU kink). Finite-difference tests require it to be well above their step.
  double routing_margin() const;

  // Routing of the last forward for one layer: ids [N, k] (probes and tests; a host copy).
  std::vector<int32_t> routed_experts(int layer) const;

  // Per-token cross-entropy of the last forward, [batch · seq_len] (a host copy).
  std::vector<Float> token_losses() const;

  // Zero-shot scoring (engine/zero_shot.h): the evaluation forward of inputs [batch, seq_len]
  // (HOST ids, as forward()), then the LM head on `count` chosen positions only (indices into
  // batch · seq_len; count <= batch · seq_len), each against its own target:
  //   losses[i] = cross-entropy of targets[i] at positions[i]   (as token_losses() would hold)
  //   greedy[i] = 1 when targets[i] is the argmax of that position's logits over the vocabulary
  //               (the lowest id among equal maxima, as torch.argmax), else 0
  // losses and greedy are host arrays [count]. token_losses() describes forward() only.
  void score(const int32_t* inputs, const int32_t* positions, const int32_t* targets, int count,
             Float* losses, int32_t* greedy);

  // Time per phase of forward and backward (off unless profile.enabled; unipool bench uses it).
  PhaseProfile<typename Backend::Clock> profile;

 private:
  // A view of activation memory: the buffers are owned by the model's storage lists, so layers
  // that recompute in the backward can share one buffer (Recompute).
  template <class U>
  struct Buffer {
    U* ptr = nullptr;
    size_t count = 0;
    U* data() const { return ptr; }
    size_t size() const { return count; }
  };
  struct LayerActivations {
    Buffer<Act> x;            // [N, d] residual stream entering the layer
    Buffer<Act> xn_attn;      // [N, d] RMSNorm(x)
    Buffer<Float> rstd_attn;  // [N]
    Buffer<Act> qkv;          // [N, qkv_width], q and k after RoPE
    Buffer<Act> att;          // [N, d] attention output before Wo
    Buffer<Float> lse;        // [B, nh, T] attention log-sum-exp
    Buffer<Act> h;            // [N, d] x + attention block
    Buffer<Act> xn_ffn;       // [N, d] RMSNorm(h)
    Buffer<Float> rstd_ffn;   // [N]
    Buffer<Act> h13;          // [rows, 2F] gate|up pre-activations (rows = N dense, N·k MoE)
    Buffer<Act> act;          // [rows, F] silu(g) ⊙ v (before the gate)
  };
  struct MoeActivations {
    Buffer<Float> z;          // [N, R] router logits
    Buffer<Float> s;          // [N, R] router scores (softmax probabilities or NormRouter s)
    Buffer<Float> znorm;      // [N] NormRouter ||z||
    Buffer<int32_t> ids;      // [N, k]
    Buffer<Float> gates;      // [N, k]
    Buffer<int32_t> counts;   // [R]
    Buffer<int32_t> offsets;  // [R + 1] expert-major row ranges
    Buffer<int32_t> row_slot, slot_row;  // [N·k]
    Buffer<Float> row_gate;              // [N·k] gate of each expert-major row
    Buffer<Act> xg;                      // [N·k, d] tokens gathered expert-major
    Buffer<Float> aux_grad;              // [R] d(objective)/d s[t, i], the same for every token t
    // UniPool-lock's compact path (locked sets, lock.compact): the K columns of the layer's set
    Buffer<Float> s_set;      // [N, K] their scores
    Buffer<int32_t> ids_set;  // [N, k] the chosen ones, as positions in the set
    double c = 0;             // NormRouter constant c(R, k)
  };

  // decode_pos < 0: B_ sequences of T_ tokens; else one token at that position (decode()).
  void attention_block_forward(int l, int decode_pos = -1);
  void attention_block_backward(int l);
  void dense_ffn_forward(int l);
  void dense_ffn_backward(int l);
  // The MoE block's phases (model.cpp), forward and backward.
  void moe_forward(int l, bool train, double loss_scale);
  void route(int l);
  void router_scores_forward(int l);
  void dispatch(int l);
  void experts_forward(int l);
  void combine(int l);
  void balancing_terms(int l, double loss_scale);
  bool lock_compact() const;  // the locked sets route through the compact path
  void moe_backward(int l);
  void combine_backward(int l);
  void experts_backward(int l);
  void dispatch_backward(int l);
  void route_backward(int l);
  void router_scores_backward(int l);
  // Error naming the first of ids[0..n) outside the vocabulary (`what`: "token" or "target").
  void check_token_ids(const int32_t* ids, int n, const char* what) const;
  // forward() up to the final norm: the embedding and every layer (x_final_ holds the result).
  void forward_blocks(const int32_t* inputs, bool train, double loss_scale);
  void lm_head(bool train, double loss_scale);
  enum class Build { allocate, plan_only };
  Model(Build build, const Layout& layout, const LossConfig& loss, int batch, int seq_len,
        int kv_cache_len, Recompute recompute);
  // Owns an activation buffer for the rest of the model's life and returns its view.
  template <class U>
  Buffer<U> keep(Array<U>&& storage) {
    Buffer<U> view{storage.data(), storage.size()};
    if constexpr (std::is_same_v<U, int32_t>) {
      int_storage_.push_back(std::move(storage));
    } else if constexpr (std::is_same_v<U, Act>) {
      act_storage_.push_back(std::move(storage));
    } else {
      float_storage_.push_back(std::move(storage));
    }
    return view;
  }
  // Before layer l's backward: its activations that were not kept (Recompute), recomputed from its
  // input exactly as the forward made them; the pool-loss state and the loads are not touched.
  void recompute_layer(int l);
  void dense_ffn_hidden(int l);  // h13 and act of a dense FFN
  // Counts n elements of U (saturating: a plan may be absurdly large) and allocates them.
  template <class U>
  Array<U> alloc_counted(int64_t n, const char* what) {
    size_t bytes = 0;
    if (__builtin_mul_overflow(size_t(n), sizeof(U), &bytes) ||
        __builtin_add_overflow(activation_bytes_, bytes, &activation_bytes_))
      activation_bytes_ = SIZE_MAX;
    if (plan_only_) return Array<U>{};
    return Backend::template alloc<U>(size_t(n), what);
  }

  Layout layout_;
  LossConfig loss_config_;
  int B_, T_, N_;
  int kv_cache_len_ = 0;
  bool plan_only_ = false;
  Recompute recompute_ = Recompute::none;
  size_t activation_bytes_ = 0;
  // The activation buffers (acts_ and moe_ hold views of them).
  std::vector<Array<Act>> act_storage_;
  std::vector<Array<Float>> float_storage_;
  std::vector<Array<int32_t>> int_storage_;
  double loss_scale_ = 1.0;
  Array<Param> params_, grads_;
  Array<Weight> weights_;  // the GEMMs' copy of the weights (GPU only; empty on the CPU)
  std::vector<LayerActivations> acts_;
  std::vector<MoeActivations> moe_;
  Array<Float> rope_cos_, rope_sin_;
  Array<Act> x_final_, xn_final_, dxn_final_;  // final norm's input, output and output grad
  Array<Float> rstd_final_;
  Array<int32_t> tokens_, targets_;
  Array<Float> losses_;  // [N] per-token cross-entropy
  Array<Act> logits_;    // [chunk, Vp] LM-head scratch (becomes dlogits in place)
  // [L, 4] per layer: Switch term, pool term, z-loss, entropy term (each written once)
  Array<Float> aux_terms_;
  std::vector<Float> host_losses_, host_aux_terms_;  // their host copies, summed after forward()
  std::vector<int32_t> host_routing_stats_;          // routing_stats_ after the last forward
  // pool-loss state per pool group: ĝ of the previous micro-batch and the running layer sum
  Array<Float> pool_ghat_, pool_running_;  // [groups, M]
  bool pool_valid_ = false;
  // backward scratch, shared by all layers
  Array<Act> dres_, dxn_, datt_, dqkv_, dh13_, dact_, drows_;
  Array<Float> dgate_, ds_, dz_;
  Array<Float> expert_weight_;    // [R] weights of a balancing term (counts as floats)
  Array<Float> router_load_;      // [routers, R] tokens routed since the last bias update
  Array<int32_t> routing_stats_;  // [L, 1 + 2R] (collect_routing_stats)
  // UniPool-lock (set_lock_routing): per layer its set (ascending), the factor of each expert's
  // score (1 in the set, 1 − α outside) and the top-k bias hiding the others (0 / −inf, α = 1)
  LockRouting lock_routing_;
  Array<int32_t> lock_sets_;  // [L, K]
  Array<Float> lock_scale_;   // [L, R]
  Array<Float> lock_hide_;    // [L, R]
  Array<Float> lock_ghat_;    // [K] ĝ of a layer's set (compact path scratch)
  double entropy_coeff_ = 0;  // β
  // set_routing_perturbations: per layer the perturbation (index −1: none) and, for permute, its
  // table in backend memory; forwards_ numbers the forwards (the random draws' stream)
  std::vector<RoutingPerturbation> perturbations_;
  std::vector<int> perturbation_of_layer_;
  Array<int32_t> perturbation_tables_;  // [L, R]
  uint64_t forwards_ = 0;
  void perturb_routing(int l);
  int64_t routing_stats_tokens_ = 0;
  Array<Act> ytmp_;  // [N·k, d] expert outputs before the combine
  // decoding (kv_cache_len_ > 0): [L, P, nkv·hd] keys after RoPE and values, attention scratch,
  // the fp32 LM-head row and its host copy
  Array<Act> k_cache_, v_cache_;
  Array<Float> decode_scores_, decode_logits_;
  std::vector<Float> host_decode_logits_;
  int head_chunk_ = 0;
  // score(): the chosen positions and their greedy verdicts, [N]
  Array<int32_t> score_positions_, score_greedy_;
  bool have_forward_ = false;
};

// The CPU engine (T = float) and the finite-difference oracle (T = double).
template <typename T>
using CpuModel = Model<CpuBackend<T>>;

extern template class Model<CpuBackend<float>>;
extern template class Model<CpuBackend<double>>;
#ifdef UNIPOOL_HAVE_CUDA
extern template class Model<CudaBackend>;
#endif

}  // namespace unipool
