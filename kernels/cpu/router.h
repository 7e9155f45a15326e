// CPU router ops (docs/model.md §NormRouter, §Top-k, dispatch and combine, §Balancing losses;
// reference unipool-spec.md §5–§6): softmax router, NormRouter, top-k, expert counts, the Switch /
// pool balancing term, the z-loss, the balancing bookkeeping (counts_to_float, axpy,
// pool_counts_update) and the UniPool-lock column ops (scale_columns,
// select_columns_forward/backward, map_ids). Header-only templates on the float type T, forward and
// backward side by side. The signatures equal kernels/cuda/ops.h's (scalar inputs and outputs such
// as σ and the losses are one-element arrays, so they can live on the device there).
//
// Shapes: z router logits [N,E]; s scores [N,E]; ids, gates [N,k] (row t = token t's k choices in
// slot order); E = router width. Sums run in double and in a fixed order (see layers.h), so every
// result is bitwise independent of the number of OpenMP threads.
#pragma once
// Part of the CPU op list: include kernels/cpu/ops.h (which declares every op), not this file.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "kernels/cpu/layers.h"

namespace unipool::cpu {

// Largest k topk_forward supports (per-row selection buffers live on the stack).
constexpr int kMaxTopK = 64;

// ---------------------------------------------------------------------------------------------------
// Softmax router.  z, s, ds, dz [N,E].
//   forward:  s[t,:] = softmax(z[t,:])  (max-subtracted; s may alias z)
//   backward: dz[t,:] = s[t,:] ⊙ (ds[t,:] − <s[t,:], ds[t,:]>)   (overwritten)
template <typename T>
void softmax_forward(T* s, const T* z, int N, int E) {
#pragma omp parallel for schedule(static) if (int64_t(N) * E >= detail::kMinParallelWork / 8)
  for (int t = 0; t < N; ++t) {
    const T* zr = z + int64_t(t) * E;
    T* sr = s + int64_t(t) * E;
    const T m = detail::max_value(zr, E);
    double sum = 0;
    for (int i = 0; i < E; ++i) {
      const T e = std::exp(zr[i] - m);
      sum += e;
      sr[i] = e;
    }
    const T inv = T(1.0 / sum);
    for (int i = 0; i < E; ++i) sr[i] *= inv;
  }
}

template <typename T>
void softmax_backward(T* dz, const T* ds, const T* s, int N, int E) {
#pragma omp parallel for schedule(static) if (int64_t(N) * E >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    const T* sr = s + int64_t(t) * E;
    const T* dsr = ds + int64_t(t) * E;
    T* dzr = dz + int64_t(t) * E;
    const T sd = T(detail::dot(sr, dsr, E));
    for (int i = 0; i < E; ++i) dzr[i] = sr[i] * (dsr[i] - sd);
  }
}

// ---------------------------------------------------------------------------------------------------
// Sigmoid router (aux-free routing).  z, s, ds, dz [N,E].
//   forward:  s[t,i] = 1 / (1 + exp(−z[t,i]))   (s may alias z)
//   backward: dz[t,i] = ds[t,i] · s[t,i] · (1 − s[t,i])   (overwritten)
template <typename T>
void sigmoid_forward(T* s, const T* z, int N, int E) {
  const int64_t n = int64_t(N) * E;
#pragma omp parallel for schedule(static) if (n >= detail::kMinParallelWork / 8)
  for (int64_t i = 0; i < n; ++i) s[i] = T(1) / (T(1) + std::exp(-z[i]));
}

template <typename T>
void sigmoid_backward(T* dz, const T* ds, const T* s, int N, int E) {
  const int64_t n = int64_t(N) * E;
#pragma omp parallel for schedule(static) if (n >= detail::kMinParallelWork / 8)
  for (int64_t i = 0; i < n; ++i) dz[i] = ds[i] * s[i] * (T(1) - s[i]);
}

