#include "model/lock_partition.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "base/error.h"

namespace unipool {

namespace {

// tie(l, e) for every layer: rank by count descending (stable: lower id first), + 1 + (e+1)/(M+1).
std::vector<std::vector<double>> tie_breaks(const std::vector<std::vector<double>>& counts) {
  const int L = int(counts.size()), M = int(counts[0].size());
  std::vector<std::vector<double>> tie(static_cast<size_t>(L),
                                       std::vector<double>(static_cast<size_t>(M)));
  for (int l = 0; l < L; ++l) {
    std::vector<int> order(static_cast<size_t>(M));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return counts[size_t(l)][size_t(a)] > counts[size_t(l)][size_t(b)];
    });
    for (int rank = 0; rank < M; ++rank) {
      const int e = order[size_t(rank)];
      tie[size_t(l)][size_t(e)] = rank + 1 + double(e + 1) / double(M + 1);
    }
  }
  return tie;
}

double row_sum(const std::vector<double>& row) {
  double s = 0;
  for (double x : row) s += x;
  return s;
}

void check_counts(const std::vector<std::vector<double>>& counts) {
  check(!counts.empty() && !counts[0].empty(), "pool partition: empty count matrix");
  const size_t L = counts.size(), M = counts[0].size();
  check(M % L == 0, "pool partition: " + std::to_string(M) + " experts do not split into " +
                        std::to_string(L) + " equal sets");
  for (const auto& row : counts) {
    check(row.size() == M, "pool partition: the count rows differ in length");
    for (double x : row)
      check(std::isfinite(x) && x >= 0, "pool partition: counts must be finite and >= 0");
  }
}

}  // namespace

std::vector<int> min_cost_assignment(const std::vector<double>& cost, int n) {
  check(n >= 0 && cost.size() == size_t(n) * size_t(n), "min_cost_assignment: need an n×n matrix");
  // Rows and columns 1-based; u, v the potentials, p[j] the row matched to column j, way[j] the
  // previous column on the shortest augmenting path. For each row, a Dijkstra-like search over
  // reduced costs adds it to the matching (the classic e-maxx formulation).
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(size_t(n) + 1, 0.0), v(size_t(n) + 1, 0.0);
  std::vector<int> p(size_t(n) + 1, 0), way(size_t(n) + 1, 0);
  for (int i = 1; i <= n; ++i) {
    p[0] = i;
    int j0 = 0;
    std::vector<double> minv(size_t(n) + 1, inf);
    std::vector<char> used(size_t(n) + 1, 0);
    do {
      used[size_t(j0)] = 1;
      const int i0 = p[size_t(j0)];
      double delta = inf;
      int j1 = 0;
      for (int j = 1; j <= n; ++j) {
        if (used[size_t(j)]) continue;
        const double cur =
            cost[size_t(i0 - 1) * size_t(n) + size_t(j - 1)] - u[size_t(i0)] - v[size_t(j)];
        if (cur < minv[size_t(j)]) {
          minv[size_t(j)] = cur;
          way[size_t(j)] = j0;
        }
        if (minv[size_t(j)] < delta) {
          delta = minv[size_t(j)];
          j1 = j;
        }
      }
      for (int j = 0; j <= n; ++j) {
        if (used[size_t(j)]) {
          u[size_t(p[size_t(j)])] += delta;
          v[size_t(j)] -= delta;
        } else {
          minv[size_t(j)] -= delta;
        }
      }
      j0 = j1;
    } while (p[size_t(j0)] != 0);
    do {
      const int j1 = way[size_t(j0)];
      p[size_t(j0)] = p[size_t(j1)];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int> assignment(size_t(n), -1);
  for (int j = 1; j <= n; ++j) assignment[size_t(p[size_t(j)] - 1)] = j - 1;
  return assignment;
}

double best_effort_objective(const std::vector<std::vector<double>>& counts,
                             const std::vector<std::vector<int>>& sets) {
  check_counts(counts);
  const auto tie = tie_breaks(counts);
  double value = 0;
  for (size_t l = 0; l < sets.size(); ++l) {
    const double scale = std::max(1.0, row_sum(counts[l]));
    for (int e : sets[l]) value += counts[l][size_t(e)] / scale - 1e-7 * tie[l][size_t(e)];
  }
  return value;
}

std::vector<std::vector<double>> ema_smoothed_counts(
    const std::vector<std::vector<std::vector<double>>>& history, int lookback, double alpha) {
  check(!history.empty(), "ema_smoothed_counts: no validation counts yet");
  check(lookback >= 1 && alpha > 0 && alpha <= 1,
        "ema_smoothed_counts: need lookback >= 1 and 0 < alpha <= 1");
  const int n = std::min<int>(lookback, int(history.size()));
  const auto& newest = history.back();
  std::vector<double> w(static_cast<size_t>(n));
  double total = 0;
  for (int a = 0; a < n; ++a) total += w[size_t(a)] = alpha * std::pow(1.0 - alpha, a);
  std::vector<std::vector<double>> out(newest.size());
  for (size_t l = 0; l < newest.size(); ++l) out[l].assign(newest[l].size(), 0.0);
  for (int a = 0; a < n; ++a) {
    const auto& snap = history[history.size() - 1 - size_t(a)];
    check(snap.size() == newest.size(), "ema_smoothed_counts: snapshots of different shapes");
    for (size_t l = 0; l < snap.size(); ++l) {
      check(snap[l].size() == newest[l].size(),
            "ema_smoothed_counts: snapshots of different shapes");
      for (size_t e = 0; e < snap[l].size(); ++e) out[l][e] += w[size_t(a)] / total * snap[l][e];
    }
  }
  return out;
}

PoolPartition best_effort_partition(const std::vector<std::vector<double>>& counts) {
  check_counts(counts);
  const int L = int(counts.size()), M = int(counts[0].size()), K = M / L;
  const auto tie = tie_breaks(counts);
  // Row r = l·K + j (slot j of layer l) against expert e.
  std::vector<double> cost(size_t(M) * size_t(M));
  for (int l = 0; l < L; ++l) {
    const double scale = std::max(1.0, row_sum(counts[size_t(l)]));
    for (int j = 0; j < K; ++j)
      for (int e = 0; e < M; ++e)
        cost[size_t(l * K + j) * size_t(M) + size_t(e)] =
            -counts[size_t(l)][size_t(e)] / scale + 1e-7 * tie[size_t(l)][size_t(e)];
  }
  const std::vector<int> assignment = min_cost_assignment(cost, M);
  PoolPartition out;
  out.sets.assign(size_t(L), {});
  for (int r = 0; r < M; ++r) out.sets[size_t(r / K)].push_back(assignment[size_t(r)]);
  for (int l = 0; l < L; ++l) {
    std::vector<int>& set = out.sets[size_t(l)];
    std::sort(set.begin(), set.end());
    const double total = row_sum(counts[size_t(l)]);
    double kept = 0;
    for (int e : set) kept += counts[size_t(l)][size_t(e)];
    out.coverage.push_back(total > 0 ? kept / total : 1.0);
  }
  out.objective = best_effort_objective(counts, out.sets);
  return out;
}

}  // namespace unipool
