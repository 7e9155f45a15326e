// The forward and backward op sequence of docs/model.md. Read top to bottom: forward(), then the
// blocks it calls in order, then backward(), which visits the same blocks in reverse. Every op is
// called through the backend B (model/backend.h): B::rmsnorm_forward is cpu::rmsnorm_forward<T> on
// the CPU and cuda::rmsnorm_forward on the GPU.
#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "base/error.h"
#include "base/json_fields.h"
#include "base/random.h"
#include "model/normrouter_constant.h"

namespace unipool {

// ---------------------------------------------------------------------------------------------
// Pool-loss state (one-step-behind counts)

nlohmann::json PoolLossState::to_json() const {
  return {{"valid", valid}, {"ghat", ghat}, {"running", running}};
}

void PoolLossState::from_json(const nlohmann::json& j, int groups, int M) {
  const std::string where = "checkpoint state: pool_loss";
  // [groups][M] counts (means of expert counts over layers).
  auto counts = [&](const char* key) {
    const nlohmann::json& v = json_at(j, key, where);
    check(v.is_array() && v.size() == size_t(groups), where + "." + key + " must hold " +
                                                          std::to_string(groups) +
                                                          " pool groups, got " + describe_json(v));
    std::vector<std::vector<double>> out(static_cast<size_t>(groups),
                                         std::vector<double>(static_cast<size_t>(M)));
    for (int g = 0; g < groups; ++g) {
      const nlohmann::json& row = v[size_t(g)];
      check(row.is_array() && row.size() == size_t(M),
            where + "." + key + "[" + std::to_string(g) + "] must hold pool_size = " +
                std::to_string(M) + " counts, got " + describe_json(row));
      for (int i = 0; i < M; ++i) {
        const nlohmann::json& x = row[size_t(i)];
        // A count of rows of a micro-batch: at most 2^31 − 1 (so the float state holds it).
        check(x.is_number() && x.get<double>() >= 0 && x.get<double>() <= 2147483647.0,
              where + "." + key + "[" + std::to_string(g) + "][" + std::to_string(i) +
                  "] must be a count in [0, 2^31 - 1], got " + describe_json(x));
        out[size_t(g)][size_t(i)] = x.get<double>();
      }
    }
    return out;
  };
  const bool v = json_bool(j, "valid", where);
  ghat = counts("ghat");
  running = counts("running");
  valid = v;
}

// ---------------------------------------------------------------------------------------------
// Construction: every buffer sized once.

template <class B>
Model<B>::Model(const Layout& layout, const LossConfig& loss, int batch, int seq_len,
                int kv_cache_len, Recompute recompute)
    : Model(Build::allocate, layout, loss, batch, seq_len, kv_cache_len, recompute) {}

template <class B>
size_t Model<B>::planned_activation_bytes(const Layout& layout, const LossConfig& loss, int batch,
                                          int seq_len, int kv_cache_len, Recompute recompute) {
  return Model(Build::plan_only, layout, loss, batch, seq_len, kv_cache_len, recompute)
      .activation_bytes();
}

// With Build::plan_only nothing is allocated, uploaded or computed: the same code only adds up the
// bytes it would allocate (planned_activation_bytes).
template <class B>
Model<B>::Model(Build build, const Layout& layout, const LossConfig& loss, int batch, int seq_len,
                int kv_cache_len, Recompute recompute)
    : layout_(layout),
      loss_config_(loss),
      B_(batch),
      T_(seq_len),
      N_(batch * seq_len),
      kv_cache_len_(kv_cache_len),
      plan_only_(build == Build::plan_only),
      recompute_(kv_cache_len > 0 ? Recompute::none : recompute) {
  const ModelConfig& c = layout_.config;
  check(batch >= 1 && seq_len >= 1 && int64_t(batch) * seq_len <= INT32_MAX,
        "model: batch and seq_len must be >= 1, their product at most 2^31 - 1");
  check(seq_len <= c.seq_len, "model: seq_len " + std::to_string(seq_len) +
                                  " exceeds model.seq_len " + std::to_string(c.seq_len));
  check(kv_cache_len >= 0 && kv_cache_len <= c.seq_len,
        "model: the KV cache holds 0.." + std::to_string(c.seq_len) + " positions");
  const bool decoding = kv_cache_len > 0;
  check(!decoding || N_ == 1, "model: a decoding model (KV cache) runs one token at a time");
  const int64_t N = N_, d = c.d_model, F = c.ffn_hidden, k = c.top_k, R = c.router_width();
  const int64_t rows = c.is_moe() ? N * k : N;  // FFN rows: every (token, choice) pair
  // Every activation, cache and scratch buffer is allocated through these, which count its bytes
  // (activation_bytes()).
  auto act = [this](int64_t n, const char* what) { return alloc_counted<Act>(n, what); };
  auto flt = [this](int64_t n, const char* what) { return alloc_counted<Float>(n, what); };
  auto ints = [this](int64_t n, const char* what) { return alloc_counted<int32_t>(n, what); };
  if (!plan_only_) {
    params_ = B::template alloc<Param>(layout_.arena_size, "master weights");
    // A decoding model never runs backward(): no gradient arena.
    grads_ = B::template alloc<Param>(decoding ? 0 : layout_.arena_size, "weight gradients");
    B::zero(params_.data(), params_.size());
    B::zero(grads_.data(), grads_.size());
    if constexpr (B::kWeightCopy) {
      weights_ = B::template alloc<Weight>(layout_.arena_size, "bf16 weight copy");
      B::zero(weights_.data(), weights_.size());
    }
  }

  // Per layer, or (a buffer the backward recomputes) once for all layers: layer 0 allocates,
  // the others share its buffer.
  const bool share_layer = recompute_ == Recompute::full;
  const bool share_ffn = recompute_ != Recompute::none && (c.is_moe() || share_layer);
  acts_.resize(c.n_layer);
  for (int l = 0; l < c.n_layer; ++l) {
    LayerActivations& a = acts_[size_t(l)];
    const LayerActivations& first = acts_[0];
    auto per_layer = [&](bool shared, const auto& of_first, auto alloc) {
      return shared && l > 0 ? of_first : keep(alloc());
    };
    a.x = keep(act(N * d, "activations"));  // the layer's input: always kept
    a.xn_attn = per_layer(share_layer, first.xn_attn, [&] { return act(N * d, "activations"); });
    a.rstd_attn = per_layer(share_layer, first.rstd_attn, [&] { return flt(N, "activations"); });
    a.qkv =
        per_layer(share_layer, first.qkv, [&] { return act(N * c.qkv_width(), "activations"); });
    a.att = per_layer(share_layer, first.att, [&] { return act(N * d, "activations"); });
    a.lse = per_layer(share_layer, first.lse, [&] { return flt(N * c.n_head, "activations"); });
    a.h = per_layer(share_layer, first.h, [&] { return act(N * d, "activations"); });
    a.xn_ffn = per_layer(share_layer, first.xn_ffn, [&] { return act(N * d, "activations"); });
    a.rstd_ffn = per_layer(share_layer, first.rstd_ffn, [&] { return flt(N, "activations"); });
    a.h13 = per_layer(share_ffn, first.h13,
                      [&] { return act(rows * 2 * F, "expert activations (worst-case routing)"); });
    a.act = per_layer(share_ffn, first.act,
                      [&] { return act(rows * F, "expert activations (worst-case routing)"); });
  }
  if (c.is_moe()) {
    moe_.resize(c.n_layer);
    for (int l = 0; l < c.n_layer; ++l) {
      MoeActivations& m = moe_[size_t(l)];
      const MoeActivations& first = moe_[0];
      auto per_layer = [&](const auto& of_first, auto alloc) {
        return share_ffn && l > 0 ? of_first : keep(alloc());
      };
      m.z = per_layer(first.z, [&] { return flt(N * R, "router activations"); });
      m.s = per_layer(first.s, [&] { return flt(N * R, "router activations"); });
      m.znorm = per_layer(first.znorm, [&] { return flt(N, "router activations"); });
      m.ids = per_layer(first.ids, [&] { return ints(N * k, "routing"); });
      m.gates = per_layer(first.gates, [&] { return flt(N * k, "routing"); });
      m.counts = per_layer(first.counts, [&] { return ints(R, "routing"); });
      m.offsets = per_layer(first.offsets, [&] { return ints(R + 1, "routing"); });
      m.row_slot = per_layer(first.row_slot, [&] { return ints(N * k, "routing"); });
      m.slot_row = per_layer(first.slot_row, [&] { return ints(N * k, "routing"); });
      m.row_gate = per_layer(first.row_gate, [&] { return flt(N * k, "routing"); });
      m.xg =
          per_layer(first.xg, [&] { return act(N * k * d, "expert inputs (worst-case routing)"); });
      m.aux_grad = keep(flt(R, "routing"));  // made in the forward with that moment's ĝ: kept
      if (c.lock.enabled) {
        const int64_t K = c.lock_set_size();
        m.s_set = per_layer(first.s_set, [&] { return flt(N * K, "router activations"); });
        m.ids_set = per_layer(first.ids_set, [&] { return ints(N * k, "routing"); });
      }
      if (c.router == RouterKind::norm && !plan_only_)
        m.c = normrouter_constant(static_cast<int>(R), static_cast<int>(k));
    }
    expert_weight_ = flt(R, "routing");
    if (c.expert_bias) {
      router_load_ = flt(int64_t(c.n_routers()) * R, "routing");
      B::zero(router_load_.data(), router_load_.size());
    }
    if (c.lock.enabled) {
      const int64_t K = c.lock_set_size();
      lock_sets_ = ints(c.n_layer * K, "routing");
      lock_scale_ = flt(c.n_layer * R, "routing");
      lock_hide_ = flt(c.n_layer * R, "routing");
      lock_ghat_ = flt(K, "routing");
    }
    routing_stats_ = ints(int64_t(c.n_layer) * (1 + 2 * R), "routing");
    perturbation_tables_ = ints(int64_t(c.n_layer) * R, "routing");
    B::zero(routing_stats_.data(), routing_stats_.size());
    host_routing_stats_.assign(routing_stats_.size(), 0);
    drows_ = act(rows * d, "backward scratch");
    ytmp_ = act(rows * d, "expert outputs");
    ds_ = flt(N * R, "backward scratch");
    dz_ = flt(N * R, "backward scratch");
    dgate_ = flt(2 * rows, "backward scratch");
  }
  aux_terms_ = flt(4 * int64_t(c.n_layer), "losses");
  if (c.ffn == FfnKind::unipool && !plan_only_) {
    const size_t n = size_t(c.n_pools()) * c.pool_size;
    pool_ghat_ = B::template alloc<Float>(n, "pool-loss state");
    pool_running_ = B::template alloc<Float>(n, "pool-loss state");
    B::zero(pool_ghat_.data(), pool_ghat_.size());
    B::zero(pool_running_.data(), pool_running_.size());
  }
  if (!plan_only_) {  // RoPE tables, computed on the host once, for every position it may see
    const int positions = std::max(T_, kv_cache_len_);
    const size_t n = static_cast<size_t>(positions) * c.head_dim() / 2;
    std::vector<Float> cos_table(n), sin_table(n);
    cpu::rope_tables(cos_table.data(), sin_table.data(), positions, c.head_dim(), c.rope_base);
    rope_cos_ = B::template alloc<Float>(n, "rope tables");
    rope_sin_ = B::template alloc<Float>(n, "rope tables");
    B::upload(rope_cos_.data(), cos_table.data(), n);
    B::upload(rope_sin_.data(), sin_table.data(), n);
  }

  x_final_ = act(N * d, "activations");
  xn_final_ = act(N * d, "activations");
  rstd_final_ = flt(N, "activations");
  dxn_final_ = act(N * d, "backward scratch");
  tokens_ = ints(N, "tokens");
  targets_ = ints(N, "tokens");
  losses_ = flt(N, "losses");
  score_positions_ = ints(N, "scoring");
  score_greedy_ = ints(N, "scoring");
  const int64_t Vp = c.padded_vocab();
  head_chunk_ = static_cast<int>(
      std::min<int64_t>(N, std::clamp<int64_t>((int64_t(1) << 24) / Vp, 64, 1024)));
  logits_ = act(int64_t(head_chunk_) * Vp, "LM-head logits chunk");

  dres_ = act(N * d, "backward scratch");
  dxn_ = act(N * d, "backward scratch");
  datt_ = act(N * d, "backward scratch");
  dqkv_ = act(N * c.qkv_width(), "backward scratch");
  dh13_ = act(rows * 2 * F, "backward scratch");
  dact_ = act(rows * F, "backward scratch");

  if (decoding) {  // per layer the keys (after RoPE) and values of kv_cache_len positions
    const int64_t P = kv_cache_len_, kv = int64_t(c.n_kv_head) * c.head_dim();
    k_cache_ = act(c.n_layer * P * kv, "KV cache");
    v_cache_ = act(c.n_layer * P * kv, "KV cache");
    decode_scores_ = flt(int64_t(c.n_head) * (P + 16), "attention_decode scratch");
    decode_logits_ = flt(c.padded_vocab(), "decode logits");
    if (!plan_only_) host_decode_logits_.resize(size_t(c.padded_vocab()));
  }
}

template <class B>
typename Model<B>::Weight* Model<B>::weight(int tensor) {
  if constexpr (B::kWeightCopy) {
    return weights_.data() + layout_.tensors[tensor].offset;
  } else {
    return params_.data() + layout_.tensors[tensor].offset;
  }
}

template <class B>
void Model<B>::refresh_weight_copy() {
  if constexpr (B::kWeightCopy) {
    B::float_to_bf16_copy(weights_.data(), params_.data(), int64_t(layout_.arena_size));
  }
}

template <class B>
void Model<B>::zero_grads() {
  B::zero(grads_.data(), grads_.size());
}

template <class B>
std::vector<typename Model<B>::Param> Model<B>::params_to_host() const {
  std::vector<Param> host(params_.size());
  B::download(host.data(), params_.data(), host.size());
  return host;
}

template <class B>
std::vector<typename Model<B>::Param> Model<B>::grads_to_host() const {
  std::vector<Param> host(grads_.size());
  B::download(host.data(), grads_.data(), host.size());
  return host;
}

template <class B>
void Model<B>::params_from_host(const Param* host) {
  B::upload(params_.data(), host, params_.size());
  refresh_weight_copy();
}

// ---------------------------------------------------------------------------------------------
// Pool-loss state: device arrays [groups, M] ↔ the host struct saved in checkpoints.

template <class B>
nlohmann::json Model<B>::export_state() const {
  nlohmann::json j = nlohmann::json::object();
  if (layout_.config.has_pools()) j["pool_loss"] = pool_state().to_json();
  return j;
}

template <class B>
void Model<B>::import_state(const nlohmann::json& state) {
  const ModelConfig& c = layout_.config;
  if (!c.has_pools()) return;
  check(state.contains("pool_loss"),
        "checkpoint state: missing pool_loss (the pool loss's counts)");
  PoolLossState pool;
  pool.from_json(state.at("pool_loss"), c.n_pools(), c.pool_size);
  set_pool_state(pool);
}

template <class B>
PoolLossState Model<B>::pool_state() const {
  PoolLossState state;
  const ModelConfig& c = layout_.config;
  if (c.ffn != FfnKind::unipool) return state;
  const int groups = c.n_pools(), M = c.pool_size;
  std::vector<Float> ghat(pool_ghat_.size()), running(pool_running_.size());
  B::download(ghat.data(), pool_ghat_.data(), ghat.size());
  B::download(running.data(), pool_running_.data(), running.size());
  state.ghat.assign(groups, std::vector<double>(M));
  state.running.assign(groups, std::vector<double>(M));
  for (int g = 0; g < groups; ++g) {
    for (int i = 0; i < M; ++i) {
      state.ghat[g][i] = static_cast<double>(ghat[size_t(g) * M + i]);
      state.running[g][i] = static_cast<double>(running[size_t(g) * M + i]);
    }
  }
  state.valid = pool_valid_;
  return state;
}

template <class B>
void Model<B>::set_pool_state(const PoolLossState& state) {
  const ModelConfig& c = layout_.config;
  if (c.ffn != FfnKind::unipool) return;
  const int groups = c.n_pools(), M = c.pool_size;
  check(static_cast<int>(state.ghat.size()) == groups &&
            static_cast<int>(state.running.size()) == groups,
        "model: pool-loss state has the wrong number of pool groups");
  std::vector<Float> ghat(size_t(groups) * M), running(size_t(groups) * M);
  for (int g = 0; g < groups; ++g) {
    check(static_cast<int>(state.ghat[g].size()) == M &&
              static_cast<int>(state.running[g].size()) == M,
          "model: pool-loss state does not match pool_size");
    for (int i = 0; i < M; ++i) {
      ghat[size_t(g) * M + i] = static_cast<Float>(state.ghat[g][i]);
      running[size_t(g) * M + i] = static_cast<Float>(state.running[g][i]);
    }
  }
  B::upload(pool_ghat_.data(), ghat.data(), ghat.size());
  B::upload(pool_running_.data(), running.data(), running.size());
  pool_valid_ = state.valid;
}

// ---------------------------------------------------------------------------------------------
// Forward

template <class B>
void Model<B>::check_token_ids(const int32_t* ids, int n, const char* what) const {
  const int V = layout_.config.vocab_size;
  for (int i = 0; i < n; ++i) {
    check(ids[i] >= 0 && ids[i] < V,
          "model: " + std::string(what) + " id " + std::to_string(ids[i]) + " at position " +
              std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
  }
}

// Embedding and every layer: x_final_ = the residual stream entering the final norm.
template <class B>
void Model<B>::forward_blocks(const int32_t* inputs, bool train, double loss_scale) {
  const ModelConfig& c = layout_.config;
  check_token_ids(inputs, N_, "token");
  check(!train || perturbations_.empty(),
        "model: routing perturbations are for evaluation forwards only");
  ++forwards_;
  B::upload(tokens_.data(), inputs, size_t(N_));
  loss_scale_ = loss_scale;
  B::zero(aux_terms_.data(), aux_terms_.size());
  {
    const auto phase = profile.scope("embedding fwd");
    B::embedding_forward(acts_[0].x.data(), tokens_.data(), param(layout_.tok_embeddings), N_,
                         c.d_model);
  }
  for (int l = 0; l < c.n_layer; ++l) {
    attention_block_forward(l);
    if (c.is_moe()) {
      moe_forward(l, train, loss_scale);
    } else {
      dense_ffn_forward(l);
    }
  }
  if (train && c.ffn == FfnKind::unipool && advance_pool_state) pool_valid_ = true;
}

// The evaluation forward, then the LM head on the chosen positions only: their final-norm rows
// gathered into [count, d] (into dxn_final_, the head's backward scratch, which an evaluation
// forward leaves unused), then per chunk of head_chunk_ rows
//   logits = xn · Oᵀ [rows, Vp];  losses = logsumexp(logits) − logits[target];
//   greedy = [target == argmax_{i < V} logits]
template <class B>
void Model<B>::score(const int32_t* inputs, const int32_t* positions, const int32_t* targets,
                     int count, Float* losses, int32_t* greedy) {
  const ModelConfig& c = layout_.config;
  check(count >= 0 && count <= N_, "model: score() of " + std::to_string(count) +
                                       " positions, more than the " + std::to_string(N_) +
                                       " of a forward");
  check(kv_cache_len_ == 0, "model: score() needs a model built without a KV cache");
  check_token_ids(targets, count, "target");
  for (int i = 0; i < count; ++i) {
    check(positions[i] >= 0 && positions[i] < N_,
          "model: scored position " + std::to_string(positions[i]) + " is outside [0, " +
              std::to_string(N_) + ")");
  }
  forward_blocks(inputs, /*train=*/false, 1.0);
  have_forward_ = false;
  const int d = c.d_model, Vp = c.padded_vocab();
  const auto phase = profile.scope("lm head fwd");
  B::rmsnorm_forward(xn_final_.data(), rstd_final_.data(), x_final_.data(),
                     param(layout_.final_norm), N_, d, c.norm_eps);
  B::upload(score_positions_.data(), positions, size_t(count));
  B::upload(targets_.data(), targets, size_t(count));
  Act* xn = dxn_final_.data();
  B::gather_rows(xn, xn_final_.data(), score_positions_.data(), count, 1, d);
  const Weight* O = weight(layout_.output);
  for (int r0 = 0; r0 < count; r0 += head_chunk_) {
    const int rows = std::min(head_chunk_, count - r0);
    B::matmul_forward(logits_.data(), xn + static_cast<int64_t>(r0) * d, O, rows, d, Vp, false);
    B::crossentropy_forward_backward(losses_.data() + r0, logits_.data(), targets_.data() + r0,
                                     rows, Vp, 0.0);
    B::target_is_argmax(score_greedy_.data() + r0, logits_.data(), targets_.data() + r0, rows,
                        c.vocab_size, Vp);
  }
  B::download(losses, losses_.data(), size_t(count));
  B::download(greedy, score_greedy_.data(), size_t(count));
}

template <class B>
Losses Model<B>::forward(const int32_t* inputs, const int32_t* targets, bool train,
                         double loss_scale) {
  check_token_ids(targets, N_, "target");
  forward_blocks(inputs, train, loss_scale);
  B::upload(targets_.data(), targets, size_t(N_));
  lm_head(train, loss_scale);
  have_forward_ = train;

  // The losses, summed on the host in a fixed order (this waits for the forward on the GPU).
  const auto phase = profile.scope("loss readback");
  host_losses_.resize(losses_.size());
  host_aux_terms_.resize(aux_terms_.size());
  B::download(host_losses_.data(), losses_.data(), host_losses_.size());
  B::download(host_aux_terms_.data(), aux_terms_.data(), host_aux_terms_.size());
  // The routing statistics ride on the same readback (the forward is done: no extra wait).
  if (collect_routing_stats) {
    host_routing_stats_.resize(routing_stats_.size());
    B::download(host_routing_stats_.data(), routing_stats_.data(), host_routing_stats_.size());
  }
  Losses losses;
  for (Float x : host_losses_) losses.lm += static_cast<double>(x);
  losses.lm /= N_;
  for (Float x : host_aux_terms_) losses.aux += static_cast<double>(x);
  return losses;
}

// One token through the same blocks as forward(), at position pos, against the KV cache; the
// LM head in fp32 (router_logits_forward reads the fp32 master weights: on the GPU the sampled
// distribution does not go through bf16 logits).
template <class B>
const std::vector<typename Model<B>::Float>& Model<B>::decode(int32_t token, int pos) {
  const ModelConfig& c = layout_.config;
  check(kv_cache_len_ > 0, "model: decode() needs a model built with a KV cache");
  check(token >= 0 && token < c.vocab_size, "model: token id " + std::to_string(token) +
                                                " is outside the vocabulary [0, " +
                                                std::to_string(c.vocab_size) + ")");
  check(pos >= 0 && pos < kv_cache_len_, "model: position " + std::to_string(pos) +
                                             " is outside the KV cache (" +
                                             std::to_string(kv_cache_len_) + " positions)");
  B::upload(tokens_.data(), &token, 1);
  B::embedding_forward(acts_[0].x.data(), tokens_.data(), param(layout_.tok_embeddings), 1,
                       c.d_model);
  for (int l = 0; l < c.n_layer; ++l) {
    attention_block_forward(l, pos);
    if (c.is_moe()) {
      moe_forward(l, /*train=*/false, 0.0);
    } else {
      dense_ffn_forward(l);
    }
  }
  B::rmsnorm_forward(xn_final_.data(), rstd_final_.data(), x_final_.data(),
                     param(layout_.final_norm), 1, c.d_model, c.norm_eps);
  B::router_logits_forward(decode_logits_.data(), xn_final_.data(), param(layout_.output), 1,
                           c.d_model, c.padded_vocab());
  B::download(host_decode_logits_.data(), decode_logits_.data(), host_decode_logits_.size());
  return host_decode_logits_;
}

// The residual stream after layer l: the next layer's input, or the final norm's input.
#define LAYER_OUT(l) ((l) + 1 < c.n_layer ? acts_[(l) + 1].x.data() : x_final_.data())

// h = x + Wo · Attn(RoPE(Wqkv · RMSNorm(x))), then the FFN's norm RMSNorm(h). Decoding (one token
// at decode_pos >= 0): RoPE at that position, the token's keys and values appended to the layer's
// cache, and its query row attends to the cache's decode_pos + 1 positions.
template <class B>
void Model<B>::attention_block_forward(int l, int decode_pos) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  const int d = c.d_model, nh = c.n_head, nkv = c.n_kv_head, hd = c.head_dim();
  const auto phase = profile.scope("attention fwd");
  B::rmsnorm_forward(a.xn_attn.data(), a.rstd_attn.data(), a.x.data(), param(v.attn_norm), N_, d,
                     c.norm_eps);
  B::matmul_forward(a.qkv.data(), a.xn_attn.data(), weight(v.wqkv), N_, d, c.qkv_width(), false);
  if (decode_pos < 0) {
    B::rope_forward(a.qkv.data(), rope_cos_.data(), rope_sin_.data(), B_, T_, nh, nkv, hd);
    B::attention_forward(a.att.data(), a.lse.data(), a.qkv.data(), B_, T_, nh, nkv, hd);
  } else {
    const int64_t kv = int64_t(nkv) * hd, half = hd / 2;
    B::rope_forward(a.qkv.data(), rope_cos_.data() + decode_pos * half,
                    rope_sin_.data() + decode_pos * half, 1, 1, nh, nkv, hd);
    Act* keys = k_cache_.data() + int64_t(l) * kv_cache_len_ * kv;
    Act* values = v_cache_.data() + int64_t(l) * kv_cache_len_ * kv;
    B::copy(keys + decode_pos * kv, a.qkv.data() + int64_t(nh) * hd, size_t(kv));
    B::copy(values + decode_pos * kv, a.qkv.data() + int64_t(nh + nkv) * hd, size_t(kv));
    B::attention_decode(a.att.data(), a.qkv.data(), keys, values, int(kv), decode_pos + 1, nh, nkv,
                        hd, decode_scores_.data());
  }
  B::copy(a.h.data(), a.x.data(), a.x.size());
  B::matmul_forward(a.h.data(), a.att.data(), weight(v.wo), N_, d, d, /*accumulate=*/true);
  B::rmsnorm_forward(a.xn_ffn.data(), a.rstd_ffn.data(), a.h.data(), param(v.ffn_norm), N_, d,
                     c.norm_eps);
}

// out = h + W2 · (silu(g) ⊙ v), [g; v] = W13 · xn
template <class B>
void Model<B>::dense_ffn_forward(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  const int d = c.d_model, F = c.ffn_hidden;
  const auto phase = profile.scope("dense ffn fwd");
  dense_ffn_hidden(l);
  Act* out = LAYER_OUT(l);
  B::copy(out, a.h.data(), a.h.size());
  B::matmul_forward(out, a.act.data(), weight(v.w2), N_, F, d, /*accumulate=*/true);
}

// [g; v] = W13 · xn → h13;  act = silu(g) ⊙ v
template <class B>
void Model<B>::dense_ffn_hidden(int l) {
  const ModelConfig& c = layout_.config;
  LayerActivations& a = acts_[l];
  const int d = c.d_model, F = c.ffn_hidden;
  B::matmul_forward(a.h13.data(), a.xn_ffn.data(), weight(layout_.layers[l].w13), N_, d, 2 * F,
                    false);
  B::swiglu_forward(a.act.data(), a.h13.data(), N_, F);
}

// The MoE block, in its phases:
//   route            router logits z = W_r xn (fp32) → scores s → top-k ids and gates → counts
//   dispatch         rows ordered by (expert, token), each row's gate, the tokens gathered
//   experts_forward  all experts in grouped GEMMs: [g; v] = W13_e x, a = silu(g) ⊙ v,
//                    y = W2_e (gate ⊙ a)   (the gate multiplies before W2)
//   combine          out[t] = h[t] + Σ_j y[slot (t, j)], summed in slot order
//   balancing_terms  (training) the Switch / pool / z-loss values, and their gradient on the
//                    scores, the same for every token (kept in aux_grad for the backward)
// Routing never goes through the host: counts, offsets and the row order stay in the backend's
// memory and the expert GEMMs read the offsets there.
template <class B>
void Model<B>::moe_forward(int l, bool train, double loss_scale) {
  route(l);
  if (collect_routing_stats) {
    const int R = layout_.config.router_width();
    B::routing_stats(routing_stats_.data() + int64_t(l) * (1 + 2 * R), moe_[l].ids.data(),
                     moe_[l].gates.data(), N_, layout_.config.top_k, R);
    if (l == 0) routing_stats_tokens_ += N_;
  }
  dispatch(l);
  experts_forward(l);
  combine(l);
  if (train) balancing_terms(l, loss_scale);
}

template <class B>
void Model<B>::route(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  MoeActivations& m = moe_[l];
  const int d = c.d_model, k = c.top_k, R = c.router_width();
  const auto phase = profile.scope("router fwd");
  B::router_logits_forward(m.z.data(), acts_[l].xn_ffn.data(), param(v.router), N_, d, R);
  router_scores_forward(l);
  const Param* bias = v.expert_bias >= 0 ? param(v.expert_bias) : nullptr;
  if (lock_routing_.sets.empty()) {
    B::topk_forward(m.ids.data(), m.gates.data(), m.s.data(), bias, N_, R, k,
                    c.renormalise_gates());
  } else if (lock_compact()) {
    // Locked: the top-k over the K columns of the layer's set (ascending, so ties still go to the
    // lower pool id), then the chosen positions mapped back to pool ids.
    const int K = c.lock_set_size();
    const int32_t* set = lock_sets_.data() + int64_t(l) * K;
    B::select_columns_forward(m.s_set.data(), m.s.data(), set, N_, R, K);
    B::topk_forward(m.ids_set.data(), m.gates.data(), m.s_set.data(), nullptr, N_, K, k, false);
    B::copy(m.ids.data(), m.ids_set.data(), m.ids.size());
    B::map_ids(m.ids.data(), set, int64_t(N_) * k);
  } else {
    // Candidate or locked sets on the whole width: the scores outside the set faded by 1 − α
    // (they feed the top-k, the gates and the balancing terms so), and hidden from the top-k once
    // α = 1.
    if (lock_routing_.alpha > 0)
      B::scale_columns(m.s.data(), lock_scale_.data() + int64_t(l) * R, N_, R);
    const Float* hide = lock_routing_.alpha >= 1 ? lock_hide_.data() + int64_t(l) * R : nullptr;
    B::topk_forward(m.ids.data(), m.gates.data(), m.s.data(), hide, N_, R, k, false);
  }
  if (!perturbation_of_layer_.empty() && perturbation_of_layer_[size_t(l)] >= 0) perturb_routing(l);
  B::expert_counts(m.counts.data(), m.ids.data(), N_, k, R);
}

// set_routing_perturbations' replacement of layer l's chosen ids (evaluation only).
template <class B>
void Model<B>::perturb_routing(int l) {
  const ModelConfig& c = layout_.config;
  const RoutingPerturbation& p = perturbations_[size_t(perturbation_of_layer_[size_t(l)])];
  MoeActivations& m = moe_[l];
  const int k = c.top_k, R = c.router_width();
  if (p.kind == RoutingPerturbation::Kind::permute) {
    B::map_ids(m.ids.data(), perturbation_tables_.data() + int64_t(l) * R, int64_t(N_) * k);
    return;
  }
  // k distinct draws per token: a partial Fisher–Yates shuffle of the candidates.
  const uint64_t stream = splitmix64(p.seed + 0x9E3779B97F4A7C15ULL * forwards_);
  std::vector<int32_t> ids(size_t(N_) * k), pick(p.experts.size());
  const uint64_t n = pick.size();
  for (int t = 0; t < N_; ++t) {
    std::copy(p.experts.begin(), p.experts.end(), pick.begin());
    for (int j = 0; j < k; ++j) {
      const uint64_t r = splitmix64(stream + uint64_t(t) * uint64_t(k) + uint64_t(j)) % (n - j);
      std::swap(pick[size_t(j)], pick[size_t(j + r)]);
      ids[size_t(t) * k + j] = pick[size_t(j)];
    }
  }
  B::upload(m.ids.data(), ids.data(), ids.size());
}

// The router's scores from its logits, forward and backward: the one place the router type is
// read. Softmax: s = softmax(z). NormRouter: s = ReLU(σ · c · z / ||z||). Sigmoid: s = sigmoid(z)
// (docs/model.md §Routers).
template <class B>
void Model<B>::router_scores_forward(int l) {
  const ModelConfig& c = layout_.config;
  MoeActivations& m = moe_[l];
  const int R = c.router_width();
  switch (c.router) {
    case RouterKind::softmax:
      B::softmax_forward(m.s.data(), m.z.data(), N_, R);
      break;
    case RouterKind::norm:
      B::norm_router_forward(m.s.data(), m.znorm.data(), m.z.data(),
                             param(layout_.layers[l].router_scale), m.c, N_, R);
      break;
    case RouterKind::sigmoid:
      B::sigmoid_forward(m.s.data(), m.z.data(), N_, R);
      break;
  }
}

// ds (dL/ds, [N, R]) → dz (dL/dz, overwritten); the NormRouter adds its σ gradient.
template <class B>
void Model<B>::router_scores_backward(int l) {
  const ModelConfig& c = layout_.config;
  MoeActivations& m = moe_[l];
  const int R = c.router_width();
  switch (c.router) {
    case RouterKind::softmax:
      B::softmax_backward(dz_.data(), ds_.data(), m.s.data(), N_, R);
      break;
    case RouterKind::norm: {
      const LayerView& v = layout_.layers[l];
      B::norm_router_backward(dz_.data(), grad(v.router_scale), ds_.data(), m.z.data(),
                              m.znorm.data(), param(v.router_scale), m.c, N_, R);
      break;
    }
    case RouterKind::sigmoid:
      B::sigmoid_backward(dz_.data(), ds_.data(), m.s.data(), N_, R);
      break;
  }
}

template <class B>
void Model<B>::dispatch(int l) {
  const ModelConfig& c = layout_.config;
  MoeActivations& m = moe_[l];
  const int d = c.d_model, k = c.top_k, R = c.router_width();
  const auto phase = profile.scope("dispatch fwd");
  B::dispatch_plan(m.offsets.data(), m.row_slot.data(), m.slot_row.data(), m.ids.data(), N_, k, R);
  B::slot_to_row_values(m.row_gate.data(), m.gates.data(), m.row_slot.data(), N_ * k);
  B::gather_rows(m.xg.data(), acts_[l].xn_ffn.data(), m.row_slot.data(), N_, k, d);
}

template <class B>
void Model<B>::experts_forward(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  MoeActivations& m = moe_[l];
  const int d = c.d_model, F = c.ffn_hidden, R = c.router_width(), rows = N_ * c.top_k;
  const auto phase = profile.scope("experts fwd");
  Act* gated = dact_.data();  // scratch in the forward
  B::grouped_matmul_forward(a.h13.data(), m.xg.data(), weight(v.w13), m.offsets.data(), rows, R, d,
                            2 * F);
  B::swiglu_forward(a.act.data(), a.h13.data(), rows, F);
  B::scale_rows(gated, a.act.data(), m.row_gate.data(), rows, F);
  B::grouped_matmul_forward(ytmp_.data(), gated, weight(v.w2), m.offsets.data(), rows, R, F, d);
}

template <class B>
void Model<B>::combine(int l) {
  const ModelConfig& c = layout_.config;
  const auto phase = profile.scope("dispatch fwd");
  Act* out = LAYER_OUT(l);
  B::copy(out, acts_[l].h.data(), acts_[l].h.size());
  B::sum_slot_rows(out, ytmp_.data(), moe_[l].slot_row.data(), N_, c.top_k, c.d_model,
                   /*accumulate=*/true);
}

// Balancing terms. Each is coeff · Σ_i w_i Σ_t s[t,i]; its gradient on s[t,i] is coeff · w_i,
// collected (times loss_scale) in aux_grad for the backward. The entropy term's gradient is also
// the same for every token, so it joins aux_grad too. Values go to aux_terms[l, term]. On the
// compact path (locked sets) the pool and entropy terms see the K columns of the layer's set:
// aux_grad[0..K) then holds their gradient (the other columns' scores are 0 on the whole width,
// so the values are the same).
template <class B>
void Model<B>::balancing_terms(int l, double loss_scale) {
  const ModelConfig& c = layout_.config;
  const LossConfig& loss_cfg = loss_config_;
  const LayerView& v = layout_.layers[l];
  MoeActivations& m = moe_[l];
  const int k = c.top_k, R = c.router_width();
  const auto phase = profile.scope("balancing terms");
  B::zero(m.aux_grad.data(), m.aux_grad.size());
  Float* terms = aux_terms_.data() + 4 * l;
  const bool compact = lock_compact();
  const int K = c.lock_set_size();
  // The scores the pool and entropy terms read, and their width.
  const Float* scores = compact ? m.s_set.data() : m.s.data();
  const int width = compact ? K : R;
  const double NN = static_cast<double>(N_) * N_;
  const int g = v.pool, Lg = c.ffn == FfnKind::unipool ? c.pool_layers() : 1;
  Float* ghat = c.ffn == FfnKind::unipool ? pool_ghat_.data() + int64_t(g) * R : nullptr;
  if (loss_cfg.aux_coeff > 0) {  // per-layer Switch loss, weights = this layer's counts
    const double coeff = loss_cfg.aux_coeff * R / (k * NN);
    B::counts_to_float(expert_weight_.data(), m.counts.data(), R);
    B::balance_loss_forward(terms + 0, m.s.data(), expert_weight_.data(), coeff, N_, R);
    B::axpy(m.aux_grad.data(), expert_weight_.data(), loss_scale * coeff, R);
  }
  if (loss_cfg.pool_aux_coeff > 0 && pool_valid_) {  // pool loss with the previous ĝ
    const double coeff = loss_cfg.pool_aux_coeff * R / (k * NN * Lg);
    const Float* weights = ghat;
    if (compact) {  // ĝ of the set's experts
      B::select_columns_forward(lock_ghat_.data(), ghat, lock_sets_.data() + int64_t(l) * K, 1, R,
                                K);
      weights = lock_ghat_.data();
    }
    B::balance_loss_forward(terms + 1, scores, weights, coeff, N_, width);
    B::axpy(m.aux_grad.data(), weights, loss_scale * coeff, width);
  }
  if (c.ffn == FfnKind::unipool && advance_pool_state) {  // ĝ ← layer-mean of this batch's counts
    const bool last_layer_of_group = l == (g + 1) * Lg - 1;
    B::pool_counts_update(pool_running_.data() + int64_t(g) * R, ghat, m.counts.data(),
                          last_layer_of_group, Lg, R);
  }
  if (loss_cfg.z_loss_coeff > 0) {
    B::z_loss_forward(terms + 2, m.z.data(), loss_cfg.z_loss_coeff, N_, R);
  }
  if (entropy_coeff_ > 0) {  // UniPool-lock's target-cardinality term, β/L per layer
    const double coeff = entropy_coeff_ / c.n_layer;
    B::entropy_loss_forward(terms + 3, expert_weight_.data(), scores, nullptr, coeff,
                            std::log(double(c.lock.entropy_target)), N_, width);
    B::axpy(m.aux_grad.data(), expert_weight_.data(), loss_scale, width);
  }
  if (c.expert_bias) {  // the step's load of this layer's router (for update_expert_bias)
    B::counts_to_float(expert_weight_.data(), m.counts.data(), R);
    B::axpy(router_load_.data() + int64_t(v.router_id) * R, expert_weight_.data(), 1.0, R);
  }
}

// Final RMSNorm, then logits = xn · Oᵀ over all Vp columns and the per-token cross-entropy, in
// chunks of rows. In training the chunk's logits become dlogits in place and are consumed at once:
// dxn = dlogits · O and dO += dlogitsᵀ · xn, so [N, Vp] logits never exist.
template <class B>
void Model<B>::lm_head(bool train, double loss_scale) {
  const ModelConfig& c = layout_.config;
  const int d = c.d_model, Vp = c.padded_vocab();
  const auto phase = profile.scope(train ? "lm head fwd+bwd" : "lm head fwd");
  B::rmsnorm_forward(xn_final_.data(), rstd_final_.data(), x_final_.data(),
                     param(layout_.final_norm), N_, d, c.norm_eps);
  const double dloss = train ? loss_scale / N_ : 0.0;
  const Weight* O = weight(layout_.output);
  for (int r0 = 0; r0 < N_; r0 += head_chunk_) {
    const int rows = std::min(head_chunk_, N_ - r0);
    const Act* xn = xn_final_.data() + static_cast<int64_t>(r0) * d;
    B::matmul_forward(logits_.data(), xn, O, rows, d, Vp, false);
    B::crossentropy_forward_backward(losses_.data() + r0, logits_.data(), targets_.data() + r0,
                                     rows, Vp, dloss);
    if (train) {
      B::matmul_backward_input(dxn_final_.data() + static_cast<int64_t>(r0) * d, logits_.data(), O,
                               rows, d, Vp, false);
      B::matmul_backward_weight(grad(layout_.output), logits_.data(), xn, rows, d, Vp);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward: dres carries dL/d(residual stream) from the top of the network down to the embedding.

template <class B>
void Model<B>::backward() {
  check(have_forward_, "model: backward() needs a training forward() first");
  have_forward_ = false;
  const ModelConfig& c = layout_.config;
  const int d = c.d_model;
  {
    const auto phase = profile.scope("norms bwd");
    B::zero(dres_.data(), dres_.size());
    B::rmsnorm_backward(dres_.data(), grad(layout_.final_norm), dxn_final_.data(), x_final_.data(),
                        param(layout_.final_norm), rstd_final_.data(), N_, d);
  }
  for (int l = c.n_layer - 1; l >= 0; --l) {
    const LayerView& v = layout_.layers[l];
    LayerActivations& a = acts_[l];
    recompute_layer(l);
    if (c.is_moe()) {
      moe_backward(l);
    } else {
      dense_ffn_backward(l);
    }
    {  // dxn_ = dL/d RMSNorm(h): through the norm, added to the residual path → dres = dL/dh
      const auto phase = profile.scope("norms bwd");
      B::rmsnorm_backward(dres_.data(), grad(v.ffn_norm), dxn_.data(), a.h.data(),
                          param(v.ffn_norm), a.rstd_ffn.data(), N_, d);
    }
    attention_block_backward(l);
  }
  const auto phase = profile.scope("embedding bwd");
  B::embedding_backward(grad(layout_.tok_embeddings), dres_.data(), tokens_.data(), N_, d);
}

// Activation recompute (docs/model.md §Activation recompute): what layer l's backward reads and
// the forward did not keep is made again by the same ops on the same inputs, so it is bitwise what
// the forward had. Only buffers are written (and, for `full`, the layer's output, with the bits it
// already holds); balancing_terms is not re-run, so ĝ, the balancing values and the routers' loads
// are taken once, in the forward.
template <class B>
void Model<B>::recompute_layer(int l) {
  const ModelConfig& c = layout_.config;
  if (recompute_ == Recompute::none) return;
  // (its time counts in the forward phases it runs: attention fwd, router fwd, experts fwd, ...)
  if (recompute_ == Recompute::full) attention_block_forward(l);
  if (c.is_moe()) {
    route(l);
    dispatch(l);
    experts_forward(l);
  } else if (recompute_ == Recompute::full) {
    dense_ffn_hidden(l);
  }
}

template <class B>
void Model<B>::dense_ffn_backward(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  const int d = c.d_model, F = c.ffn_hidden;
  const auto phase = profile.scope("dense ffn bwd");
  B::matmul_backward_input(dact_.data(), dres_.data(), weight(v.w2), N_, F, d, false);
  B::matmul_backward_weight(grad(v.w2), dres_.data(), a.act.data(), N_, F, d);
  B::swiglu_backward(dh13_.data(), dact_.data(), a.h13.data(), N_, F);
  B::matmul_backward_weight(grad(v.w13), dh13_.data(), a.xn_ffn.data(), N_, d, 2 * F);
  B::matmul_backward_input(dxn_.data(), dh13_.data(), weight(v.w13), N_, d, 2 * F, false);
}

// Reverse of moe_forward, phase by phase. On entry dres = dL/d(block output); on exit dxn_ =
// dL/dxn (the router's share included).
template <class B>
void Model<B>::moe_backward(int l) {
  combine_backward(l);
  experts_backward(l);
  dispatch_backward(l);
  route_backward(l);
}

// The combine summed each token's k slot rows: every row's dy is its token's dres.
template <class B>
void Model<B>::combine_backward(int l) {
  const ModelConfig& c = layout_.config;
  const auto phase = profile.scope("dispatch bwd");
  B::gather_rows(drows_.data(), dres_.data(), moe_[l].row_slot.data(), N_, c.top_k, c.d_model);
}

// Per expert e on its rows (dy = dL/dy in drows_, p = gate, a = silu(g) ⊙ v):
//   dW2_e += dyᵀ (p·a);  dA = dy W2_e;  dp = <dA, a>;  da = p·dA;  [dg; dv] = swiglu'(da)
//   dW13_e += [dg; dv]ᵀ x;  dx = [dg; dv] W13_e  (into drows_; dp per row into dgate_)
template <class B>
void Model<B>::experts_backward(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  MoeActivations& m = moe_[l];
  const int d = c.d_model, F = c.ffn_hidden, R = c.router_width(), rows = N_ * c.top_k;
  const int32_t* offsets = m.offsets.data();
  const auto phase = profile.scope("experts bwd");
  Act* gated = dh13_.data();  // scratch until dh13 is formed
  B::scale_rows(gated, a.act.data(), m.row_gate.data(), rows, F);
  B::grouped_matmul_backward_weight(grad(v.w2), drows_.data(), gated, offsets, rows, R, F, d);
  B::grouped_matmul_backward_input(dact_.data(), drows_.data(), weight(v.w2), offsets, rows, R, F,
                                   d);
  B::row_dot(dgate_.data(), dact_.data(), a.act.data(), rows, F);  // dp per row
  B::scale_rows(dact_.data(), dact_.data(), m.row_gate.data(), rows, F);
  B::swiglu_backward(dh13_.data(), dact_.data(), a.h13.data(), rows, F);
  B::grouped_matmul_backward_weight(grad(v.w13), dh13_.data(), m.xg.data(), offsets, rows, R, d,
                                    2 * F);
  B::grouped_matmul_backward_input(drows_.data(), dh13_.data(), weight(v.w13), offsets, rows, R, d,
                                   2 * F);
}

// The gather copied xn to each of a token's k rows: dxn = Σ of its rows' dx, in slot order.
template <class B>
void Model<B>::dispatch_backward(int l) {
  const ModelConfig& c = layout_.config;
  const auto phase = profile.scope("dispatch bwd");
  B::sum_slot_rows(dxn_.data(), drows_.data(), moe_[l].slot_row.data(), N_, c.top_k, c.d_model,
                   /*accumulate=*/false);
}

// ds = (balancing terms' gradient) + top-k'(dp); dz = scores'(ds) (+ z-loss); dW_r += dzᵀ xn;
// dxn += dz W_r.
template <class B>
void Model<B>::route_backward(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  MoeActivations& m = moe_[l];
  const int d = c.d_model, k = c.top_k, R = c.router_width(), rows = N_ * k;
  const auto phase = profile.scope("router bwd");
  Float* dgate_row = dgate_.data();
  Float* dgate_slot = dgate_.data() + rows;
  B::row_to_slot_values(dgate_slot, dgate_row, m.row_slot.data(), rows);
  if (lock_compact()) {
    // The K columns of the layer's set, then spread over the whole width (0 elsewhere); dz_ is
    // free until router_scores_backward writes it.
    const int K = c.lock_set_size();
    Float* ds_set = dz_.data();
    B::zero(ds_set, size_t(N_) * K);
    B::balance_loss_backward(ds_set, m.aux_grad.data(), 1.0, N_, K);
    B::topk_backward(ds_set, dgate_slot, m.ids_set.data(), m.gates.data(), m.s_set.data(), N_, K, k,
                     false);
    B::select_columns_backward(ds_.data(), ds_set, lock_sets_.data() + int64_t(l) * K, N_, R, K);
  } else {
    B::zero(ds_.data(), ds_.size());
    B::balance_loss_backward(ds_.data(), m.aux_grad.data(), 1.0, N_, R);
    B::topk_backward(ds_.data(), dgate_slot, m.ids.data(), m.gates.data(), m.s.data(), N_, R, k,
                     c.renormalise_gates());
    // The faded scores were s ⊙ m: their gradient times m is the gradient on s.
    if (!lock_routing_.sets.empty() && lock_routing_.alpha > 0)
      B::scale_columns(ds_.data(), lock_scale_.data() + int64_t(l) * R, N_, R);
  }
  router_scores_backward(l);
  if (loss_config_.z_loss_coeff > 0) {
    B::z_loss_backward(dz_.data(), m.z.data(), loss_config_.z_loss_coeff * loss_scale_, N_, R);
  }
  B::router_logits_backward(dxn_.data(), grad(v.router), dz_.data(), acts_[l].xn_ffn.data(),
                            param(v.router), N_, d, R);
}

// dres = dL/dh on entry, dL/dx (the layer's input) on exit.
template <class B>
void Model<B>::attention_block_backward(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  const int d = c.d_model;
  const auto phase = profile.scope("attention bwd");
  B::matmul_backward_input(datt_.data(), dres_.data(), weight(v.wo), N_, d, d, false);
  B::matmul_backward_weight(grad(v.wo), dres_.data(), a.att.data(), N_, d, d);
  B::attention_backward(dqkv_.data(), datt_.data(), a.qkv.data(), a.att.data(), a.lse.data(), B_,
                        T_, c.n_head, c.n_kv_head, c.head_dim());
  B::rope_backward(dqkv_.data(), rope_cos_.data(), rope_sin_.data(), B_, T_, c.n_head, c.n_kv_head,
                   c.head_dim());
  B::matmul_backward_weight(grad(v.wqkv), dqkv_.data(), a.xn_attn.data(), N_, d, c.qkv_width());
  B::matmul_backward_input(dxn_.data(), dqkv_.data(), weight(v.wqkv), N_, d, c.qkv_width(), false);
  B::rmsnorm_backward(dres_.data(), grad(v.attn_norm), dxn_.data(), a.x.data(), param(v.attn_norm),
                      a.rstd_attn.data(), N_, d);
}

#undef LAYER_OUT

// ---------------------------------------------------------------------------------------------
// Host-side views of the last forward.

// ---------------------------------------------------------------------------------------------
// Aux-free balancing: the routers' loads and the sign update of their bias (docs/model.md
// §Routers). The bias lives in the arena (routers.R.expert_bias, not trained) and is read by
// topk_forward.

template <class B>
std::vector<double> Model<B>::router_loads() const {
  std::vector<Float> host(router_load_.size());
  B::download(host.data(), router_load_.data(), host.size());
  return std::vector<double>(host.begin(), host.end());
}

template <class B>
void Model<B>::update_expert_bias(const std::vector<double>& loads, double rate) {
  const ModelConfig& c = layout_.config;
  if (!c.expert_bias) return;
  const int R = c.router_width();
  check(loads.size() == size_t(c.n_routers()) * R,
        "model: update_expert_bias needs " + std::to_string(c.n_routers() * R) + " loads, got " +
            std::to_string(loads.size()));
  const Param step = static_cast<Param>(rate);
  std::vector<Param> bias(R);
  for (int r = 0; r < c.n_routers(); ++r) {
    const int tensor = layout_.layers[r * c.router_share].expert_bias;
    Param* dev = param(tensor);
    B::download(bias.data(), dev, size_t(R));
    const double* load = loads.data() + size_t(r) * R;
    double mean = 0;
    for (int i = 0; i < R; ++i) mean += load[i];
    mean /= R;
    for (int i = 0; i < R; ++i) {
      const double gap = mean - load[i];
      bias[i] += gap > 0 ? step : gap < 0 ? -step : Param(0);  // rate · sign(mean − load)
    }
    B::upload(dev, bias.data(), size_t(R));
  }
  B::zero(router_load_.data(), router_load_.size());
}

// ---------------------------------------------------------------------------------------------
// UniPool-lock: the routing restriction and the entropy term's coefficient (docs/model.md
// §UniPool-lock).

template <class B>
bool Model<B>::lock_compact() const {
  return lock_routing_.locked && layout_.config.lock.compact;
}

template <class B>
void Model<B>::set_lock_routing(const LockRouting& routing) {
  const ModelConfig& c = layout_.config;
  check(c.lock.enabled, "model: set_lock_routing needs a model built with lock.enabled");
  const int L = c.n_layer, R = c.router_width(), K = c.lock_set_size();
  check(routing.alpha >= 0 && routing.alpha <= 1,
        "model: the lock's alpha must be in [0, 1], got " + std::to_string(routing.alpha));
  check(!routing.locked || (routing.alpha == 1 && !routing.sets.empty()),
        "model: locked sets need alpha = 1");
  check(!(routing.locked && c.lock.compact) || loss_config_.aux_coeff == 0,
        "model: the compact path has no per-layer Switch loss (loss.aux_coeff must be 0)");
  LockRouting sorted = routing;
  if (!routing.sets.empty()) {
    check(int(routing.sets.size()) == L,
          "model: the lock needs one set per layer (" + std::to_string(L) + ")");
    std::vector<int32_t> sets;
    std::vector<Float> scale, hide;
    std::vector<int> owner(static_cast<size_t>(R), -1);
    for (int l = 0; l < L; ++l) {
      std::vector<int>& set = sorted.sets[size_t(l)];
      std::sort(set.begin(), set.end());
      check(int(set.size()) == K, "model: layer " + std::to_string(l) + "'s set holds " +
                                      std::to_string(set.size()) +
                                      " experts, not K = " + std::to_string(K));
      for (int e : set) {
        check(e >= 0 && e < R && owner[size_t(e)] < 0,
              "model: expert " + std::to_string(e) + " is outside the pool or in two sets");
        owner[size_t(e)] = l;
        sets.push_back(e);
      }
    }
    const Float faded = Float(1.0 - routing.alpha);
    const Float hidden = -std::numeric_limits<Float>::infinity();
    for (int l = 0; l < L; ++l)
      for (int e = 0; e < R; ++e) {
        scale.push_back(owner[size_t(e)] == l ? Float(1) : faded);
        hide.push_back(owner[size_t(e)] == l ? Float(0) : hidden);
      }
    B::upload(lock_sets_.data(), sets.data(), sets.size());
    B::upload(lock_scale_.data(), scale.data(), scale.size());
    B::upload(lock_hide_.data(), hide.data(), hide.size());
  }
  lock_routing_ = std::move(sorted);
}

template <class B>
void Model<B>::set_entropy_coeff(double beta) {
  check(beta >= 0 && std::isfinite(beta), "model: the entropy coefficient must be >= 0");
  check(beta == 0 || layout_.config.lock.enabled,
        "model: the entropy term needs a model built with lock.enabled");
  entropy_coeff_ = beta;
}

template <class B>
void Model<B>::set_routing_perturbations(const std::vector<RoutingPerturbation>& perturbations) {
  const ModelConfig& c = layout_.config;
  check(perturbations.empty() || c.is_moe(), "model: a dense model has no routing to perturb");
  const int L = c.n_layer, R = c.router_width(), k = c.top_k;
  std::vector<int> of_layer(static_cast<size_t>(L), -1);
  for (size_t i = 0; i < perturbations.size(); ++i) {
    const RoutingPerturbation& p = perturbations[i];
    check(p.layer >= 0 && p.layer < L && of_layer[size_t(p.layer)] < 0,
          "model: a routing perturbation names layer " + std::to_string(p.layer) +
              " (outside the model, or twice)");
    std::vector<char> seen(static_cast<size_t>(R), 0);
    for (int32_t e : p.experts) {
      check(e >= 0 && e < R && !seen[size_t(e)],
            "model: a routing perturbation's experts must be distinct ids below " +
                std::to_string(R));
      seen[size_t(e)] = 1;
    }
    if (p.kind == RoutingPerturbation::Kind::permute) {
      check(int(p.experts.size()) == R,
            "model: a permutation of the routing needs all " + std::to_string(R) + " experts");
      B::upload(perturbation_tables_.data() + int64_t(p.layer) * R, p.experts.data(), size_t(R));
    } else {
      check(int(p.experts.size()) >= k, "model: random routing needs at least top_k = " +
                                            std::to_string(k) + " candidate experts");
    }
    of_layer[size_t(p.layer)] = int(i);
  }
  perturbations_ = perturbations;
  perturbation_of_layer_ = perturbations.empty() ? std::vector<int>{} : of_layer;
}

template <class B>
void Model<B>::reset_routing_stats() {
  B::zero(routing_stats_.data(), routing_stats_.size());
  host_routing_stats_.assign(routing_stats_.size(), 0);
  routing_stats_tokens_ = 0;
}

template <class B>
std::vector<int64_t> Model<B>::routing_stats() const {
  return std::vector<int64_t>(host_routing_stats_.begin(), host_routing_stats_.end());
}

template <class B>
std::vector<int32_t> Model<B>::routed_experts(int layer) const {
  const MoeActivations& m = moe_.at(static_cast<size_t>(layer));
  std::vector<int32_t> ids(m.ids.size());
  B::download(ids.data(), m.ids.data(), ids.size());
  return ids;
}

template <class B>
std::vector<typename Model<B>::Float> Model<B>::token_losses() const {
  std::vector<Float> losses(losses_.size());
  B::download(losses.data(), losses_.data(), losses.size());
  return losses;
}

template <class B>
double Model<B>::routing_margin() const {
  const ModelConfig& c = layout_.config;
  double margin = INFINITY;
  if (!c.is_moe()) return margin;
  const int R = c.router_width(), k = c.top_k;
  std::vector<double> row(R);
  std::vector<Float> s(size_t(N_) * R), z(size_t(N_) * R), znorm(static_cast<size_t>(N_));
  std::vector<Param> bias(size_t(R), Param(0));  // the selection keys are s + bias
  for (int l = 0; l < c.n_layer; ++l) {
    const MoeActivations& m = moe_[size_t(l)];
    B::download(s.data(), m.s.data(), s.size());
    B::download(z.data(), m.z.data(), z.size());
    B::download(znorm.data(), m.znorm.data(), znorm.size());
    const int b = layout_.layers[size_t(l)].expert_bias;
    if (b >= 0)
      B::download(bias.data(), params_.data() + layout_.tensors[size_t(b)].offset, bias.size());
    if (!lock_routing_.sets.empty() && lock_routing_.alpha >= 1) {
      // The experts outside the set are hidden from the top-k (−inf keys; on the compact path s
      // holds their unfaded scores, which the top-k never saw).
      std::vector<Float> hide(static_cast<size_t>(R));
      B::download(hide.data(), lock_hide_.data() + int64_t(l) * R, hide.size());
      for (int i = 0; i < R; ++i) bias[size_t(i)] = Param(hide[size_t(i)]);
    }
    for (int t = 0; t < N_; ++t) {
      for (int i = 0; i < R; ++i)
        row[i] = static_cast<double>(s[static_cast<int64_t>(t) * R + i]) +
                 static_cast<double>(bias[size_t(i)]);
      if (k < R) {
        std::sort(row.begin(), row.end(), std::greater<double>());
        // Two NormRouter scores at exactly 0 are both below the ReLU kink: the choice between
        // them (lowest index) cannot flip under a small step, the kink margin below covers it.
        const bool both_clamped = c.router == RouterKind::norm && row[k - 1] == 0.0;
        if (!both_clamped) margin = std::min(margin, row[k - 1] - row[k]);
      }
      if (c.router == RouterKind::norm) {
        const double n = static_cast<double>(znorm[t]);
        for (int i = 0; i < R; ++i)
          margin = std::min(margin,
                            std::fabs(static_cast<double>(z[static_cast<int64_t>(t) * R + i])) / n);
      }
    }
  }
  return margin;
}

template class Model<CpuBackend<float>>;
template class Model<CpuBackend<double>>;
#ifdef UNIPOOL_HAVE_CUDA
template class Model<CudaBackend>;
#endif

}  // namespace unipool