// ---------------------------------------------------------------------------------------------------
// NormRouter.  z, s, ds, dz [N,E]; norm [N]; sigma points to σ, the router's one learnable scale
// (a tensor of one element); c the constant normrouter_constant(E, k); sigma_c = T(σ·c) (the
// product in double, rounded once); ε = 1e-8.
//   forward:  n = ||z[t,:]||₂ (stored in norm[t]);  u = z/(n+ε);  r = relu(u);  s = sigma_c·r
//   backward: dsigma[0] += T(c·Σ_t Σ_i ds[t,i]·r[t,i])     (rows in fixed chunks:
//             thread-independent)
//             G_u = σc·ds ⊙ 1[u>0];  dz = G_u/(n+ε) − z·<z, G_u>/(n·(n+ε)²)   (dz overwritten;
//             dz[t,:] = 0 where n == 0). Note <z, G_u> = σc·Σ_{z_i>0} z_i·ds_i.
template <typename T>
void norm_router_forward(T* s, T* norm, const T* z, const T* sigma, double c, int N, int E) {
  const T sigma_c = T(double(*sigma) * c);
#pragma omp parallel for schedule(static) if (int64_t(N) * E >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    const T* zr = z + int64_t(t) * E;
    T* sr = s + int64_t(t) * E;
    const T n = T(std::sqrt(detail::dot(zr, zr, E)));
    norm[t] = n;
    const T D = n + T(1e-8);
    for (int i = 0; i < E; ++i) {
      const T u = zr[i] / D;
      sr[i] = u > T(0) ? sigma_c * u : T(0);
    }
  }
}

template <typename T>
void norm_router_backward(T* dz, T* dsigma, const T* ds, const T* z, const T* norm, const T* sigma,
                          double c, int N, int E) {
  const double sc = double(*sigma) * c;
  const double total = detail::ordered_row_sum(N, E, [&](int t) -> double {
    const T* zr = z + int64_t(t) * E;
    const T* dsr = ds + int64_t(t) * E;
    T* dzr = dz + int64_t(t) * E;
    const T n = norm[t];
    if (!(n > T(0))) {
      for (int i = 0; i < E; ++i) dzr[i] = T(0);
      return 0.0;
    }
    const T D = n + T(1e-8);
    // P = Σ_{z_i>0} z_i·ds_i, so Σ_i ds_i·r_i = P/D and <z, G_u> = σc·P.
    const double P = detail::lane_sum(E, [&](int i) {
      const T pos = T(zr[i] > T(0));  // branch-free: random signs would mispredict
      return double(zr[i] * pos) * double(dsr[i]);
    });
    const double Dd = double(D);
    const T a = T(sc / Dd);                         // G_u/D = a·ds on the positive part
    const T b = T(sc * P / (double(n) * Dd * Dd));  // <z,G_u>/(n·D²)
    for (int i = 0; i < E; ++i) {
      const T ad = a * dsr[i];
      const T gu = zr[i] > T(0) ? ad : T(0);
      dzr[i] = gu - zr[i] * b;
    }
    return P / Dd;
  });
  *dsigma += T(c * total);
}

