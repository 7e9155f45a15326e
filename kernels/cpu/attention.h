// CPU RoPE and causal GQA attention, forward and backward, written out by hand (llm.c style).
//
// Everything is a template on the float type T: float for training, double for the
// finite-difference tests. Header-only.
//
// Layout (one micro-batch): B sequences of Tlen tokens, row r = b*Tlen + t.
//   qkv  [B*Tlen, C] with C = (nh + 2*nkv)*hd, row-major. Per row: nh query heads, then nkv key
//        heads, then nkv value heads, hd values each. Query head h reads KV group g = h / (nh/nkv).
//   out  [B*Tlen, nh*hd]   head h at columns h*hd .. h*hd+hd-1
//   lse  [B, nh, Tlen]     logsumexp of the scaled scores of each query row (saved for backward)
//
// RoPE (rotate-half, pairs i and i+hd/2), position t = r % Tlen, angle(t, i) = t * base^(-2i/hd).
// Attention: out_t = Σ_{s<=t} softmax_s(q_t·k_s / sqrt(hd)) v_s, per head, causal.
//
// Determinism: every parallel work item owns its outputs and computes them in a fixed order
// (forward: one item per (b, h); backward: one item per (b, kv group g), which owns dq of the
// group's query heads and dk, dv of the group). Reductions across SIMD lanes are written out with
// explicit lane arrays, so no result depends on the thread count, on buffer alignment or on the
// run. No atomics, no shared reductions.
//
// Speed (float): the T×T score matrix is never stored. Queries are processed in blocks of a few
// rows (16 forward, 32 backward) against all keys they can see; the score rows of the block (rows ×
// Tlen) live in a per-thread buffer (flash-style: only out and lse are kept). Three small
// register-tiled kernels do all the O(Tlen²·hd) work, each with its inner loop contiguous in memory
// so that GCC vectorises it (and keeps the tile in registers):
//   tile_scores  S[q][j]   = scale · Σ_d A[q][d] · Xt[d][j]     (q·k; dout·v in backward)
//   tile_pv      O[q][d]   = Σ_j P[q][j] · X[j][d]              (p·v; ds·k in backward)
//   tile_acc_t   Yt[d][j] += Σ_q Z[q][d] · P[q][j]              (dkᵀ += q·ds, dvᵀ += dout·p)
// K and V are copied per work item into transposed / zero-padded per-thread buffers, O(Tlen·hd).
// The softmax exp for float is a vectorisable Cody-Waite + polynomial exp (max error ≈1 ulp; libm's
// expf does not vectorise without -ffast-math); double uses std::exp.
#pragma once
// Part of the CPU op list: include kernels/cpu/ops.h (which declares every op), not this file.

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

