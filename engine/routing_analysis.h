// The routing measures of `unipool probe` and of the evaluation lines' routing health
// (docs/analysis.md defines each one and names its source: the UniPool reference's validation
// diagnostics, the UniPool paper, the PathMoE paper). Pure functions on host data: counts of tokens
// per expert, and each token's chosen experts per layer.
#pragma once
#include <cstdint>
#include <vector>

namespace unipool::analysis {

using Counts = std::vector<double>;  // tokens (routing slots) per expert of one layer

// Shannon entropy of the distribution counts / Σ counts, in bits (0 when Σ = 0; empty experts add
// 0).
double entropy_bits(const Counts& counts);
// 2^entropy_bits: the number of equally used experts with the same entropy.
double effective_experts(const Counts& counts);
// max / mean tokens per expert (0 when Σ = 0).
double imbalance(const Counts& counts);
// The n most used experts, most used first (ties: the lower id first).
std::vector<int> top_experts(const Counts& counts, int n);
// Share of the tokens that went to the n most used experts (0 when Σ = 0).
double top_share(const Counts& counts, int n);

// One layer's row of the routing_stats op's counts (model/model.h, Model::routing_stats: [1 + 2R]
// per layer: tokens whose k gates are all 0, slots per expert, slots per expert with a nonzero
// gate), read: the share of `tokens` with no expert, the experts that got a nonzero gate, the
// slots per expert.
struct LayerStats {
  double zero_gate = 0;
  int experts_used = 0;
  Counts slots;
};
template <class T>
LayerStats layer_stats(const T* row, int width, double tokens) {
  LayerStats s;
  s.zero_gate = tokens > 0 ? double(row[0]) / tokens : 0.0;
  for (int e = 0; e < width; ++e) {
    s.slots.push_back(double(row[1 + e]));
    s.experts_used += row[1 + width + e] > 0 ? 1 : 0;
  }
  return s;
}

// Experts that no layer of their pool sent a token to, summed over the pools: layers[l] are the
// counts of layer l, pools are runs of `layers_per_pool` adjacent layers (1: a vanilla layer's own
// experts).
int dead_experts(const std::vector<Counts>& layers, int layers_per_pool);

// The training loop's zero-gate warning: the layers whose zero-gate share (per layer, this step)
// passed `threshold` (> 0) and were not reported yet. A reported layer (armed[l] = 0) is reported
// again only after its share fell back below threshold / 2, so a share hovering at the threshold
// does not warn every step. armed holds one flag per layer (1 = may warn; sized on first use).
std::vector<int> zero_gate_alarms(const std::vector<double>& zero_gate, double threshold,
                                  std::vector<char>* armed);

// Mean over pairs of layers (l ≠ l') of the Jaccard index of their top-n expert sets.
double mean_pairwise_jaccard(const std::vector<Counts>& layers, int n);

// For one K: the union of the layers' top-K sets and how much of the pool and of the tokens it
// covers (the reference's routing diagnostics).
struct UnionCoverage {
  int k = 0;
  int union_size = 0;        // |∪_l topK(l)|
  double pool_coverage = 0;  // union_size / width
  double saturation = 0;     // union_size / min(K·L, width)
  // share of each layer's tokens that went to an expert of the union: over all tokens, the mean
  // over layers, the smallest, the median (the lower middle for an even count) and the largest
  double token_weighted = 0, token_mean = 0, token_min = 0, token_median = 0, token_max = 0;
};
std::vector<UnionCoverage> union_coverage(const std::vector<Counts>& layers,
                                          const std::vector<int>& ks);

// Each token's top-1 expert per layer: choices[l][t]. For mean_reuse equal ids must mean the same
// expert: experts private to a layer (vanilla MoE) need ids distinct across layers (e.g. l·E + e).
using Choices = std::vector<std::vector<int32_t>>;

// Mean over tokens of U(x) / L, U(x) = the number of distinct experts token x meets over the L
// layers (the UniPool paper's distinct-expert reuse, App. E).
double mean_reuse(const Choices& top1);

// Paths (the PathMoE paper's measure): a token's path is its sequence of top-1 experts.
struct PathStats {
  int64_t tokens = 0;
  int64_t distinct = 0;     // distinct paths
  double entropy_bits = 0;  // of the path frequencies
  // (K, share of the tokens whose path is one of the K most frequent)
  std::vector<std::pair<int64_t, double>> top_share;
};
PathStats path_stats(const Choices& top1, const std::vector<int64_t>& ks);

// Adjacent-layer consistency of the chosen sets: sets[l][t] = token t's k chosen experts at layer
// l.
using ChoiceSets = std::vector<std::vector<std::vector<int32_t>>>;
// The Jaccard form: mean over tokens and adjacent layers of |S_l ∩ S_l+1| / |S_l ∪ S_l+1| (the
// PathMoE paper's reading; ids compared as they are).
double adjacent_jaccard(const ChoiceSets& sets);
// The permutation-invariant form: of the token pairs that share their top-1 expert at layer l, the
// share that also share it at layer l+1, pooled over adjacent layers (no meaning is given to ids).
double adjacent_pair_consistency(const Choices& top1);

}  // namespace unipool::analysis