// ---------------------------------------------------------------------------------------------------
// Top-k.  s [N,E]; bias [E] or null; ids, gates, dgates [N,k]; 1 <= k <= min(E, kMaxTopK).
//   forward:  ids[t,j] = index of the j-th largest key s[t,:] + bias (the key is s itself when bias
//             is null; ties to the LOWER index; with fewer than k positive NormRouter scores the
//             zero-score experts of lowest index fill the rest);
//             gates[t,j] = s[t,ids[t,j]] (the unbiased score), or with renorm
//             s[t,ids[t,j]] / Σ_{j'} s[t,ids[t,j']] (the sum in slot order; a zero sum gives zero
//             gates and no gradient).
//   backward: ds[t,ids[t,m]] += dgates[t,m]                                  (no renorm)
//             ds[t,ids[t,m]] += (dgates[t,m] − Σ_j gates[t,j]·dgates[t,j]) / Σ_j s[t,ids[t,j]]
//             (renorm) (ds accumulates; selection itself has no gradient)
template <typename T>
void topk_forward(int32_t* ids, T* gates, const T* s, const NonDeduced<T>* bias, int N, int E,
                  int k, bool renorm) {
  if (k < 1 || k > E || k > kMaxTopK) {
    throw unipool::Error("topk_forward: need 1 <= k <= min(E, " + std::to_string(kMaxTopK) +
                         "), got k = " + std::to_string(k) + ", E = " + std::to_string(E));
  }
#pragma omp parallel for schedule(static) if (int64_t(N) * E >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    const T* sr = s + int64_t(t) * E;
    T val[kMaxTopK];
    int32_t idx[kMaxTopK];
    // Sorted insertion: val descending, equal values keep index order (an entry only moves past
    // strictly smaller ones), so ties go to the lower index.
    int m = 0;
    for (int i = 0; i < E; ++i) {
      const T v = bias != nullptr ? sr[i] + bias[i] : sr[i];
      int p;
      if (m < k) {
        p = m++;
      } else if (v > val[k - 1]) {
        p = k - 1;
      } else {
        continue;
      }
      while (p > 0 && val[p - 1] < v) {
        val[p] = val[p - 1];
        idx[p] = idx[p - 1];
        --p;
      }
      val[p] = v;
      idx[p] = i;
    }
    int32_t* ir = ids + int64_t(t) * k;
    T* gr = gates + int64_t(t) * k;
    for (int j = 0; j < k; ++j) ir[j] = idx[j];
    if (renorm) {
      double sum = 0;
      for (int j = 0; j < k; ++j) sum += sr[idx[j]];
      const T inv = sum != 0 ? T(1.0 / sum) : T(0);
      for (int j = 0; j < k; ++j) gr[j] = sr[idx[j]] * inv;
    } else {
      for (int j = 0; j < k; ++j) gr[j] = sr[idx[j]];
    }
  }
}

template <typename T>
void topk_backward(T* ds, const T* dgates, const int32_t* ids, const T* gates, const T* s, int N,
                   int E, int k, bool renorm) {
#pragma omp parallel for schedule(static) if (int64_t(N) * k * 64 >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    const int32_t* ir = ids + int64_t(t) * k;
    const T* dg = dgates + int64_t(t) * k;
    T* dsr = ds + int64_t(t) * E;
    if (!renorm) {
      for (int j = 0; j < k; ++j) dsr[ir[j]] += dg[j];
      continue;
    }
    const T* sr = s + int64_t(t) * E;
    const T* gr = gates + int64_t(t) * k;
    double sum = 0, gdg = 0;
    for (int j = 0; j < k; ++j) {
      sum += sr[ir[j]];
      gdg += double(gr[j]) * double(dg[j]);
    }
    if (sum == 0) continue;
    const double inv = 1.0 / sum;
    for (int j = 0; j < k; ++j) dsr[ir[j]] += T((double(dg[j]) - gdg) * inv);
  }
}

// expert_counts: counts[e] = #{(t, j) : ids[t,j] == e}   counts [E] (overwritten); ids in [0, E)
// checked.
inline void expert_counts(int32_t* counts, const int32_t* ids, int N, int k, int E) {
  for (int e = 0; e < E; ++e) counts[e] = 0;
  const int64_t n = int64_t(N) * k;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t e = ids[i];
    if (e < 0 || e >= E) {
      throw unipool::Error("expert_counts: expert id " + std::to_string(e) + " at slot " +
                           std::to_string(i) + " is outside [0, " + std::to_string(E) + ")");
    }
    ++counts[e];
  }
}

