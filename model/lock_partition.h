// UniPool-lock's partition of the pool (docs/model.md §UniPool-lock, in progress): which K = M/L
// experts each of the L layers keeps. This file holds the best-effort partition, the one the
// reference (Centaurus-Alpha/UniPool ab70205, progressive_curriculum.py solve_final_allocation)
// falls back to when no partition meets the coverage threshold:
//
//   maximise  Σ_l Σ_{e ∈ set_l} C̃[l][e] / max(1, Σ_e C̃[l][e])  −  1e-7 · Σ_l Σ_{e ∈ set_l} tie(l,
//   e) subject to |set_l| = K for every layer, the sets disjoint (so they partition the M experts),
//
// with tie(l, e) = rank_l(e) + 1 + (e + 1)/(M + 1), rank_l(e) the position of e when layer l's
// experts are sorted by C̃[l][e] descending (a stable sort: ties to the lower id). It is an
// assignment problem: layer l's row repeated K times against the M experts, cost
// −C̃[l][e]/max(1, Σ C̃[l]) + 1e-7·tie(l, e); the Hungarian algorithm below finds a minimum-cost
// perfect matching exactly (up to floating-point rounding), the MILP's optimum.
#pragma once
#include <vector>

namespace unipool {

struct PoolPartition {
  std::vector<std::vector<int>> sets;  // [L] sorted expert ids, K each
  std::vector<double> coverage;  // [L] Σ_{e ∈ set_l} C̃[l][e] / Σ_e C̃[l][e] (1 for a zero row)
  double objective = 0;          // the maximised value above
};

// The smoothed counts the partition is solved from: the last `lookback` validation snapshots of
// the [L][M] routing counts (history, oldest first), weighted w_a ∝ alpha·(1 − alpha)^a for the
// a-th newest (a = 0 the newest) and normalised to sum 1 (the reference's ema_smoothed_counts).
// With one snapshot: that snapshot. Error on an empty history, a bad alpha or mismatched shapes.
std::vector<std::vector<double>> ema_smoothed_counts(
    const std::vector<std::vector<std::vector<double>>>& history, int lookback, double alpha);

// counts: [L][M] non-negative, finite; M = L·K. Error on a bad shape or value.
PoolPartition best_effort_partition(const std::vector<std::vector<double>>& counts);

// The value the best-effort problem maximises for a given partition (tests, diagnostics).
double best_effort_objective(const std::vector<std::vector<double>>& counts,
                             const std::vector<std::vector<int>>& sets);

// Minimum-cost perfect matching of an n×n cost matrix (row-major): assignment[r] = the column of
// row r. The Hungarian algorithm with potentials (Jonker–Volgenant style), O(n³).
std::vector<int> min_cost_assignment(const std::vector<double>& cost, int n);

}  // namespace unipool
