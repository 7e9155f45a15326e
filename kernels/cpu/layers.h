// CPU layer ops: token embedding, RMSNorm, SwiGLU and small row helpers. Header-only templates on
// the float type T (float for training, double for the finite-difference tests), forward and
// backward side by side. All matrices are row-major; "N rows" are tokens.
//
// DETERMINISM (every op here and in router.h / dispatch.h / crossentropy.h): results are bitwise
// the same whatever the number of OpenMP threads. Each output element is written by exactly one
// loop iteration, and every sum runs in a fixed order:
//   - sums inside a row use kLanes independent accumulators (element i goes to lane i % kLanes,
//   lanes
//     combined by a fixed tree, then the tail), which lets the compiler vectorise without
//     -ffast-math;
//   - sums across rows are either per output row in token order (embedding dE: dE's rows are split
//     among iterations by id) or per fixed chunk of rows (kRowChunk / kNormRowChunk, constants),
//     each chunk in row order, then the chunk partials in chunk order (ordered_row_sum, rmsnorm
//     dw).
// Reductions accumulate in double, also for T = float. (Bits can differ between builds, e.g. with
// or without FMA contraction under -march=native; never between thread counts or runs of one
// binary.) Scratch: only detail::chunk_partials, a thread_local buffer of the calling thread that
// grows once.
//
// "+=" outputs accumulate into what is there, "=" outputs are fully overwritten.
#pragma once
// Part of the CPU op list: include kernels/cpu/ops.h (which declares every op), not this file.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace unipool::cpu {

namespace detail {

// Loops with less total work (elements touched) than this run on the calling thread.
constexpr int64_t kMinParallelWork = int64_t(1) << 15;
// Rows per chunk for sums across rows (a constant: never derived from the thread count).
constexpr int kRowChunk = 64;
// Independent accumulators for sums inside a row.
constexpr int kLanes = 8;
// Columns per task for per-column sums (rmsnorm dw's final reduction).
constexpr int kColChunk = 32;
// Rows per chunk of rmsnorm_backward's dw partials.
constexpr int kNormRowChunk = 128;
// Token groups of embedding_backward (row v of dE belongs to group v % kEmbedGroups).
constexpr int kEmbedGroups = 64;

inline double combine_lanes(const double* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}
static_assert(kLanes == 8, "combine_lanes is written for 8 lanes");

// Σ_{i<n} f(i) in double: element i into lane i % kLanes, lanes by a fixed tree, then the tail in
// order.
template <class F>
inline double lane_sum(int n, F&& f) {
  double acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += f(i + j);
  }
  double tail = 0;
  for (; i < n; ++i) tail += f(i);
  return combine_lanes(acc) + tail;
}

// <a, b> over n elements, in double.
template <typename T>
inline double dot(const T* a, const T* b, int n) {
  return lane_sum(n, [&](int i) { return double(a[i]) * double(b[i]); });
}

// max_i a[i] (n >= 1). Exact, so the order (vector lanes) does not matter.
template <typename T>
inline T max_value(const T* a, int n) {
  T m = a[0];
#if defined(_OPENMP) && !defined(__clang__)  // clang cannot vectorise this max without fast-math
#pragma omp simd reduction(max : m)
#endif
  for (int i = 1; i < n; ++i) m = a[i] > m ? a[i] : m;
  return m;
}

// The calling thread's scratch for per-chunk partial sums (grows, never shrinks).
inline double* chunk_partials(int64_t n) {
  static thread_local std::vector<double> buf;
  if (buf.size() < size_t(n)) buf.resize(size_t(n));
  return buf.data();
}