// ---------------------------------------------------------------------------------------------------
// Routing statistics (routing health: docs/run-directory.md §metrics.jsonl).  ids, gates [N,k];
// stats [1 + 2E] int32, accumulated (+=):
//   stats[0]         tokens whose k gates are all 0 (the MoE layer adds nothing to them)
//   stats[1 + e]     slots routed to expert e
//   stats[1 + E + e] slots routed to e with a nonzero gate
// An id outside [0, E) is an Error (as expert_counts).
template <typename T>
void routing_stats(int32_t* stats, const int32_t* ids, const T* gates, int N, int k, int E) {
  for (int t = 0; t < N; ++t) {
    bool all_zero = true;
    for (int j = 0; j < k; ++j) {
      const int64_t slot = int64_t(t) * k + j;
      const int32_t e = ids[slot];
      if (e < 0 || e >= E) {
        throw unipool::Error("routing_stats: expert id " + std::to_string(e) + " at slot " +
                             std::to_string(slot) + " is outside [0, " + std::to_string(E) + ")");
      }
      ++stats[1 + e];
      if (gates[slot] != T(0)) {
        ++stats[1 + E + e];
        all_zero = false;
      }
    }
    if (all_zero) ++stats[0];
  }
}

// ---------------------------------------------------------------------------------------------------
// Balancing term (docs/model.md §Balancing losses), s [N,E], weight [E], loss [1]:
//   forward:  loss[0] = T(coeff · Σ_t Σ_i weight_i·s[t,i])   (the sum in double, in a fixed order;
//             rounded once)
//   backward: ds[t,i] += T(coeff·weight_i)                    (the product in double, rounded once)
// The caller folds the scale into coeff and weight: per-layer Switch loss weight = c_i (counts, as
// T), coeff = α·E_r/(k·T²); pool loss weight = ĝ_i, coeff = α_pool·M/(k·T²·L_g).
template <typename T>
void balance_loss_forward(T* loss, const T* s, const T* weight, double coeff, int N, int E) {
  const double total = detail::ordered_row_sum(N, E, [&](int t) {
    const T* sr = s + int64_t(t) * E;
    return detail::dot(weight, sr, E);
  });
  *loss = T(coeff * total);
}

template <typename T>
void balance_loss_backward(T* ds, const T* weight, double coeff, int N, int E) {
#pragma omp parallel for schedule(static) if (int64_t(N) * E >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    T* dsr = ds + int64_t(t) * E;
    for (int i = 0; i < E; ++i) dsr[i] += T(coeff * double(weight[i]));
  }
}

// ---------------------------------------------------------------------------------------------------
// z-loss on raw router logits z [N,E], loss [1]:
//   forward:  loss[0] = T(coeff · (1/N)·Σ_t lse_t²),  lse_t = logsumexp_i z[t,i]   (0 when N = 0;
//             the sum in double, in a fixed order; rounded once)
//   backward: dz[t,i] += f_t·exp(z[t,i] − m_t),  f_t = T(coeff·2·lse_t / (N·Σ_i exp(z[t,i] − m_t)))
//             (= coeff · 2·lse_t·softmax(z[t,:])_i / N; m_t the row max)
namespace detail {
// logsumexp of one row; also returns the row max m and Σ_i exp(z_i − m).
template <typename T>
inline double row_logsumexp(const T* z, int E, T* m_out, double* sum_out) {
  const T m = max_value(z, E);
  double sum = 0;
  for (int i = 0; i < E; ++i) sum += std::exp(z[i] - m);
  *m_out = m;
  *sum_out = sum;
  return double(m) + std::log(sum);
}
}  // namespace detail

