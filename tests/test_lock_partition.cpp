// UniPool-lock's best-effort partition (model/lock_partition.h): the Hungarian algorithm against
// brute force over every permutation, and the partition against brute force over every partition
// of small pools (random counts, ties, zero rows, one layer wanting everything); the result is a
// partition into sets of K; bad input is an Error.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include "base/error.h"
#include "model/lock_partition.h"
#include "tests/catch.h"

using namespace unipool;

namespace {

using Counts = std::vector<std::vector<double>>;

// Every partition of {0..M-1} into L ordered sets of K, by recursion.
void for_each_partition(int L, int K,
                        const std::function<void(const std::vector<std::vector<int>>&)>& f) {
  const int M = L * K;
  std::vector<int> owner(size_t(M), -1);
  std::vector<std::vector<int>> sets(static_cast<size_t>(L));
  std::function<void(int)> place = [&](int e) {
    if (e == M) {
      f(sets);
      return;
    }
    for (int l = 0; l < L; ++l) {
      if (int(sets[size_t(l)].size()) == K) continue;
      sets[size_t(l)].push_back(e);
      place(e + 1);
      sets[size_t(l)].pop_back();
    }
  };
  place(0);
}

double brute_force_best(const Counts& c, std::vector<std::vector<int>>* best_sets, int* optima) {
  const int L = int(c.size()), K = int(c[0].size()) / L;
  double best = -1e300;
  *optima = 0;
  for_each_partition(L, K, [&](const std::vector<std::vector<int>>& sets) {
    const double v = best_effort_objective(c, sets);
    if (v > best + 1e-13) {
      best = v;
      *best_sets = sets;
      *optima = 1;
    } else if (std::fabs(v - best) <= 1e-13) {
      ++*optima;
    }
  });
  return best;
}

void check_is_partition(const PoolPartition& p, int L, int K) {
  REQUIRE(int(p.sets.size()) == L);
  std::vector<int> seen(size_t(L * K), 0);
  for (const auto& set : p.sets) {
    CHECK(int(set.size()) == K);
    CHECK(std::is_sorted(set.begin(), set.end()));
    for (int e : set) {
      REQUIRE(e >= 0);
      REQUIRE(e < L * K);
      ++seen[size_t(e)];
    }
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
}

}  // namespace

TEST_CASE("min_cost_assignment finds the cheapest permutation", "[lock]") {
  std::mt19937 gen(3);
  std::uniform_real_distribution<double> u(-5, 5);
  for (int n = 1; n <= 7; ++n) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<double> cost(size_t(n) * n);
      for (double& x : cost) x = trial % 4 == 0 ? std::round(u(gen)) : u(gen);  // some ties
      const std::vector<int> got = min_cost_assignment(cost, n);
      std::vector<int> perm(static_cast<size_t>(n));
      std::iota(perm.begin(), perm.end(), 0);
      double best = 1e300;
      do {
        double s = 0;
        for (int r = 0; r < n; ++r) s += cost[size_t(r) * n + perm[size_t(r)]];
        best = std::min(best, s);
      } while (std::next_permutation(perm.begin(), perm.end()));
      std::vector<int> sorted = got;
      std::sort(sorted.begin(), sorted.end());
      std::vector<int> identity(static_cast<size_t>(n));
      std::iota(identity.begin(), identity.end(), 0);
      REQUIRE(sorted == identity);  // a permutation
      double s = 0;
      for (int r = 0; r < n; ++r) s += cost[size_t(r) * n + got[size_t(r)]];
      INFO("n " << n << " trial " << trial);
      CHECK(s == Approx(best).margin(1e-9));
    }
  }
}