// Σ_{t<N} row(t) in double, bitwise independent of the thread count: rows in chunks of kRowChunk,
// each chunk summed in row order, the chunk partials summed in chunk order. row(t) may also write
// row t's outputs (it is called exactly once per row, from one thread). work_per_row sizes the
// parallel cutoff.
template <class F>
inline double ordered_row_sum(int N, [[maybe_unused]] int64_t work_per_row, F&& row) {
  if (N <= 0) return 0.0;
  const int nchunks = (N + kRowChunk - 1) / kRowChunk;
  double* partial = chunk_partials(nchunks);
#pragma omp parallel for schedule(static) if (int64_t(N) * work_per_row >= kMinParallelWork)
  for (int c = 0; c < nchunks; ++c) {
    const int end = std::min(N, (c + 1) * kRowChunk);
    double s = 0;
    for (int t = c * kRowChunk; t < end; ++t) s += row(t);
    partial[c] = s;
  }
  double total = 0;
  for (int c = 0; c < nchunks; ++c) total += partial[c];
  return total;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------------
// Embedding.  tokens [N] in [0, V) (not checked: V is not passed), E [V,d], out [N,d].
//   forward:  out[t,:] = E[tokens[t],:]
//   backward: dE[v,:] += Σ_{t: tokens[t] = v} dout[t,:]   (each row of dE gets its tokens' rows in
//   token
//             order; rows of dE are split among iterations by v % kEmbedGroups, so no two threads
//             touch one row and the order never depends on the thread count)
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* E, int N, int d) {
#pragma omp parallel for schedule(static) if (int64_t(N) * d >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    const T* src = E + int64_t(tokens[t]) * d;
    T* dst = out + int64_t(t) * d;
    for (int i = 0; i < d; ++i) dst[i] = src[i];
  }
}

template <typename T>
void embedding_backward(T* dE, const T* dout, const int32_t* tokens, int N, int d) {
#pragma omp parallel for schedule(static) if (int64_t(N) * d >= detail::kMinParallelWork)
  for (int g = 0; g < detail::kEmbedGroups; ++g) {
    for (int t = 0; t < N; ++t) {
      const uint32_t v = uint32_t(tokens[t]);
      if (int(v % detail::kEmbedGroups) != g) continue;
      T* dst = dE + int64_t(v) * d;
      const T* src = dout + int64_t(t) * d;
      for (int i = 0; i < d; ++i) dst[i] += src[i];
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// RMSNorm.  x, out, dout, dx [N,d]; w, dw [d]; rstd [N].
//   forward:  rstd[t] = 1/sqrt(mean_i x[t,i]² + eps);  out[t,i] = x[t,i]·rstd[t]·w[i]
//   backward: dx[t,j] += rstd·(dout[t,j]·w[j] − x[t,j]·rstd²·(Σ_i dout[t,i]·w[i]·x[t,i])/d)
//             dw[i]   += Σ_t dout[t,i]·x[t,i]·rstd[t]   (rows in chunks of kNormRowChunk, each
//             chunk in row order, the chunk partials in chunk order; scratch: N·d/kNormRowChunk
//             doubles)
// out may alias x.
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, int N, int d, double eps) {
#pragma omp parallel for schedule(static) if (int64_t(N) * d >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    const T* xr = x + int64_t(t) * d;
    T* o = out + int64_t(t) * d;
    const double ms = detail::dot(xr, xr, d) / d;
    const T rs = T(1.0 / std::sqrt(ms + eps));
    rstd[t] = rs;
    for (int i = 0; i < d; ++i) o[i] = xr[i] * rs * w[i];
  }
}

template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, int N,
                      int d) {
  // Pass 1, one chunk of kNormRowChunk rows per iteration: dx rows, and the chunk's partial dw (its
  // rows in row order) into part[chunk, :] while the rows are in L1.
  constexpr int K = detail::kNormRowChunk;
  const int nchunks = (N + K - 1) / K;
  if (nchunks == 0 || d <= 0) return;
  double* part = detail::chunk_partials(int64_t(nchunks) * d);
#pragma omp parallel for schedule(static) if (int64_t(N) * d >= detail::kMinParallelWork)
  for (int c = 0; c < nchunks; ++c) {
    double* pc = part + int64_t(c) * d;
    for (int i = 0; i < d; ++i) pc[i] = 0.0;
    const int end = std::min(N, (c + 1) * K);
    for (int t = c * K; t < end; ++t) {
      const T* g = dout + int64_t(t) * d;
      const T* xr = x + int64_t(t) * d;
      T* dxr = dx + int64_t(t) * d;
      const double rs = rstd[t];
      const double gwx =
          detail::lane_sum(d, [&](int i) { return double(g[i]) * double(w[i]) * double(xr[i]); });
      const T a = T(rs);
      const T b = T(rs * rs * rs * gwx / d);
      for (int i = 0; i < d; ++i) dxr[i] += a * (g[i] * w[i]) - xr[i] * b;
      for (int i = 0; i < d; ++i) pc[i] += double(g[i]) * double(xr[i]) * rs;
    }
  }
  // Pass 2, one block of kColChunk columns per iteration: dw[i] += Σ_chunks part[c, i] in chunk
  // order.
  const int nblocks = (d + detail::kColChunk - 1) / detail::kColChunk;
#pragma omp parallel for schedule(static) if (int64_t(nchunks) * d >= detail::kMinParallelWork)
  for (int cb = 0; cb < nblocks; ++cb) {
    constexpr int C = detail::kColChunk;
    const int c0 = cb * C;
    const int width = std::min(C, d - c0);
    double acc[C] = {};
    for (int c = 0; c < nchunks; ++c) {
      const double* pc = part + int64_t(c) * d + c0;
      for (int i = 0; i < width; ++i) acc[i] += pc[i];
    }
    for (int i = 0; i < width; ++i) dw[c0 + i] += T(acc[i]);
  }
}