// ---------------------------------------------------------------------------------------------------
// Target-cardinality entropy term (UniPool-lock; docs/backward.md §Entropy term).  s [N,E] scores;
// support [E] (1 visible, 0 hidden) or null (all visible); loss [1], weight [E]; ε = 1e-8.
//   p̄_i = (1/N) Σ_t s[t,i]·support_i;  S = Σ_i p̄_i;  q_i = p̄_i/(S+ε);  H = −Σ_i q_i·log(q_i+ε)
//   loss[0] = coeff·(H − log_target)²
//   weight[i] = ∂loss/∂s[t,i] = 2·coeff·(H − log_target)·(h_i − Σ_j q_j·h_j)/(N·(S+ε))·support_i
//               with h_i = −log(q_i+ε) − q_i/(q_i+ε): the same for every token t (the backward adds
//               weight to every row of ds, as balance_loss_backward does).
// Column sums in double in row order, the rest in double; N = 0 gives loss 0 and weight 0.
template <typename T>
void entropy_loss_forward(T* loss, T* weight, const T* s, const NonDeduced<T>* support,
                          double coeff, double log_target, int N, int E) {
  std::vector<double> q(size_t(E), 0.0), h(size_t(E), 0.0);
  if (N <= 0) {
    *loss = T(0);
    for (int i = 0; i < E; ++i) weight[i] = T(0);
    return;
  }
  for (int t = 0; t < N; ++t)
    for (int i = 0; i < E; ++i) q[size_t(i)] += double(s[int64_t(t) * E + i]);
  double S = 0;
  for (int i = 0; i < E; ++i) {
    q[size_t(i)] = support == nullptr || support[i] != T(0) ? q[size_t(i)] / N : 0.0;
    S += q[size_t(i)];
  }
  constexpr double eps = 1e-8;
  double H = 0, qh = 0;
  for (int i = 0; i < E; ++i) {
    double& qi = q[size_t(i)];
    qi /= S + eps;
    H -= qi * std::log(qi + eps);
    h[size_t(i)] = -std::log(qi + eps) - qi / (qi + eps);
    qh += qi * h[size_t(i)];
  }
  const double gap = H - log_target;
  *loss = T(coeff * gap * gap);
  const double scale = 2.0 * coeff * gap / (double(N) * (S + eps));
  for (int i = 0; i < E; ++i) {
    const bool visible = support == nullptr || support[i] != T(0);
    weight[i] = visible ? T(scale * (h[size_t(i)] - qh)) : T(0);
  }
}

template <typename T>
void z_loss_forward(T* loss, const T* z, double coeff, int N, int E) {
  if (N <= 0) {
    *loss = T(0);
    return;
  }
  const double total = detail::ordered_row_sum(N, 8 * int64_t(E), [&](int t) {
    T m;
    double sum;
    const double lse = detail::row_logsumexp(z + int64_t(t) * E, E, &m, &sum);
    return lse * lse;
  });
  *loss = T(coeff * total / N);
}

template <typename T>
void z_loss_backward(T* dz, const T* z, double coeff, int N, int E) {
#pragma omp parallel for schedule(static) if (int64_t(N) * E >= detail::kMinParallelWork / 8)
  for (int t = 0; t < N; ++t) {
    const T* zr = z + int64_t(t) * E;
    T* dzr = dz + int64_t(t) * E;
    T m;
    double sum;
    const double lse = detail::row_logsumexp(zr, E, &m, &sum);
    const T f = T(coeff * 2.0 * lse / (double(N) * sum));
    for (int i = 0; i < E; ++i) dzr[i] += f * std::exp(zr[i] - m);
  }
}

// ---------------------------------------------------------------------------------------------------
// Balancing-term bookkeeping (the same ops run on the device, so the backends share the logic):
//   counts_to_float:    out[i] = T(counts[i])                              out [E] =
//   axpy:               y[i] += T(a·x[i])  (the product in double, rounded once)   y [n] +=
//   pool_counts_update: running[i] += T(counts[i]); when finish (the pool's last layer of the
//                       micro-batch): ghat[i] = running[i] / T(layers), running[i] = 0
//                       running, ghat [E]; ghat untouched unless finish
template <typename T>
void counts_to_float(T* out, const int32_t* counts, int E) {
  for (int i = 0; i < E; ++i) out[i] = T(counts[i]);
}

template <typename T>
void axpy(T* y, const T* x, double a, int n) {
  for (int i = 0; i < n; ++i) y[i] += T(a * double(x[i]));
}