TEST_CASE("the best-effort partition is the optimum of every partition of small pools", "[lock]") {
  std::mt19937 gen(11);
  struct Shape {
    int L, K;
  };
  for (Shape sh : {Shape{2, 2}, Shape{3, 2}, Shape{2, 3}, Shape{4, 2}, Shape{3, 3}}) {
    const int L = sh.L, K = sh.K, M = L * K;
    for (int trial = 0; trial < 12; ++trial) {
      INFO("L " << L << " K " << K << " trial " << trial);
      Counts c(static_cast<size_t>(L), std::vector<double>(static_cast<size_t>(M)));
      for (auto& row : c)
        for (double& x : row) {
          switch (trial % 4) {
            case 0:
              x = double(gen() % 1000);
              break;  // ordinary counts
            case 1:
              x = double(gen() % 3);
              break;  // many ties
            case 2:
              x = trial == 2 ? 0.0 : double(gen() % 50);
              break;  // a zero matrix once
            default:
              x = double(gen() % 10) * 100.0;
              break;
          }
        }
      if (trial == 3) std::fill(c[0].begin(), c[0].end(), 1000.0);  // one layer wants everything
      const PoolPartition p = best_effort_partition(c);
      check_is_partition(p, L, K);
      std::vector<std::vector<int>> best_sets;
      int optima = 0;
      const double best = brute_force_best(c, &best_sets, &optima);
      CHECK(p.objective == Approx(best).margin(1e-12));
      if (optima == 1) CHECK(p.sets == best_sets);
      for (int l = 0; l < L; ++l) {
        double kept = 0, total = 0;
        for (int e = 0; e < M; ++e) total += c[size_t(l)][size_t(e)];
        for (int e : p.sets[size_t(l)]) kept += c[size_t(l)][size_t(e)];
        CHECK(p.coverage[size_t(l)] == Approx(total > 0 ? kept / total : 1.0));
      }
    }
  }
}

TEST_CASE("EMA-smoothed counts over the last validations", "[lock]") {
  const Counts a = {{4, 0}}, b = {{0, 4}}, c = {{2, 2}};
  // One snapshot: itself.
  CHECK(ema_smoothed_counts({a}, 5, 0.5) == a);
  // Weights ∝ 0.5, 0.25, 0.125 (newest first), normalised: 4/7, 2/7, 1/7.
  const Counts s = ema_smoothed_counts({a, b, c}, 5, 0.5);
  CHECK(s[0][0] == Approx(2.0 * 4 / 7 + 0.0 * 2 / 7 + 4.0 * 1 / 7));
  CHECK(s[0][1] == Approx(2.0 * 4 / 7 + 4.0 * 2 / 7 + 0.0 * 1 / 7));
  // Only the last `lookback` count.
  CHECK(ema_smoothed_counts({a, b, c}, 1, 0.5) == c);
  CHECK(ema_smoothed_counts({b, a, b, c}, 3, 0.5) == ema_smoothed_counts({a, b, c}, 3, 0.5));
  CHECK_THROWS_AS(ema_smoothed_counts({}, 5, 0.5), Error);
  CHECK_THROWS_AS(ema_smoothed_counts({a}, 0, 0.5), Error);
  CHECK_THROWS_AS(ema_smoothed_counts({a, Counts{{1, 2, 3}}}, 5, 0.5), Error);
}

TEST_CASE("the best-effort partition: the rank tie-break and bad input", "[lock]") {
  // Two layers with identical counts: coverage is the same for every split, so the tie-break
  // decides; the optimum gives the 4 experts by the (rank + (e+1)/(M+1)) order, which is the
  // same for both layers: any split scores the same, and the solver returns a partition.
  const Counts same = {{5, 5, 1, 1}, {5, 5, 1, 1}};
  check_is_partition(best_effort_partition(same), 2, 2);
  // Distinct preferences: each layer gets its favourites.
  const Counts apart = {{9, 8, 0, 0, 1, 0}, {0, 1, 9, 8, 0, 0}, {0, 0, 1, 0, 9, 8}};
  const PoolPartition p = best_effort_partition(apart);
  CHECK(p.sets == std::vector<std::vector<int>>{{0, 1}, {2, 3}, {4, 5}});
  CHECK(p.coverage[0] == Approx(17.0 / 18.0));
  CHECK_THROWS_AS(best_effort_partition({{1, 2, 3}, {1, 2, 3}}), Error);  // 3 experts, 2 layers
  CHECK_THROWS_AS(best_effort_partition({{1, 2}, {1}}), Error);
  CHECK_THROWS_AS(best_effort_partition({{1, -2}, {1, 2}}), Error);
  CHECK_THROWS_AS(best_effort_partition({{1, NAN}, {1, 2}}), Error);
  CHECK_THROWS_AS(best_effort_partition({}), Error);
}
