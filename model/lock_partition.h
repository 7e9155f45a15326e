// UniPool-lock's partition of the pool (docs/model.md §UniPool-lock): which K = M/L experts each of
// the L layers keeps, solved at the candidate freeze from the smoothed count matrix C̃ [L][M]. It
// follows the reference (Centaurus-Alpha/UniPool ab70205, progressive_curriculum.py
// solve_final_allocation), which solves two problems.
//
// 1. The coverage-constrained partition (coverage_partition), the reference's binary MILP:
//
//   minimise  Σ_l Σ_e x[l][e] · tie(l, e)   over x[l][e] ∈ {0, 1}
//   subject to Σ_e x[l][e] = K for every layer l, Σ_l x[l][e] = 1 for every expert e, and
//              Σ_e C̃[l][e]·x[l][e] ≥ coverage · Σ_e C̃[l][e] for every layer l (coverage ∈ (0, 1]),
//
// with tie(l, e) = rank_l(e) + 1 + (e + 1)/(M + 1), rank_l(e) the position of e when layer l's
// experts are sorted by C̃[l][e] descending (a stable sort: ties to the lower id). (The reference
// minimises Σ x·(1 + 1e-7·tie) with "Σ_l x ≤ 1"; with M = L·K both differences are constants or
// equivalent.) Scaled by M + 1 the objective is an integer, tieint(l, e) = (rank_l(e) + 1)·(M + 1)
// + e + 1, so a branch-and-bound that stops when its gap to the bound is below 1 has proven the
// optimum exactly: COIN-OR CBC solves it with an absolute gap of 0.5 and no relative gap. The
// reference's HiGHS run keeps HiGHS's default gaps (relative 1e-4, absolute 1e-6), far wider than
// its 1e-7 tie-break, so it guarantees coverage and only a near-optimal tie-break; this returns the
// true optimum of the tie objective (one of them when several partitions tie).
//
// 2. The best-effort partition (best_effort_partition), which the reference falls back to when no
// partition meets the coverage threshold:
//
//   maximise  Σ_l Σ_{e ∈ set_l} C̃[l][e] / max(1, Σ_e C̃[l][e])  −  1e-7 · Σ_l Σ_{e ∈ set_l} tie(l,
//   e) subject to |set_l| = K for every layer, the sets disjoint (so they partition the M experts).
//
// It is an assignment problem: layer l's row repeated K times against the M experts, cost
// −C̃[l][e]/max(1, Σ C̃[l]) + 1e-7·tie(l, e); the Hungarian algorithm below finds a minimum-cost
// perfect matching exactly (up to floating-point rounding), the MILP's optimum.
#pragma once
#include <vector>

namespace unipool {

struct PoolPartition {
  std::vector<std::vector<int>> sets;  // [L] sorted expert ids, K each
  std::vector<double> coverage;  // [L] Σ_{e ∈ set_l} C̃[l][e] / Σ_e C̃[l][e] (1 for a zero row)
  // best_effort_partition: the value maximised in 2; coverage_partition with status optimal: the
  // tie sum Σ tieint minimised in 1 (coverage_tie_objective).
  double objective = 0;
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

// The coverage-constrained partition (1 above), or best_effort_partition's when no partition meets
// the coverage threshold; status says which.
enum class PartitionStatus { optimal, best_effort };
struct CoveragePartition {
  PoolPartition partition;
  PartitionStatus status = PartitionStatus::optimal;
  // false when the node limit stopped the search: with status optimal, a partition that meets the
  // coverage but whose tie objective is not proven minimal; with status best_effort, no partition
  // meeting the coverage was found but none was proven not to exist either.
  bool proven = true;
  // CBC runs it took: 1 normally; more when CBC died (an assertion of Debian's build: the run is
  // repeated with other settings) or let a layer through short of the threshold (repeated with the
  // coverage rows raised by 1e-6). 0 when built without CBC.
  int solver_runs = 0;
};

// The default node limit of coverage_partition's branch-and-bound. There is no time limit: the
// search is single-threaded and its result depends only on the input (and the CBC build).
constexpr int kCoverageNodeLimit = 1000000;

// counts: [L][M] non-negative, finite, M = L·K; 0 < coverage <= 1. Layer l meets the threshold when
// Σ_{e ∈ set_l} C̃[l][e] ≥ coverage·Σ_e C̃[l][e]; a zero row always does (its coverage counts as 1,
// as in best_effort_partition). The coverage rows are divided by the row's total and CBC keeps its
// feasibility tolerance (1e-7, relative then): should it let a layer through more than 1e-9 short,
// the solve is repeated with the rows raised by 1e-6 (docs/model.md §UniPool-lock). Each CBC run is
// made in a forked child process, since Debian's CBC can fail one of its assertions and abort; a
// dead child is replaced by one with other settings (three in all, then an Error). Every result is
// checked (K experts a layer, each expert once, the coverage within 1e-9 when optimal): a failed
// check is an Error. Without CBC (built without coinor-libcbc-dev: have_milp_solver() false) this
// is an Error saying how to get it.
CoveragePartition coverage_partition(const std::vector<std::vector<double>>& counts,
                                     double coverage, int node_limit = kCoverageNodeLimit);

// Σ_l Σ_{e ∈ set_l} tieint(l, e), the value coverage_partition minimises (an integer, exact in a
// double for any pool that fits in memory).
double coverage_tie_objective(const std::vector<std::vector<double>>& counts,
                              const std::vector<std::vector<int>>& sets);

// Whether coverage_partition can run: false when built without CBC.
bool have_milp_solver();

// Minimum-cost perfect matching of an n×n cost matrix (row-major): assignment[r] = the column of
// row r. The Hungarian algorithm with potentials (Jonker–Volgenant style), O(n³).
std::vector<int> min_cost_assignment(const std::vector<double>& cost, int n);

}  // namespace unipool
