// CPU MoE dispatch: the expert-major plan and the row moves between token-major and expert-major
// buffers (docs/model.md §Top-k, dispatch and combine: dispatch ordered by (expert, token), stable; the combine sums a token's k
// slots in slot order; no atomics). Header-only templates on the float type T.
//
// Vocabulary: slot = t·k + j is token t's j-th choice (ids[slot] its expert). The expert-major
// buffer has N·k rows ordered by (expert, token), stable: expert e owns rows offsets[e] ..
// offsets[e+1]−1, and inside one expert the rows are in increasing slot (= token) order.
// row_slot[r] is the slot held by row r, slot_row[slot] the row holding slot; they are inverse
// permutations of 0..N·k−1.
#pragma once
// Part of the CPU op list: include kernels/cpu/ops.h (which declares every op), not this file.
#include <algorithm>
#include <cstdint>
#include <string>

#include "base/error.h"
#include "kernels/cpu/layers.h"

namespace unipool::cpu {

// dispatch_plan: counting sort of the N·k slots by expert, O(N·k + E), serial (it is integer work
// of a few µs). offsets [E+1], row_slot [N·k], slot_row [N·k], all overwritten. ids [N,k] in [0, E)
// (checked; throws unipool::Error otherwise). offsets[e+1] − offsets[e] is expert e's token count.
inline void dispatch_plan(int32_t* offsets, int32_t* row_slot, int32_t* slot_row,
                          const int32_t* ids, int N, int k, int E) {
  const int32_t n = N * k;
  // offsets[e+1] = count of e ...
  for (int e = 0; e <= E; ++e) offsets[e] = 0;
  for (int32_t slot = 0; slot < n; ++slot) {
    const int32_t e = ids[slot];
    if (e < 0 || e >= E) {
      throw unipool::Error("dispatch_plan: expert id " + std::to_string(e) + " at slot " +
                           std::to_string(slot) + " is outside [0, " + std::to_string(E) + ")");
    }
    ++offsets[e + 1];
  }
  // ... then offsets[e+1] = start of e (shifted exclusive prefix sum) ...
  int32_t run = 0;
  for (int e = 0; e < E; ++e) {
    const int32_t c = offsets[e + 1];
    offsets[e + 1] = run;
    run += c;
  }
  // ... used as e's write cursor; after the pass offsets[e+1] = end of e = start of e+1.
  for (int32_t slot = 0; slot < n; ++slot) {
    const int32_t r = offsets[ids[slot] + 1]++;
    row_slot[r] = slot;
    slot_row[slot] = r;
  }
}

// gather_rows: dst[r,:] = src[row_slot[r] / k, :]     src [N,d] token-major, dst [N·k,d]
// expert-major. Its backward is sum_slot_rows (accumulate as needed).
template <typename T>
void gather_rows(T* dst, const T* src, const int32_t* row_slot, int N, int k, int d) {
  const int n = N * k;
#pragma omp parallel for schedule(static) if (int64_t(n) * d >= detail::kMinParallelWork)
  for (int r = 0; r < n; ++r) {
    const T* s = src + int64_t(row_slot[r] / k) * d;
    T* o = dst + int64_t(r) * d;
    for (int i = 0; i < d; ++i) o[i] = s[i];
  }
}

// sum_slot_rows: dst[t,:] (+)= Σ_{j<k} src[slot_row[t·k+j], :]     src [N·k,d] expert-major, dst
// [N,d]. The combine of the expert outputs and the backward of gather_rows. Summed in slot order j
// = 0..k−1: accumulate → ((dst + s_0) + s_1) + …;  overwrite → (s_0 + s_1) + … .
template <typename T>
void sum_slot_rows(T* dst, const T* src, const int32_t* slot_row, int N, int k, int d,
                   bool accumulate) {
#pragma omp parallel for schedule(static) if (int64_t(N) * k * d >= detail::kMinParallelWork)
  for (int t = 0; t < N; ++t) {
    T* o = dst + int64_t(t) * d;
    const int32_t* sr = slot_row + int64_t(t) * k;
    int j = 0;
    if (!accumulate) {
      const T* s = src + int64_t(sr[0]) * d;
      for (int i = 0; i < d; ++i) o[i] = s[i];
      j = 1;
    }
    for (; j < k; ++j) {
      const T* s = src + int64_t(sr[j]) * d;
      for (int i = 0; i < d; ++i) o[i] += s[i];
    }
  }
}

// slot_to_row_values: row_vals[r] = slot_vals[row_slot[r]]   (e.g. gates into expert-major order)
// row_to_slot_values: slot_vals[row_slot[r]] = row_vals[r]   (e.g. expert-major dgates back to
// slots) n = N·k; both overwrite their whole output.
template <typename T>
void slot_to_row_values(T* row_vals, const T* slot_vals, const int32_t* row_slot, int n) {
  for (int r = 0; r < n; ++r) row_vals[r] = slot_vals[row_slot[r]];
}

template <typename T>
void row_to_slot_values(T* slot_vals, const T* row_vals, const int32_t* row_slot, int n) {
  for (int r = 0; r < n; ++r) slot_vals[row_slot[r]] = row_vals[r];
}

}  // namespace unipool::cpu