// ---------------------------------------------------------------------------------------------------
// SwiGLU activation.  h13 [N,2F]: row t is [g (F) | v (F)]; a, da [N,F]; dh13 [N,2F].
//   forward:  a = silu(g)·v,  silu(g) = g·σ(g),  σ(g) = 1/(1+exp(−g))
//   backward: dg = da·v·σ(g)·(1 + g·(1 − σ(g))),  dv = da·silu(g);   dh13 = [dg | dv] (overwritten)
template <typename T>
void swiglu_forward(T* a, const T* h13, int N, int F) {
#pragma omp parallel for schedule(static) if (int64_t(N) * F >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    const T* g = h13 + int64_t(t) * 2 * F;
    const T* v = g + F;
    T* ar = a + int64_t(t) * F;
    for (int i = 0; i < F; ++i) {
      const T sig = T(1) / (T(1) + std::exp(-g[i]));
      ar[i] = g[i] * sig * v[i];
    }
  }
}

template <typename T>
void swiglu_backward(T* dh13, const T* da, const T* h13, int N, int F) {
#pragma omp parallel for schedule(static) if (int64_t(N) * F >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    const T* g = h13 + int64_t(t) * 2 * F;
    const T* v = g + F;
    const T* dar = da + int64_t(t) * F;
    T* dg = dh13 + int64_t(t) * 2 * F;
    T* dv = dg + F;
    for (int i = 0; i < F; ++i) {
      const T sig = T(1) / (T(1) + std::exp(-g[i]));
      dg[i] = dar[i] * v[i] * sig * (T(1) + g[i] * (T(1) - sig));
      dv[i] = dar[i] * g[i] * sig;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Row helpers.  (Backward of scale_rows: d in = scale_rows(dout, scale), d scale = row_dot(dout,
// in).
//                Backward of row_dot:    d a = scale_rows(b, dout), d b = scale_rows(a, dout).)
// scale_rows: out[r,:] = scale[r]·in[r,:]      in, out [rows, cols]; out may alias in.
template <typename T>
void scale_rows(T* out, const T* in, const T* scale, int rows, int cols) {
#pragma omp parallel for schedule(static) if (int64_t(rows) * cols >= detail::kMinParallelWork)
  for (int r = 0; r < rows; ++r) {
    const T* src = in + int64_t(r) * cols;
    T* dst = out + int64_t(r) * cols;
    const T s = scale[r];
    for (int i = 0; i < cols; ++i) dst[i] = s * src[i];
  }
}

// row_dot: out[r] = <a[r,:], b[r,:]>      a, b [rows, cols]; out [rows] (summed in double).
template <typename T>
void row_dot(T* out, const T* a, const T* b, int rows, int cols) {
#pragma omp parallel for schedule(static) if (int64_t(rows) * cols >= detail::kMinParallelWork)
  for (int r = 0; r < rows; ++r) {
    out[r] = T(detail::dot(a + int64_t(r) * cols, b + int64_t(r) * cols, cols));
  }
}

}  // namespace unipool::cpu
