// The routing measures (engine/routing_analysis.h) on hand-made routings with known answers: one
// expert takes every token, uniform routing, two layers with identical choices, small worked
// examples for paths and consistency.
#include <cmath>
#include <vector>

#include "engine/routing_analysis.h"
#include "tests/catch.h"

using namespace unipool::analysis;

TEST_CASE("routing measures of one layer: collapse, uniform, ties", "[analysis]") {
  const Counts collapsed = {0, 0, 120, 0, 0, 0, 0, 0};
  CHECK(entropy_bits(collapsed) == 0);
  CHECK(effective_experts(collapsed) == 1);
  CHECK(imbalance(collapsed) == 8);
  CHECK(top_experts(collapsed, 1) == std::vector<int>{2});
  CHECK(top_share(collapsed, 1) == 1);

  const Counts uniform(16, 5.0);
  CHECK(entropy_bits(uniform) == Approx(4.0));
  CHECK(effective_experts(uniform) == Approx(16.0));
  CHECK(imbalance(uniform) == 1);
  CHECK(top_experts(uniform, 3) == std::vector<int>{0, 1, 2});  // ties: lower ids first
  CHECK(top_share(uniform, 4) == Approx(0.25));

  const Counts two = {30, 10, 0, 0};  // p = 3/4, 1/4
  CHECK(entropy_bits(two) == Approx(-(0.75 * std::log2(0.75) + 0.25 * std::log2(0.25))));
  CHECK(imbalance(two) == Approx(3.0));
  const Counts none = {0, 0, 0};
  CHECK(entropy_bits(none) == 0);
  CHECK(effective_experts(none) == 0);
  CHECK(top_share(none, 2) == 0);
}

TEST_CASE("routing measures over layers: Jaccard of top sets, union coverage", "[analysis]") {
  // Two layers on the same expert: their top-1 sets are equal; union 1 expert of 8.
  const std::vector<Counts> same = {{0, 9, 0, 0, 0, 0, 0, 0}, {0, 4, 0, 0, 0, 0, 0, 0}};
  CHECK(mean_pairwise_jaccard(same, 1) == 1);
  const auto u = union_coverage(same, {1, 2, 16});
  REQUIRE(u.size() == 2);  // K = 16 > width is skipped
  CHECK(u[0].k == 1);
  CHECK(u[0].union_size == 1);
  CHECK(u[0].pool_coverage == Approx(1.0 / 8));
  CHECK(u[0].saturation == Approx(0.5));  // 1 of min(1·2, 8)
  CHECK(u[0].token_weighted == 1);
  CHECK(u[0].token_min == 1);

  // Three layers, each on its own pair of experts, a little spill: worked by hand.
  const std::vector<Counts> apart = {{6, 2, 0, 0, 0, 0}, {0, 0, 6, 2, 0, 0}, {1, 0, 0, 0, 6, 3}};
  CHECK(mean_pairwise_jaccard(apart, 2) == 0);  // top-2 sets {0,1} {2,3} {4,5}
  const auto v = union_coverage(apart, {1, 2});
  REQUIRE(v.size() == 2);
  CHECK(v[0].union_size == 3);  // {0, 2, 4}
  CHECK(v[0].saturation == 1);
  // Layer 2's tokens in {0, 2, 4}: 1 + 6 of 10; layers 0, 1: 6 of 8.
  CHECK(v[0].token_min == Approx(0.7));
  CHECK(v[0].token_max == Approx(0.75));
  CHECK(v[0].token_median == Approx(0.75));
  CHECK(v[0].token_weighted == Approx((6.0 + 6 + 7) / 26));
  CHECK(v[0].token_mean == Approx((0.75 + 0.75 + 0.7) / 3));
  CHECK(v[1].union_size == 6);
  CHECK(v[1].pool_coverage == 1);
  CHECK(v[1].token_weighted == 1);
}

TEST_CASE("reuse, paths and adjacent-layer consistency on worked examples", "[analysis]") {
  // Two layers with identical choices: every token meets one expert twice.
  const Choices identical = {{3, 3, 5, 7}, {3, 3, 5, 7}};
  CHECK(mean_reuse(identical) == 0.5);
  CHECK(adjacent_pair_consistency(identical) == 1);
  ChoiceSets sets = {{{3}, {3}, {5}, {7}}, {{3}, {3}, {5}, {7}}};
  CHECK(adjacent_jaccard(sets) == 1);
  const PathStats same = path_stats(identical, {1, 2, 10});
  CHECK(same.tokens == 4);
  CHECK(same.distinct == 3);  // (3,3) twice, (5,5), (7,7)
  CHECK(same.entropy_bits == Approx(1.5));
  REQUIRE(same.top_share.size() == 3);
  CHECK(same.top_share[0].second == 0.5);
  CHECK(same.top_share[1].second == 0.75);
  CHECK(same.top_share[2].second == 1);

  // Distinct experts everywhere: reuse 1; one path per token.
  const Choices distinct = {{0, 1, 2}, {3, 4, 5}, {6, 7, 8}};
  CHECK(mean_reuse(distinct) == 1);
  const PathStats all = path_stats(distinct, {1});
  CHECK(all.distinct == 3);
  CHECK(all.entropy_bits == Approx(std::log2(3.0)));

  // Pairs: layer 0 = [0, 0, 1, 1] shares within (t0, t1) and (t2, t3); layer 1 = [2, 2, 2, 3]
  // keeps (t0, t1) together only: 1 of 2.
  CHECK(adjacent_pair_consistency({{0, 0, 1, 1}, {2, 2, 2, 3}}) == 0.5);
  // Top-2 sets {0, 1} then {1, 2}: Jaccard 1/3; a second token {4, 5} then {4, 5}: 1.
  const ChoiceSets two = {{{0, 1}, {4, 5}}, {{1, 2}, {5, 4}}};
  CHECK(adjacent_jaccard(two) == Approx((1.0 / 3 + 1) / 2));
}

TEST_CASE("dead experts per pool, and a layer's row of the routing_stats counts", "[analysis]") {
  // Two pools of two layers over 3 experts: pool 0 never uses expert 2, pool 1 uses all.
  const std::vector<Counts> layers = {{4, 0, 0}, {0, 3, 0}, {1, 0, 0}, {0, 2, 5}};
  CHECK(dead_experts(layers, 2) == 1);
  CHECK(dead_experts(layers, 1) == 7);  // each layer alone: 2 + 2 + 2 + 1
  CHECK(dead_experts(layers, 4) == 0);
  // [zero-gate tokens, slots per expert ×3, nonzero-gate slots per expert ×3] over 10 tokens.
  const int64_t row[] = {4, 6, 3, 1, 5, 0, 1};
  const LayerStats s = layer_stats(row, 3, 10.0);
  CHECK(s.zero_gate == 0.4);
  CHECK(s.experts_used == 2);
  CHECK(s.slots == Counts{6, 3, 1});
  CHECK(layer_stats(row, 3, 0.0).zero_gate == 0);
}