namespace unipool::cpu {

namespace attention_detail {

// a*b + c, fused where the hardware has FMA (vectorises to vfmadd), else plain.
template <typename T>
inline T fmadd(T a, T b, T c) {
#ifdef __FMA__
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// Tiling. kL = SIMD lanes in 512 bits (16 float / 8 double). A register tile of tile_scores /
// tile_pv is kMR query rows × two vectors (kKC key columns, or kDC head-dim columns). A query block
// (kFwdRows rows forward, kBwdRows backward) is a whole number of register tiles; the backward uses
// taller blocks because tile_acc_t loads and stores its dK/dV tile once per block.
template <typename T>
struct Tile {
  static constexpr int kL = 64 / static_cast<int>(sizeof(T));
  static constexpr int kMR = 8;
  static constexpr int kKC = 2 * kL;
  static constexpr int kDC = 2 * kL;
  static constexpr int kFwdRows = 16;
  static constexpr int kBwdRows = 32;
  static_assert(kFwdRows % kMR == 0 && kBwdRows % kMR == 0, "blocks are whole register tiles");
};

inline int round_up(int x, int m) {
  return (x + m - 1) / m * m;
}

// exp for the softmax. Arguments are <= ~0 (score minus the row max or minus the lse).
inline double softmax_exp(double x) {
  return std::exp(x);
}
inline float softmax_exp(float x) {
  // x = n·ln2 + r, |r| <= ln2/2; e^r by the Cephes expf polynomial; 2^n through the exponent bits.
  x = x < -87.33654f ? -87.33654f : x;  // keeps 2^n normal (n >= -126); e^-87.3 ≈ 1e-38 ≈ 0
  x = x > 88.0f ? 88.0f : x;
  const float kMagic = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer in the low bits
  const float t = fmadd(x, 1.44269504088896341f, kMagic);
  const float n = t - kMagic;
  float r = fmadd(n, -0.693359375f, x);
  r = fmadd(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = fmadd(p, r, 1.3981999507e-3f);
  p = fmadd(p, r, 8.3334519073e-3f);
  p = fmadd(p, r, 4.1665795894e-2f);
  p = fmadd(p, r, 1.6666665459e-1f);
  p = fmadd(p, r, 5.0000001201e-1f);
  const float y = fmadd(p * r, r, r) + 1.0f;
  int32_t tb;
  std::memcpy(&tb, &t, sizeof(tb));
  const int32_t sb = (tb - 0x4B400000 + 127) << 23;  // low bits of t hold n
  float s;
  std::memcpy(&s, &sb, sizeof(s));
  return y * s;
}

// 64-byte aligned buffer that only grows (one per thread, reused across calls).
template <typename T>
struct AlignedBuf {
  T* p = nullptr;
  size_t n = 0;
  AlignedBuf() = default;
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  ~AlignedBuf() { std::free(p); }
  T* get(size_t count) {
    if (count > n) {
      std::free(p);
      const size_t bytes = (count * sizeof(T) + 63) / 64 * 64;
      p = static_cast<T*>(std::aligned_alloc(64, bytes));
      if (!p) throw std::bad_alloc();
      std::memset(p, 0, bytes);  // never read indeterminate values (stale ones are masked anyway)
      n = count;
    }
    return p;
  }
};

// Per-thread scratch of one attention call. ldt = Tpad + kL is the stride of every Tlen-long row:
// a power-of-two stride would put the rows of a tile in the same L1 set.
template <typename T>
struct Workspace {
  AlignedBuf<T> kt, vt;      // Kᵀ, Vᵀ of the group     [hd, ldt]
  AlignedBuf<T> kp, vp;      // K, V (zero padded)      [Tpad, hdp]
  AlignedBuf<T> dk, dv;      // dKᵀ, dVᵀ accumulators   [hdp, ldt]
  AlignedBuf<T> a, b, c, o;  // rows of a query block   [rows, hdp]
  AlignedBuf<T> s, p;        // score / prob rows       [rows, ldt]
  static Workspace& local() {
    static thread_local Workspace ws;
    return ws;
  }
};

// ---- register-tiled kernels: all the O(Tlen²·hd) work
// --------------------------------------------

// S[q][j] = scale · Σ_{d<hd} A[q][d] · Xt[d][j]   for q < kMR, j < jn (jn a multiple of kKC).
// A [kMR, lda], Xt [hd, ldx], S [kMR, lds]. Each output sums over d in order.
template <typename T>
inline void tile_scores(T* S, int lds, const T* A, int lda, const T* Xt, int ldx, int hd, int jn,
                        T scale) {
  constexpr int MR = Tile<T>::kMR, KC = Tile<T>::kKC;
  for (int j0 = 0; j0 < jn; j0 += KC) {
    T acc[MR][KC];
    for (int q = 0; q < MR; ++q)
      for (int l = 0; l < KC; ++l) acc[q][l] = T(0);
    for (int d = 0; d < hd; ++d) {
      const T* x = Xt + static_cast<size_t>(d) * ldx + j0;
      for (int q = 0; q < MR; ++q) {
        const T a = A[q * lda + d];
        for (int l = 0; l < KC; ++l) acc[q][l] = fmadd(a, x[l], acc[q][l]);
      }
    }
    for (int q = 0; q < MR; ++q)
      for (int l = 0; l < KC; ++l) S[q * lds + j0 + l] = acc[q][l] * scale;
  }
}

// O[q][d] = Σ_{j<jn} P[q][j] · X[j][d]   for q < kMR, d < dn (dn a multiple of kDC).
// P [kMR, ldp], X [jn, ldx], O [kMR, ldo]. Each output sums over j in order.
template <typename T>
inline void tile_pv(T* O, int ldo, const T* P, int ldp, const T* X, int ldx, int jn, int dn) {
  constexpr int MR = Tile<T>::kMR, DC = Tile<T>::kDC;
  for (int d0 = 0; d0 < dn; d0 += DC) {
    T acc[MR][DC];
    for (int q = 0; q < MR; ++q)
      for (int l = 0; l < DC; ++l) acc[q][l] = T(0);
    for (int j = 0; j < jn; ++j) {
      const T* x = X + static_cast<size_t>(j) * ldx + d0;
      for (int q = 0; q < MR; ++q) {
        const T p = P[q * ldp + j];
        for (int l = 0; l < DC; ++l) acc[q][l] = fmadd(p, x[l], acc[q][l]);
      }
    }
    for (int q = 0; q < MR; ++q)
      for (int l = 0; l < DC; ++l) O[q * ldo + d0 + l] = acc[q][l];
  }
}

// Yt[d][j] += Σ_{q<ROWS} Z[q][d] · P[q][j]   for d < dn (a multiple of 8), j < jn (a multiple of
// kKC). Z [ROWS, ldz], P [ROWS, ldp], Yt [dn, ldy]: the accumulator is transposed so that the
// vector index j is contiguous in both P and Yt. Each output adds its terms in q order.
template <int ROWS, typename T>
inline void tile_acc_t(T* Yt, int ldy, const T* Z, int ldz, const T* P, int ldp, int dn, int jn) {
  constexpr int KC = Tile<T>::kKC, DU = 8;
  for (int d0 = 0; d0 < dn; d0 += DU) {
    for (int j0 = 0; j0 < jn; j0 += KC) {
      T acc[DU][KC];
      for (int u = 0; u < DU; ++u)
        for (int l = 0; l < KC; ++l) acc[u][l] = Yt[static_cast<size_t>(d0 + u) * ldy + j0 + l];
#pragma GCC unroll 32
      for (int q = 0; q < ROWS; ++q) {
        const T* p = P + q * ldp + j0;
#pragma GCC unroll 8
        for (int u = 0; u < DU; ++u) {
          const T z = Z[q * ldz + d0 + u];
          for (int l = 0; l < KC; ++l) acc[u][l] = fmadd(z, p[l], acc[u][l]);
        }
      }
      for (int u = 0; u < DU; ++u)
        for (int l = 0; l < KC; ++l) Yt[static_cast<size_t>(d0 + u) * ldy + j0 + l] = acc[u][l];
    }
  }
}

// ---- row helpers
// ---------------------------------------------------------------------------------

// Σ_{i<n} x[i]·y[i] with kL explicit lanes (n a multiple of kL), lanes folded in a fixed tree.
template <typename T>
inline T lane_dot(const T* x, const T* y, int n) {
  constexpr int L = Tile<T>::kL;
  T lane[L];
  for (int l = 0; l < L; ++l) lane[l] = T(0);
  for (int i = 0; i < n; i += L)
    for (int l = 0; l < L; ++l) lane[l] = fmadd(x[i + l], y[i + l], lane[l]);
  for (int w = L / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) lane[l] += lane[l + w];
  return lane[0];
}

// Σ_{j<n} x[j] with kL explicit lanes (n a multiple of kL), lanes folded in a fixed tree.
template <typename T>
inline T lane_sum(const T* x, int n) {
  constexpr int L = Tile<T>::kL;
  T lane[L];
  for (int l = 0; l < L; ++l) lane[l] = T(0);
  for (int j = 0; j < n; j += L)
    for (int l = 0; l < L; ++l) lane[l] += x[j + l];
  for (int w = L / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) lane[l] += lane[l + w];
  return lane[0];
}

// max_{j<=t} x[j] for t < n, n a multiple of kL (max is exact, so the lane order does not matter).
template <typename T>
inline T row_max(const T* x, int t, int n) {
  constexpr int L = Tile<T>::kL;
  const T ninf = -std::numeric_limits<T>::infinity();
  T lane[L];
  for (int l = 0; l < L; ++l) lane[l] = ninf;
  for (int j = 0; j < n; j += L)
    for (int l = 0; l < L; ++l) {
      const T v = j + l <= t ? x[j + l] : ninf;
      lane[l] = v > lane[l] ? v : lane[l];
    }
  T m = ninf;
  for (int l = 0; l < L; ++l) m = lane[l] > m ? lane[l] : m;
  return m;
}

// Copies rows [t0, t0+rows) of one head (hd columns starting at col) into a zero-padded
// [rows, hdp] block; rows at or beyond Tlen become zeros.
template <typename T>
inline void load_rows(T* dst, int rows, int hdp, const T* src, int ld, int col, int t0, int Tlen,
                      int hd) {
  for (int q = 0; q < rows; ++q) {
    T* d = dst + q * hdp;
    const int t = t0 + q;
    if (t < Tlen) {
      const T* s = src + static_cast<size_t>(t) * ld + col;
      for (int i = 0; i < hd; ++i) d[i] = s[i];
      for (int i = hd; i < hdp; ++i) d[i] = T(0);
    } else {
      for (int i = 0; i < hdp; ++i) d[i] = T(0);
    }
  }
}

// Head (hd columns at col) of one sequence, as Xt [hd, ldx] (transposed, Tpad columns used) or
// X [Tpad, hdp]; padding is zero.
template <typename T>
inline void load_head_t(T* xt, int ldx, int Tpad, const T* src, int ld, int col, int Tlen, int hd) {
  constexpr int TB = 16;  // rows per block: each xt row gets TB contiguous values per pass
  for (int t0 = 0; t0 < Tpad; t0 += TB) {
    for (int i = 0; i < hd; ++i) {
      T* d = xt + static_cast<size_t>(i) * ldx + t0;
      for (int u = 0; u < TB; ++u) {
        const int t = t0 + u;
        d[u] = t < Tlen ? src[static_cast<size_t>(t) * ld + col + i] : T(0);
      }
    }
  }
}
template <typename T>
inline void load_head(T* x, int hdp, int Tpad, const T* src, int ld, int col, int Tlen, int hd) {
  for (int t = 0; t < Tpad; ++t) {
    T* d = x + static_cast<size_t>(t) * hdp;
    if (t < Tlen) {
      const T* s = src + static_cast<size_t>(t) * ld + col;
      for (int i = 0; i < hd; ++i) d[i] = s[i];
      for (int i = hd; i < hdp; ++i) d[i] = T(0);
    } else {
      for (int i = 0; i < hdp; ++i) d[i] = T(0);
    }
  }
}

}  // namespace attention_detail

// ------------------------------------------------------------------------------------------------
// RoPE
// ------------------------------------------------------------------------------------------------

// cos_table, sin_table [Tlen, hd/2]: angle(t, i) = t · base^(-2i/hd), in double, cast to T.
template <typename T>
void rope_tables(T* cos_table, T* sin_table, int Tlen, int hd, double base) {
  assert(hd % 2 == 0);
  const int half = hd / 2;
  for (int t = 0; t < Tlen; ++t) {
    for (int i = 0; i < half; ++i) {
      const double inv_freq = std::pow(base, -2.0 * i / hd);
      const double angle = static_cast<double>(t) * inv_freq;
      cos_table[t * half + i] = static_cast<T>(std::cos(angle));
      sin_table[t * half + i] = static_cast<T>(std::sin(angle));
    }
  }
}

// Forward, in place on the nh query and nkv key heads of qkv [B*Tlen, (nh+2nkv)*hd] (v untouched).
// For each head vector x (hd), i < hd/2, c = cos[t, i], s = sin[t, i], t = r % Tlen:
//   x'[i]        = x[i]·c − x[i+hd/2]·s
//   x'[i+hd/2]   = x[i+hd/2]·c + x[i]·s
template <typename T>
void rope_forward(T* qkv, const T* cos_table, const T* sin_table, int B, int Tlen, int nh, int nkv,
                  int hd) {
  const int half = hd / 2;
  const int C = (nh + 2 * nkv) * hd;
  const int nrot = nh + nkv;  // q heads then k heads are contiguous
  // One row (decoding) is not worth waking the thread team for.
#pragma omp parallel for schedule(static) if (B * Tlen > 1)
  for (int r = 0; r < B * Tlen; ++r) {
    const T* c = cos_table + (r % Tlen) * half;
    const T* s = sin_table + (r % Tlen) * half;
    T* row = qkv + static_cast<size_t>(r) * C;
    for (int hh = 0; hh < nrot; ++hh) {
      T* x = row + hh * hd;
      for (int i = 0; i < half; ++i) {
        const T x1 = x[i], x2 = x[i + half];
        x[i] = x1 * c[i] - x2 * s[i];
        x[i + half] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}

// Backward: the transpose (rotation by −angle), in place on the q and k gradient columns of dqkv:
//   dx[i]        = dy[i]·c + dy[i+hd/2]·s
//   dx[i+hd/2]   = dy[i+hd/2]·c − dy[i]·s
template <typename T>
void rope_backward(T* dqkv, const T* cos_table, const T* sin_table, int B, int Tlen, int nh,
                   int nkv, int hd) {
  const int half = hd / 2;
  const int C = (nh + 2 * nkv) * hd;
  const int nrot = nh + nkv;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < B * Tlen; ++r) {
    const T* c = cos_table + (r % Tlen) * half;
    const T* s = sin_table + (r % Tlen) * half;
    T* row = dqkv + static_cast<size_t>(r) * C;
    for (int hh = 0; hh < nrot; ++hh) {
      T* x = row + hh * hd;
      for (int i = 0; i < half; ++i) {
        const T y1 = x[i], y2 = x[i + half];
        x[i] = y1 * c[i] + y2 * s[i];
        x[i + half] = y2 * c[i] - y1 * s[i];
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Causal GQA attention
// ------------------------------------------------------------------------------------------------

// Forward. qkv [B*Tlen, (nh+2nkv)*hd] (after RoPE) -> out [B*Tlen, nh*hd], lse [B, nh, Tlen].
// For head h (group g = h/(nh/nkv)), query t, keys s <= t, scale = 1/sqrt(hd):
//   z_s   = scale · q_t·k_s
//   m_t   = max_s z_s
//   lse_t = m_t + log Σ_s exp(z_s − m_t)
//   out_t = Σ_s exp(z_s − m_t) v_s / Σ_s exp(z_s − m_t)        (= Σ_s exp(z_s − lse_t) v_s)
// One work item per (b, h). Within it, query blocks of kFwdRows rows: scores of the block against
// keys 0..t0+rows-1 (tile_scores), softmax row by row in place, then p·v (tile_pv).
template <typename T>
void attention_forward(T* out, T* lse, const T* qkv, int B, int Tlen, int nh, int nkv, int hd) {
  using namespace attention_detail;
  constexpr int QB = Tile<T>::kFwdRows, MR = Tile<T>::kMR, KC = Tile<T>::kKC, DC = Tile<T>::kDC;
  assert(nkv > 0 && nh % nkv == 0 && hd > 0);
  const int C = (nh + 2 * nkv) * hd;
  const int Cout = nh * hd;
  const int rep = nh / nkv;
  const int Tpad = round_up(Tlen, std::max(QB, KC));
  const int ldt = Tpad + Tile<T>::kL;
  const int hdp = round_up(hd, DC);
  const T scale = T(1) / std::sqrt(T(hd));

#pragma omp parallel for schedule(static)
  for (int item = 0; item < B * nh; ++item) {
    const int b = item / nh, h = item % nh, g = h / rep;
    Workspace<T>& ws = Workspace<T>::local();
    T* kt = ws.kt.get(static_cast<size_t>(hd) * ldt);
    T* vp = ws.vp.get(static_cast<size_t>(Tpad) * hdp);
    T* qb = ws.a.get(static_cast<size_t>(QB) * hdp);  // q rows of the block
    T* ob = ws.o.get(static_cast<size_t>(QB) * hdp);  // unnormalised out rows
    T* S = ws.s.get(static_cast<size_t>(QB) * ldt);   // scores, then exp(z - m)
    const T* base = qkv + static_cast<size_t>(b) * Tlen * C;
    load_head_t(kt, ldt, Tpad, base, C, (nh + g) * hd, Tlen, hd);
    load_head(vp, hdp, Tpad, base, C, (nh + nkv + g) * hd, Tlen, hd);

    for (int t0 = 0; t0 < Tlen; t0 += QB) {
      const int jn = round_up(t0 + QB, KC);  // keys the block can see, padded (<= Tpad)
      load_rows(qb, QB, hdp, base, C, h * hd, t0, Tlen, hd);
      for (int q0 = 0; q0 < QB; q0 += MR)  // z = scale q·k
        tile_scores(S + q0 * ldt, ldt, qb + q0 * hdp, hdp, kt, ldt, hd, round_up(t0 + q0 + MR, KC),
                    scale);
      T sum[QB];
      for (int q = 0; q < QB; ++q) {
        const int t = std::min(t0 + q, Tlen - 1);  // rows past Tlen are computed, never stored
        T* z = S + q * ldt;
        const T m = row_max(z, t, jn);
        for (int j = 0; j < jn; ++j) {  // exp(z - m) for s <= t, exactly 0 for masked keys
          const T e = softmax_exp(z[j] - m);
          z[j] = j <= t ? e : T(0);
        }
        sum[q] = lane_sum(z, jn);
        if (t0 + q < Tlen)
          lse[(static_cast<size_t>(b) * nh + h) * Tlen + t0 + q] = m + std::log(sum[q]);
      }
      for (int q0 = 0; q0 < QB; q0 += MR)  // Σ_s exp(z_s - m) v_s
        tile_pv(ob + q0 * hdp, hdp, S + q0 * ldt, ldt, vp, hdp, t0 + q0 + MR, hdp);
      for (int q = 0; q < QB && t0 + q < Tlen; ++q) {
        T* o = out + (static_cast<size_t>(b) * Tlen + t0 + q) * Cout + h * hd;
        for (int i = 0; i < hd; ++i) o[i] = ob[q * hdp + i] / sum[q];
      }
    }
  }
}

// Decode: the attention of ONE new query row per head against a K/V cache (the generation step of
// model/generator.h). The query sits at position Tlen−1 and sees all Tlen cached positions.
//   q        [nh*hd]   the new row's query heads (after RoPE)
//   k, v     Tlen rows, row s at k + s*ld (v + s*ld): nkv heads of hd (k after RoPE)
//   out      [nh*hd]
//   scratch  at least Tlen + 16 elements (the scores, zero-padded to whole SIMD lanes; the op list
//            asks for nh·(Tlen + 16), what the CUDA kernel uses)
// The math and the summation order are attention_forward's for its row t = Tlen−1: z_s = scale ·
// (q·k_s summed over d in order), p_s = exp(z_s − max) by the same softmax_exp, Σ p_s by the same
// lanes, out = (Σ_s p_s v_s in s order) / Σ p_s. Serial (one row is little work).
template <typename T>
void attention_decode(T* out, const T* q, const T* k, const T* v, int ld, int Tlen, int nh, int nkv,
                      int hd, T* scratch) {
  using namespace attention_detail;
  assert(nkv > 0 && nh % nkv == 0 && hd > 0 && Tlen > 0);
  const int rep = nh / nkv;
  const int n = round_up(Tlen, Tile<T>::kL);
  const T scale = T(1) / std::sqrt(T(hd));
  T* z = scratch;
  for (int h = 0; h < nh; ++h) {
    const int g = h / rep;
    const T* qh = q + h * hd;
    for (int s = 0; s < Tlen; ++s) {  // z_s = scale · q·k_s
      const T* ks = k + static_cast<size_t>(s) * ld + g * hd;
      T acc = T(0);
      for (int i = 0; i < hd; ++i) acc = fmadd(qh[i], ks[i], acc);
      z[s] = acc * scale;
    }
    T m = z[0];
    for (int s = 1; s < Tlen; ++s) m = z[s] > m ? z[s] : m;
    for (int s = 0; s < Tlen; ++s) z[s] = softmax_exp(z[s] - m);
    for (int s = Tlen; s < n; ++s) z[s] = T(0);
    const T sum = lane_sum(z, n);
    T* o = out + h * hd;
    for (int i = 0; i < hd; ++i) o[i] = T(0);
    for (int s = 0; s < Tlen; ++s) {  // Σ_s p_s v_s
      const T p = z[s];
      const T* vs = v + static_cast<size_t>(s) * ld + g * hd;
      for (int i = 0; i < hd; ++i) o[i] = fmadd(p, vs[i], o[i]);
    }
    for (int i = 0; i < hd; ++i) o[i] = o[i] / sum;
  }
}

// Backward. dout [B*Tlen, nh*hd], qkv (after RoPE), out, lse from the forward
// -> dqkv [B*Tlen, (nh+2nkv)*hd], OVERWRITTEN (gradient w.r.t. the post-RoPE q, k, v).
// Per head, query t, keys s <= t (p recomputed from lse, rows of one block at a time):
//   p_s   = exp(scale · q_t·k_s − lse_t)
//   D_t   = dout_t · out_t
//   ds_s  = p_s · (dout_t·v_s − D_t)
//   dq_t  = scale · Σ_s ds_s k_s
//   dk_s += scale · ds_s q_t          (over all query heads of the group and all t >= s)
//   dv_s += p_s dout_t
// One work item per (b, g): it owns dk, dv of group g and dq of the group's query heads, and
// accumulates them in the fixed order (head, query block, row). Query blocks of kBwdRows rows:
// p and dout·v by tile_scores, ds row by row, dq by tile_pv, dkᵀ and dvᵀ by tile_acc_t.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B,
                        int Tlen, int nh, int nkv, int hd) {
  using namespace attention_detail;
  constexpr int QB = Tile<T>::kBwdRows, MR = Tile<T>::kMR, KC = Tile<T>::kKC, DC = Tile<T>::kDC;
  assert(nkv > 0 && nh % nkv == 0 && hd > 0);
  const int C = (nh + 2 * nkv) * hd;
  const int Cout = nh * hd;
  const int rep = nh / nkv;
  const int Tpad = round_up(Tlen, std::max(QB, KC));
  const int ldt = Tpad + Tile<T>::kL;
  const int hdp = round_up(hd, DC);
  const T scale = T(1) / std::sqrt(T(hd));

#pragma omp parallel for schedule(static)
  for (int item = 0; item < B * nkv; ++item) {
    const int b = item / nkv, g = item % nkv;
    Workspace<T>& ws = Workspace<T>::local();
    T* kt = ws.kt.get(static_cast<size_t>(hd) * ldt);
    T* vt = ws.vt.get(static_cast<size_t>(hd) * ldt);
    T* kp = ws.kp.get(static_cast<size_t>(Tpad) * hdp);
    T* dkt = ws.dk.get(static_cast<size_t>(hdp) * ldt);
    T* dvt = ws.dv.get(static_cast<size_t>(hdp) * ldt);
    T* qb = ws.a.get(static_cast<size_t>(QB) * hdp);   // q rows of the block
    T* gb = ws.b.get(static_cast<size_t>(QB) * hdp);   // dout rows
    T* ob = ws.c.get(static_cast<size_t>(QB) * hdp);   // out rows
    T* dqb = ws.o.get(static_cast<size_t>(QB) * hdp);  // dq rows
    T* P = ws.p.get(static_cast<size_t>(QB) * ldt);    // z, then p
    T* dS = ws.s.get(static_cast<size_t>(QB) * ldt);   // dout·v, then scale·ds
    const T* base = qkv + static_cast<size_t>(b) * Tlen * C;
    const T* obase = out + static_cast<size_t>(b) * Tlen * Cout;
    const T* gbase = dout + static_cast<size_t>(b) * Tlen * Cout;
    T* dbase = dqkv + static_cast<size_t>(b) * Tlen * C;
    const int kcol = (nh + g) * hd, vcol = (nh + nkv + g) * hd;
    load_head_t(kt, ldt, Tpad, base, C, kcol, Tlen, hd);
    load_head_t(vt, ldt, Tpad, base, C, vcol, Tlen, hd);
    load_head(kp, hdp, Tpad, base, C, kcol, Tlen, hd);
    std::fill(dkt, dkt + static_cast<size_t>(hdp) * ldt, T(0));
    std::fill(dvt, dvt + static_cast<size_t>(hdp) * ldt, T(0));

    for (int h = g * rep; h < (g + 1) * rep; ++h) {
      const T* lrow = lse + (static_cast<size_t>(b) * nh + h) * Tlen;
      for (int t0 = 0; t0 < Tlen; t0 += QB) {
        const int jn = round_up(t0 + QB, KC);
        load_rows(qb, QB, hdp, base, C, h * hd, t0, Tlen, hd);
        load_rows(gb, QB, hdp, gbase, Cout, h * hd, t0, Tlen, hd);
        load_rows(ob, QB, hdp, obase, Cout, h * hd, t0, Tlen, hd);
        for (int q0 = 0; q0 < QB; q0 += MR) {
          const int jq = round_up(t0 + q0 + MR, KC);
          tile_scores(P + q0 * ldt, ldt, qb + q0 * hdp, hdp, kt, ldt, hd, jq, scale);  // z
          tile_scores(dS + q0 * ldt, ldt, gb + q0 * hdp, hdp, vt, ldt, hd, jq, T(1));  // dout·v
        }
        for (int q = 0; q < QB; ++q) {
          const int t = t0 + q;
          T* p = P + q * ldt;
          T* ds = dS + q * ldt;
          if (t >= Tlen) {  // padding row: contributes nothing
            for (int j = 0; j < jn; ++j) p[j] = ds[j] = T(0);
            continue;
          }
          const T l = lrow[t];
          const T D = lane_dot(gb + q * hdp, ob + q * hdp, hdp);
          for (int j = 0; j < jn; ++j) {  // masked keys (and stale tile entries) become exactly 0
            const T e = softmax_exp(p[j] - l);
            const T pj = j <= t ? e : T(0);
            p[j] = pj;
            ds[j] = j <= t ? scale * (pj * (ds[j] - D)) : T(0);
          }
        }
        for (int q0 = 0; q0 < QB; q0 += MR)  // dq_t = Σ_s (scale ds_s) k_s
          tile_pv(dqb + q0 * hdp, hdp, dS + q0 * ldt, ldt, kp, hdp, t0 + q0 + MR, hdp);
        for (int q = 0; q < QB && t0 + q < Tlen; ++q) {
          T* d = dbase + static_cast<size_t>(t0 + q) * C + h * hd;
          for (int i = 0; i < hd; ++i) d[i] = dqb[q * hdp + i];
        }
        tile_acc_t<QB>(dkt, ldt, qb, hdp, dS, ldt, hdp, jn);  // dk_s += (scale ds_s) q_t
        tile_acc_t<QB>(dvt, ldt, gb, hdp, P, ldt, hdp, jn);   // dv_s += p_s dout_t
      }
    }
    for (int t = 0; t < Tlen; ++t) {
      T* dkr = dbase + static_cast<size_t>(t) * C + kcol;
      T* dvr = dbase + static_cast<size_t>(t) * C + vcol;
      for (int i = 0; i < hd; ++i) dkr[i] = dkt[static_cast<size_t>(i) * ldt + t];
      for (int i = 0; i < hd; ++i) dvr[i] = dvt[static_cast<size_t>(i) * ldt + t];
    }
  }
}

}  // namespace unipool::cpu