template <typename T>
void pool_counts_update(T* running, T* ghat, const int32_t* counts, bool finish, int layers,
                        int E) {
  for (int i = 0; i < E; ++i) {
    running[i] += T(counts[i]);
    if (finish) {
      ghat[i] = running[i] / T(layers);
      running[i] = T(0);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// UniPool-lock column ops: the router of a layer sees a subset of the pool's experts.
// x, in, din [N,E]; out, dout [N,K]; scale [E]; cols [K] (column indices in [0, E), checked;
// distinct for the backward, checked); 1 <= K <= E; N >= 0 (0: nothing to do).
//   scale_columns:           x[t,i] = x[t,i] · scale[i]   (in place, one multiply: scale 1 leaves
//                            x bitwise unchanged)
//   select_columns_forward:  out[t,j] = in[t, cols[j]]                                (out =)
//   select_columns_backward: din[t, cols[j]] = dout[t,j], din[t,i] = +0 for the other i
//                            (din =; the adjoint of select_columns_forward)
//   map_ids:                 ids[n] = table[ids[n]]   (in place; ids [n] must lie in [0, K) for a
//                            table [K]: not checked, it runs on every routed slot)
namespace detail {
inline void check_columns(const char* op, int N, int E) {
  if (N < 0 || E < 1) {
    throw unipool::Error(std::string(op) + ": need N >= 0 and E >= 1, got N = " +
                         std::to_string(N) + ", E = " + std::to_string(E));
  }
}
// Checks 1 <= K <= E and every cols[j] in [0, E); with distinct, also that no column repeats.
inline void check_selection(const char* op, const int32_t* cols, int N, int E, int K,
                            bool distinct) {
  check_columns(op, N, E);
  if (K < 1 || K > E) {
    throw unipool::Error(std::string(op) + ": need 1 <= K <= E, got K = " + std::to_string(K) +
                         ", E = " + std::to_string(E));
  }
  std::vector<char> seen(distinct ? size_t(E) : 0, 0);
  for (int j = 0; j < K; ++j) {
    const int32_t c = cols[j];
    if (c < 0 || c >= E) {
      throw unipool::Error(std::string(op) + ": column " + std::to_string(c) + " at " +
                           std::to_string(j) + " is outside [0, " + std::to_string(E) + ")");
    }
    if (distinct) {
      if (seen[size_t(c)] != 0) {
        throw unipool::Error(std::string(op) + ": column " + std::to_string(c) +
                             " is selected twice");
      }
      seen[size_t(c)] = 1;
    }
  }
}
}  // namespace detail

template <typename T>
void scale_columns(T* x, const T* scale, int N, int E) {
  detail::check_columns("scale_columns", N, E);
#pragma omp parallel for schedule(static) if (int64_t(N) * E >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    T* xr = x + int64_t(t) * E;
    for (int i = 0; i < E; ++i) xr[i] = xr[i] * scale[i];
  }
}

template <typename T>
void select_columns_forward(T* out, const T* in, const int32_t* cols, int N, int E, int K) {
  detail::check_selection("select_columns_forward", cols, N, E, K, /*distinct=*/false);
#pragma omp parallel for schedule(static) if (int64_t(N) * K >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    const T* ir = in + int64_t(t) * E;
    T* orow = out + int64_t(t) * K;
    for (int j = 0; j < K; ++j) orow[j] = ir[cols[j]];
  }
}

template <typename T>
void select_columns_backward(T* din, const T* dout, const int32_t* cols, int N, int E, int K) {
  detail::check_selection("select_columns_backward", cols, N, E, K, /*distinct=*/true);
#pragma omp parallel for schedule(static) if (int64_t(N) * E >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    const T* dr = dout + int64_t(t) * K;
    T* dir = din + int64_t(t) * E;
    for (int i = 0; i < E; ++i) dir[i] = T(0);
    for (int j = 0; j < K; ++j) dir[cols[j]] = dr[j];
  }
}

inline void map_ids(int32_t* ids, const int32_t* table, int64_t n) {
  if (n < 0) throw unipool::Error("map_ids: need n >= 0, got n = " + std::to_string(n));
#pragma omp parallel for schedule(static) if (n >= detail::kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) ids[i] = table[ids[i]];
}

}  // namespace unipool::cpu
