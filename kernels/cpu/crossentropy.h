// CPU fused cross-entropy forward + backward over the LM head's logits. Header-only template on the
// float type T.
//
//   logits [rows, V] (row-major), targets [rows] in [0, V) (checked; throws unipool::Error
//   otherwise), losses [rows] (overwritten):
//     losses[r] = logsumexp(logits[r,:]) − logits[r, targets[r]]
//   when dloss != 0 the logits are overwritten IN PLACE by their gradient for loss = dloss·Σ_r
//   losses[r]:
//     logits[r,i] ← (softmax(logits[r,:])_i − [i == targets[r]]) · dloss
//   (dloss = 1/(tokens·micro-batches) for the engine's mean; dloss = 0 only evaluates, logits
//   untouched.)
//
// Per row (one row per iteration, so bitwise independent of the thread count):
//   pass 1: m = max_i x_i (vectorised);  pass 2: e_i = exp(x_i − m), Σ e_i in double (and, when
//   dloss
//   != 0, e_i stored over x_i);  then a scaling sweep over the (cache-resident) row: x_i ←
//   e_i·dloss/Σ. Only pass 2 evaluates exp: one exp per logit.
#pragma once
// Part of the CPU op list: include kernels/cpu/ops.h (which declares every op), not this file.
#include <cmath>
#include <cstdint>
#include <string>

#include "base/error.h"
#include "kernels/cpu/layers.h"

namespace unipool::cpu {

template <typename T>
void crossentropy_forward_backward(T* losses, T* logits, const int32_t* targets, int rows, int V,
                                   double dloss) {
  for (int r = 0; r < rows; ++r) {
    if (targets[r] < 0 || targets[r] >= V) {
      throw unipool::Error("crossentropy: target " + std::to_string(targets[r]) + " of row " +
                           std::to_string(r) + " is outside [0, " + std::to_string(V) + ")");
    }
  }
  const bool backward = dloss != 0.0;
#pragma omp parallel for schedule(static) if (int64_t(rows) * V >= detail::kMinParallelWork / 8)
  for (int r = 0; r < rows; ++r) {
    T* x = logits + int64_t(r) * V;
    const int tgt = targets[r];
    const T xt = x[tgt];
    const T m = detail::max_value(x, V);
    double sum = 0;
    if (backward) {
      for (int i = 0; i < V; ++i) {
        const T e = std::exp(x[i] - m);
        sum += e;
        x[i] = e;
      }
    } else {
      for (int i = 0; i < V; ++i) sum += std::exp(x[i] - m);
    }
    losses[r] = T(double(m) + std::log(sum) - double(xt));
    if (backward) {
      const T scale = T(dloss / sum);
      for (int i = 0; i < V; ++i) x[i] *= scale;
      x[tgt] -= T(dloss);
    }
  }
}

// Whether each row's target is its greedy token (zero-shot scoring, engine/zero_shot.h):
//   logits [rows, ld] (row-major, ld >= V: the padded vocabulary), targets [rows] in [0, V),
//   greedy [rows] (=):  greedy[r] = 1 when targets[r] == argmax_{i < V} logits[r, i], else 0,
//   the argmax being the lowest index among equal maxima (torch.argmax), so a target tied with an
//   earlier column is not greedy. The padding columns i >= V are never a token and are ignored.
template <typename T>
void target_is_argmax(int32_t* greedy, const T* logits, const int32_t* targets, int rows, int V,
                      int ld) {
  for (int r = 0; r < rows; ++r) {
    if (targets[r] < 0 || targets[r] >= V) {
      throw unipool::Error("target_is_argmax: target " + std::to_string(targets[r]) + " of row " +
                           std::to_string(r) + " is outside [0, " + std::to_string(V) + ")");
    }
  }
#pragma omp parallel for schedule(static) if (int64_t(rows) * V >= detail::kMinParallelWork / 8)
  for (int r = 0; r < rows; ++r) {
    const T* x = logits + int64_t(r) * ld;
    const int tgt = targets[r];
    const T xt = x[tgt];
    bool is_max = true;
    for (int i = 0; i < tgt && is_max; ++i) is_max = x[i] < xt;
    for (int i = tgt + 1; i < V && is_max; ++i) is_max = x[i] <= xt;
    greedy[r] = is_max ? 1 : 0;
  }
}

}  // namespace unipool::cpu
