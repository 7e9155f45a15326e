// The forward and backward op sequence of SPEC.md §1. Read top to bottom: forward(), then the
// blocks it calls in order, then backward(), which visits the same blocks in reverse.
#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "engine/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/crossentropy.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/layers.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/router.h"
#include "model/normrouter_constant.h"

namespace unipool {

using namespace cpu;

// ---------------------------------------------------------------------------------------------
// Pool-loss state (one-step-behind counts)

nlohmann::json PoolLossState::to_json() const {
  return {{"valid", valid}, {"ghat", ghat}, {"running", running}};
}

void PoolLossState::from_json(const nlohmann::json& j, int groups, int M) {
  check(j.is_object() && j.contains("valid") && j.contains("ghat") && j.contains("running"),
        "checkpoint state: pool_loss must hold valid, ghat and running");
  const auto g = j.at("ghat").get<std::vector<std::vector<double>>>();
  const auto r = j.at("running").get<std::vector<std::vector<double>>>();
  check(static_cast<int>(g.size()) == groups && static_cast<int>(r.size()) == groups,
        "checkpoint state: pool_loss has " + std::to_string(g.size()) + " pool groups, the model " +
            std::to_string(groups));
  for (int i = 0; i < groups; ++i)
    check(static_cast<int>(g[i].size()) == M && static_cast<int>(r[i].size()) == M,
          "checkpoint state: pool_loss counts do not match pool_size " + std::to_string(M));
  ghat = g;
  running = r;
  valid = j.at("valid").get<bool>();
}

// ---------------------------------------------------------------------------------------------
// Construction: every buffer sized once.

template <typename T>
Model<T>::Model(const Layout& layout, const LossConfig& loss, int batch, int seq_len)
    : layout_(layout), loss_config_(loss), B_(batch), T_(seq_len), N_(batch * seq_len) {
  const ModelConfig& c = layout_.config;
  check(batch >= 1 && seq_len >= 1, "model: batch and seq_len must be >= 1");
  check(seq_len <= c.seq_len, "model: seq_len " + std::to_string(seq_len) +
                                  " exceeds model.seq_len " + std::to_string(c.seq_len));
  const int64_t N = N_, d = c.d_model, F = c.ffn_hidden, k = c.top_k, R = c.router_width();
  const int64_t rows = c.is_moe() ? N * k : N;  // FFN rows: every (token, choice) pair
  params_.assign(layout_.arena_size, T(0));
  grads_.assign(layout_.arena_size, T(0));

  acts_.resize(c.n_layer);
  for (LayerActivations& a : acts_) {
    a.x.resize(N * d);
    a.xn_attn.resize(N * d);
    a.rstd_attn.resize(N);
    a.qkv.resize(N * c.qkv_width());
    a.att.resize(N * d);
    a.lse.resize(N * c.n_head);
    a.h.resize(N * d);
    a.xn_ffn.resize(N * d);
    a.rstd_ffn.resize(N);
    a.h13.resize(rows * 2 * F);
    a.act.resize(rows * F);
  }
  if (c.is_moe()) {
    moe_.resize(c.n_layer);
    for (MoeActivations& m : moe_) {
      m.z.resize(N * R);
      m.s.resize(N * R);
      m.znorm.resize(N);
      m.ids.resize(N * k);
      m.gates.resize(N * k);
      m.counts.resize(R);
      m.offsets.resize(R + 1);
      m.row_slot.resize(N * k);
      m.slot_row.resize(N * k);
      m.row_gate.resize(N * k);
      m.xg.resize(N * k * d);
      m.aux_grad.resize(R);
      expert_weight_.resize(R);
      if (c.router == "norm") m.c = normrouter_constant(static_cast<int>(R), static_cast<int>(k));
    }
    drows_.resize(rows * d);
    ytmp_.resize(rows * d);
    ds_.resize(N * R);
    dz_.resize(N * R);
    dgate_.resize(2 * rows);
  }
  if (c.ffn == "unipool") {
    const int groups = c.n_pools();
    pool_state.ghat.assign(groups, std::vector<double>(c.pool_size, 0.0));
    pool_state.running.assign(groups, std::vector<double>(c.pool_size, 0.0));
  }
  rope_cos_.resize(static_cast<size_t>(T_) * c.head_dim() / 2);
  rope_sin_.resize(rope_cos_.size());
  rope_tables(rope_cos_.data(), rope_sin_.data(), T_, c.head_dim(), c.rope_base);

  x_final_.resize(N * d);
  xn_final_.resize(N * d);
  rstd_final_.resize(N);
  dxn_final_.resize(N * d);
  tokens_.resize(N);
  targets_.resize(N);
  losses_.resize(N);
  const int64_t Vp = c.padded_vocab();
  head_chunk_ = static_cast<int>(
      std::min<int64_t>(N, std::clamp<int64_t>((int64_t(1) << 24) / Vp, 64, 1024)));
  logits_.resize(static_cast<size_t>(head_chunk_) * Vp);

  dres_.resize(N * d);
  dxn_.resize(N * d);
  datt_.resize(N * d);
  dqkv_.resize(N * c.qkv_width());
  dh13_.resize(rows * 2 * F);
  dact_.resize(rows * F);
}

template <typename T>
void Model<T>::zero_grads() {
  std::fill(grads_.begin(), grads_.end(), T(0));
}

template <typename T>
size_t Model<T>::activation_bytes() const {
  size_t n = 0;
  auto add = [&n](const auto& v) { n += v.size() * sizeof(v[0]); };
  for (const LayerActivations& a : acts_) {
    for (const auto* v : {&a.x, &a.xn_attn, &a.rstd_attn, &a.qkv, &a.att, &a.lse, &a.h, &a.xn_ffn,
                          &a.rstd_ffn, &a.h13, &a.act})
      add(*v);
  }
  for (const MoeActivations& m : moe_) {
    for (const auto* v : {&m.z, &m.s, &m.znorm, &m.gates, &m.row_gate, &m.xg, &m.aux_grad}) add(*v);
    for (const auto* v : {&m.ids, &m.counts, &m.offsets, &m.row_slot, &m.slot_row}) add(*v);
  }
  for (const auto* v :
       {&x_final_, &xn_final_, &rstd_final_, &dxn_final_, &losses_, &logits_, &dres_, &dxn_, &datt_,
        &dqkv_, &dh13_, &dact_, &drows_, &dgate_, &ds_, &dz_, &ytmp_})
    add(*v);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Forward

template <typename T>
Losses Model<T>::forward(const int32_t* inputs, const int32_t* targets, bool train,
                         double loss_scale) {
  const ModelConfig& c = layout_.config;
  for (int i = 0; i < N_; ++i) {
    check(
        inputs[i] >= 0 && inputs[i] < c.vocab_size && targets[i] >= 0 && targets[i] < c.vocab_size,
        "model: token id " + std::to_string(std::max(inputs[i], targets[i])) + " at position " +
            std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(c.vocab_size) +
            ")");
  }
  std::copy(inputs, inputs + N_, tokens_.begin());
  std::copy(targets, targets + N_, targets_.begin());
  loss_scale_ = loss_scale;

  Losses losses;
  embedding_forward(acts_[0].x.data(), tokens_.data(), param(layout_.tok_embeddings), N_,
                    c.d_model);
  for (int l = 0; l < c.n_layer; ++l) {
    attention_block_forward(l);
    if (c.is_moe()) {
      moe_forward(l, train, loss_scale, losses);
    } else {
      dense_ffn_forward(l);
    }
  }
  if (train && c.ffn == "unipool" && advance_pool_state) pool_state.valid = true;
  losses.lm = lm_head(train, loss_scale);
  have_forward_ = train;
  return losses;
}

// The residual stream after layer l: the next layer's input, or the final norm's input.
#define LAYER_OUT(l) ((l) + 1 < c.n_layer ? acts_[(l) + 1].x.data() : x_final_.data())

// h = x + Wo · Attn(RoPE(Wqkv · RMSNorm(x))), then the FFN's norm RMSNorm(h).
template <typename T>
void Model<T>::attention_block_forward(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  const int d = c.d_model;
  rmsnorm_forward(a.xn_attn.data(), a.rstd_attn.data(), a.x.data(), param(v.attn_norm), N_, d,
                  c.norm_eps);
  matmul_forward(a.qkv.data(), a.xn_attn.data(), param(v.wqkv), N_, d, c.qkv_width());
  rope_forward(a.qkv.data(), rope_cos_.data(), rope_sin_.data(), B_, T_, c.n_head, c.n_kv_head,
               c.head_dim());
  attention_forward(a.att.data(), a.lse.data(), a.qkv.data(), B_, T_, c.n_head, c.n_kv_head,
                    c.head_dim());
  std::copy(a.x.begin(), a.x.end(), a.h.begin());
  matmul_forward(a.h.data(), a.att.data(), param(v.wo), N_, d, d, /*accumulate=*/true);
  rmsnorm_forward(a.xn_ffn.data(), a.rstd_ffn.data(), a.h.data(), param(v.ffn_norm), N_, d,
                  c.norm_eps);
}

// out = h + W2 · (silu(g) ⊙ v), [g; v] = W13 · xn
template <typename T>
void Model<T>::dense_ffn_forward(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  const int d = c.d_model, F = c.ffn_hidden;
  matmul_forward(a.h13.data(), a.xn_ffn.data(), param(v.w13), N_, d, 2 * F);
  swiglu_forward(a.act.data(), a.h13.data(), N_, F);
  T* out = LAYER_OUT(l);
  std::copy(a.h.begin(), a.h.end(), out);
  matmul_forward(out, a.act.data(), param(v.w2), N_, F, d, /*accumulate=*/true);
}

// One expert on its contiguous rows [row0, row0 + rows) of the expert-major buffers:
// [g; v] = W13_e x,  a = silu(g) ⊙ v,  y = W2_e (gate ⊙ a)   (the gate multiplies before W2)
template <typename T>
void Model<T>::expert_ffn_forward(const T* w13, const T* w2, const T* x, const T* gate, int row0,
                                  int rows, LayerActivations& a, T* y) {
  const ModelConfig& c = layout_.config;
  const int d = c.d_model, F = c.ffn_hidden;
  T* h13 = a.h13.data() + static_cast<int64_t>(row0) * 2 * F;
  T* act = a.act.data() + static_cast<int64_t>(row0) * F;
  T* gated = dact_.data() + static_cast<int64_t>(row0) * F;  // scratch in the forward
  matmul_forward(h13, x, w13, rows, d, 2 * F);
  swiglu_forward(act, h13, rows, F);
  scale_rows(gated, act, gate, rows, F);
  matmul_forward(y, gated, w2, rows, F, d);
}

// The MoE block: router → top-k → dispatch (stable, expert-major) → experts → combine, and the
// balancing terms whose gradient on the scores is the same for every token (kept in aux_grad).
template <typename T>
void Model<T>::moe_forward(int l, bool train, double loss_scale, Losses& losses) {
  const ModelConfig& c = layout_.config;
  const LossConfig& loss_cfg = loss_config_;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  MoeActivations& m = moe_[l];
  const int d = c.d_model, F = c.ffn_hidden, k = c.top_k, R = c.router_width();

  // Router: z = W_r xn (fp32 on every backend), then scores s.
  matmul_forward(m.z.data(), a.xn_ffn.data(), param(v.router), N_, d, R);
  if (c.router == "norm") {
    m.sigma = static_cast<double>(param(v.router_scale)[0]);
    norm_router_forward(m.s.data(), m.znorm.data(), m.z.data(), static_cast<T>(m.sigma * m.c), N_,
                        R);
  } else {
    softmax_forward(m.s.data(), m.z.data(), N_, R);
  }
  topk_forward(m.ids.data(), m.gates.data(), m.s.data(), N_, R, k, c.router_renorm);
  expert_counts(m.counts.data(), m.ids.data(), N_, k, R);

  // Dispatch: rows ordered by (expert, token); gather the tokens, run each expert on its rows.
  dispatch_plan(m.offsets.data(), m.row_slot.data(), m.slot_row.data(), m.ids.data(), N_, k, R);
  slot_to_row_values(m.row_gate.data(), m.gates.data(), m.row_slot.data(), N_ * k);
  gather_rows(m.xg.data(), a.xn_ffn.data(), m.row_slot.data(), N_, k, d);
  const int64_t w13_size = 2LL * F * d, w2_size = static_cast<int64_t>(d) * F;
  for (int e = 0; e < R; ++e) {
    const int row0 = m.offsets[e], rows = m.offsets[e + 1] - m.offsets[e];
    if (rows == 0) continue;
    expert_ffn_forward(param(v.w13) + e * w13_size, param(v.w2) + e * w2_size,
                       m.xg.data() + static_cast<int64_t>(row0) * d, m.row_gate.data() + row0, row0,
                       rows, a, ytmp_.data() + static_cast<int64_t>(row0) * d);
  }
  // Combine: out[t] = h[t] + Σ_j y[slot (t, j)], summed in slot order.
  T* out = LAYER_OUT(l);
  std::copy(a.h.begin(), a.h.end(), out);
  sum_slot_rows(out, ytmp_.data(), m.slot_row.data(), N_, k, d, /*accumulate=*/true);

  if (!train) return;
  // Balancing terms. Each is coeff · Σ_i w_i Σ_t s[t,i]; its gradient on s[t,i] is coeff · w_i.
  std::fill(m.aux_grad.begin(), m.aux_grad.end(), T(0));
  const double NN = static_cast<double>(N_) * N_;
  T* weight = expert_weight_.data();  // per-expert weights of the current balancing term
  if (loss_cfg.aux_coeff > 0) {  // per-layer Switch loss, weights = this layer's counts
    const double coeff = loss_cfg.aux_coeff * R / (k * NN);
    for (int i = 0; i < R; ++i) weight[i] = static_cast<T>(m.counts[i]);
    losses.aux += balance_loss_forward(m.s.data(), weight, static_cast<T>(coeff), N_, R);
    for (int i = 0; i < R; ++i) m.aux_grad[i] += static_cast<T>(loss_scale * coeff * m.counts[i]);
  }
  if (loss_cfg.pool_aux_coeff > 0) {  // pool loss with the previous micro-batch's ĝ
    const int g = v.pool, Lg = c.pool_layers();
    const double coeff = loss_cfg.pool_aux_coeff * R / (k * NN * Lg);
    if (pool_state.valid) {
      for (int i = 0; i < R; ++i) weight[i] = static_cast<T>(pool_state.ghat[g][i]);
      losses.aux += balance_loss_forward(m.s.data(), weight, static_cast<T>(coeff), N_, R);
      for (int i = 0; i < R; ++i)
        m.aux_grad[i] += static_cast<T>(loss_scale * coeff * pool_state.ghat[g][i]);
    }
  }
  if (c.ffn == "unipool" && advance_pool_state) {  // ĝ ← layer-mean of this micro-batch's counts
    const int g = v.pool, Lg = c.pool_layers();
    for (int i = 0; i < R; ++i) pool_state.running[g][i] += m.counts[i];
    if (l == (g + 1) * Lg - 1) {
      for (int i = 0; i < R; ++i) {
        pool_state.ghat[g][i] = pool_state.running[g][i] / Lg;
        pool_state.running[g][i] = 0;
      }
    }
  }
  if (loss_cfg.z_loss_coeff > 0) {
    losses.aux += z_loss_forward(m.z.data(), static_cast<T>(loss_cfg.z_loss_coeff), N_, R);
  }
}

// Final RMSNorm, then logits = xn · Oᵀ over all Vp columns and the token-mean cross-entropy, in
// chunks of rows. In training the chunk's logits become dlogits in place and are consumed at once:
// dxn = dlogits · O and dO += dlogitsᵀ · xn, so [N, Vp] logits never exist.
template <typename T>
double Model<T>::lm_head(bool train, double loss_scale) {
  const ModelConfig& c = layout_.config;
  const int d = c.d_model, Vp = c.padded_vocab();
  rmsnorm_forward(xn_final_.data(), rstd_final_.data(), x_final_.data(), param(layout_.final_norm),
                  N_, d, c.norm_eps);
  const T dloss = train ? static_cast<T>(loss_scale / N_) : T(0);
  const T* O = param(layout_.output);
  for (int r0 = 0; r0 < N_; r0 += head_chunk_) {
    const int rows = std::min(head_chunk_, N_ - r0);
    const T* xn = xn_final_.data() + static_cast<int64_t>(r0) * d;
    matmul_forward(logits_.data(), xn, O, rows, d, Vp);
    crossentropy_forward_backward(losses_.data() + r0, logits_.data(), targets_.data() + r0, rows,
                                  Vp, dloss);
    if (train) {
      matmul_backward_input(dxn_final_.data() + static_cast<int64_t>(r0) * d, logits_.data(), O,
                            rows, d, Vp);
      matmul_backward_weight(grad(layout_.output), logits_.data(), xn, rows, d, Vp);
    }
  }
  double sum = 0;
  for (int i = 0; i < N_; ++i) sum += static_cast<double>(losses_[i]);
  return sum / N_;
}

// ---------------------------------------------------------------------------------------------
// Backward: dres carries dL/d(residual stream) from the top of the network down to the embedding.

template <typename T>
void Model<T>::backward() {
  check(have_forward_, "model: backward() needs a training forward() first");
  have_forward_ = false;
  const ModelConfig& c = layout_.config;
  const int d = c.d_model;
  std::fill(dres_.begin(), dres_.end(), T(0));
  rmsnorm_backward(dres_.data(), grad(layout_.final_norm), dxn_final_.data(), x_final_.data(),
                   param(layout_.final_norm), rstd_final_.data(), N_, d);
  for (int l = c.n_layer - 1; l >= 0; --l) {
    const LayerView& v = layout_.layers[l];
    LayerActivations& a = acts_[l];
    if (c.is_moe()) {
      moe_backward(l);
    } else {
      dense_ffn_backward(l);
    }
    // dxn_ = dL/d RMSNorm(h): through the norm, added to the residual path → dres = dL/dh
    rmsnorm_backward(dres_.data(), grad(v.ffn_norm), dxn_.data(), a.h.data(), param(v.ffn_norm),
                     a.rstd_ffn.data(), N_, d);
    attention_block_backward(l);
  }
  embedding_backward(grad(layout_.tok_embeddings), dres_.data(), tokens_.data(), N_, d);
}

template <typename T>
void Model<T>::dense_ffn_backward(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  const int d = c.d_model, F = c.ffn_hidden;
  matmul_backward_input(dact_.data(), dres_.data(), param(v.w2), N_, F, d);
  matmul_backward_weight(grad(v.w2), dres_.data(), a.act.data(), N_, F, d);
  swiglu_backward(dh13_.data(), dact_.data(), a.h13.data(), N_, F);
  matmul_backward_weight(grad(v.w13), dh13_.data(), a.xn_ffn.data(), N_, d, 2 * F);
  matmul_backward_input(dxn_.data(), dh13_.data(), param(v.w13), N_, d, 2 * F);
}

// Reverse of moe_forward. Per expert e on its rows (dy = dL/dy, p = gate, a = silu(g) ⊙ v):
//   dW2_e += dyᵀ (p·a);  dA = dy W2_e;  dp = <dA, a>;  da = p·dA;  [dg; dv] = swiglu'(da)
//   dW13_e += [dg; dv]ᵀ x;  dx = [dg; dv] W13_e, summed back over each token's k slots.
// Then the router: ds = (aux gradient) + top-k'(dp); dz = router'(ds); dW_r += dzᵀ xn; dxn += dz
// W_r.
template <typename T>
void Model<T>::moe_backward(int l) {
  const ModelConfig& c = layout_.config;
  const LossConfig& loss_cfg = loss_config_;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  MoeActivations& m = moe_[l];
  const int d = c.d_model, F = c.ffn_hidden, k = c.top_k, R = c.router_width();
  const int rows_total = N_ * k;
  const int64_t w13_size = 2LL * F * d, w2_size = static_cast<int64_t>(d) * F;

  gather_rows(drows_.data(), dres_.data(), m.row_slot.data(), N_, k, d);  // dy for every row
  for (int e = 0; e < R; ++e) {
    const int row0 = m.offsets[e], rows = m.offsets[e + 1] - m.offsets[e];
    if (rows == 0) continue;
    T* gated = dh13_.data() + static_cast<int64_t>(row0) * F;  // scratch until dh13 is formed
    const T* dy = drows_.data() + static_cast<int64_t>(row0) * d;
    scale_rows(gated, a.act.data() + static_cast<int64_t>(row0) * F, m.row_gate.data() + row0, rows,
               F);
    matmul_backward_weight(grad(v.w2) + e * w2_size, dy, gated, rows, F, d);
    matmul_backward_input(dact_.data() + static_cast<int64_t>(row0) * F, dy,
                          param(v.w2) + e * w2_size, rows, F, d);
  }
  T* dgate_row = dgate_.data();
  T* dgate_slot = dgate_.data() + rows_total;
  row_dot(dgate_row, dact_.data(), a.act.data(), rows_total, F);
  scale_rows(dact_.data(), dact_.data(), m.row_gate.data(), rows_total, F);
  swiglu_backward(dh13_.data(), dact_.data(), a.h13.data(), rows_total, F);
  for (int e = 0; e < R; ++e) {
    const int row0 = m.offsets[e], rows = m.offsets[e + 1] - m.offsets[e];
    if (rows == 0) continue;
    const T* dh13 = dh13_.data() + static_cast<int64_t>(row0) * 2 * F;
    matmul_backward_weight(grad(v.w13) + e * w13_size, dh13,
                           m.xg.data() + static_cast<int64_t>(row0) * d, rows, d, 2 * F);
    matmul_backward_input(drows_.data() + static_cast<int64_t>(row0) * d, dh13,
                          param(v.w13) + e * w13_size, rows, d, 2 * F);
  }
  sum_slot_rows(dxn_.data(), drows_.data(), m.slot_row.data(), N_, k, d, /*accumulate=*/false);

  // Router.
  row_to_slot_values(dgate_slot, dgate_row, m.row_slot.data(), rows_total);
  std::fill(ds_.begin(), ds_.end(), T(0));
  balance_loss_backward(ds_.data(), m.aux_grad.data(), T(1), N_, R);
  topk_backward(ds_.data(), dgate_slot, m.ids.data(), m.gates.data(), m.s.data(), N_, R, k,
                c.router_renorm);
  if (c.router == "norm") {
    norm_router_backward(dz_.data(), grad(v.router_scale), ds_.data(), m.z.data(), m.znorm.data(),
                         static_cast<T>(m.sigma), static_cast<T>(m.c), N_, R);
  } else {
    softmax_backward(dz_.data(), ds_.data(), m.s.data(), N_, R);
  }
  if (loss_cfg.z_loss_coeff > 0) {
    z_loss_backward(dz_.data(), m.z.data(), static_cast<T>(loss_cfg.z_loss_coeff * loss_scale_), N_,
                    R);
  }
  matmul_backward_weight(grad(v.router), dz_.data(), a.xn_ffn.data(), N_, d, R);
  matmul_backward_input(dxn_.data(), dz_.data(), param(v.router), N_, d, R, /*accumulate=*/true);
}

// dres = dL/dh on entry, dL/dx (the layer's input) on exit.
template <typename T>
void Model<T>::attention_block_backward(int l) {
  const ModelConfig& c = layout_.config;
  const LayerView& v = layout_.layers[l];
  LayerActivations& a = acts_[l];
  const int d = c.d_model;
  matmul_backward_input(datt_.data(), dres_.data(), param(v.wo), N_, d, d);
  matmul_backward_weight(grad(v.wo), dres_.data(), a.att.data(), N_, d, d);
  attention_backward(dqkv_.data(), datt_.data(), a.qkv.data(), a.att.data(), a.lse.data(), B_, T_,
                     c.n_head, c.n_kv_head, c.head_dim());
  rope_backward(dqkv_.data(), rope_cos_.data(), rope_sin_.data(), B_, T_, c.n_head, c.n_kv_head,
                c.head_dim());
  matmul_backward_weight(grad(v.wqkv), dqkv_.data(), a.xn_attn.data(), N_, d, c.qkv_width());
  matmul_backward_input(dxn_.data(), dqkv_.data(), param(v.wqkv), N_, d, c.qkv_width());
  rmsnorm_backward(dres_.data(), grad(v.attn_norm), dxn_.data(), a.x.data(), param(v.attn_norm),
                   a.rstd_attn.data(), N_, d);
}

#undef LAYER_OUT

template <typename T>
double Model<T>::routing_margin() const {
  const ModelConfig& c = layout_.config;
  double margin = INFINITY;
  if (!c.is_moe()) return margin;
  const int R = c.router_width(), k = c.top_k;
  std::vector<double> row(R);
  for (const MoeActivations& m : moe_) {
    for (int t = 0; t < N_; ++t) {
      for (int i = 0; i < R; ++i)
        row[i] = static_cast<double>(m.s[static_cast<int64_t>(t) * R + i]);
      if (k < R) {
        std::sort(row.begin(), row.end(), std::greater<double>());
        // Two NormRouter scores at exactly 0 are both below the ReLU kink: the choice between
        // them (lowest index) cannot flip under a small step, the kink margin below covers it.
        const bool both_clamped = c.router == "norm" && row[k - 1] == 0.0;
        if (!both_clamped) margin = std::min(margin, row[k - 1] - row[k]);
      }
      if (c.router == "norm") {
        const double n = static_cast<double>(m.znorm[t]);
        for (int i = 0; i < R; ++i)
          margin = std::min(
              margin, std::fabs(static_cast<double>(m.z[static_cast<int64_t>(t) * R + i])) / n);
      }
    }
  }
  return margin;
}

template class Model<float>;
template class Model<double>;

}  // namespace unipool
