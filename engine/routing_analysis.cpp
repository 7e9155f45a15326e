// The routing measures (engine/routing_analysis.h, docs/analysis.md).
#include "engine/routing_analysis.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "base/error.h"

namespace unipool::analysis {

namespace {

double total(const Counts& c) {
  double s = 0;
  for (double x : c) s += x;
  return s;
}

// Σ over groups of n·(n − 1)/2: the pairs inside equal-key groups.
template <class Map>
double pairs_within(const Map& groups) {
  double pairs = 0;
  for (const auto& [key, n] : groups) pairs += double(n) * double(n - 1) / 2;
  return pairs;
}

}  // namespace

double entropy_bits(const Counts& counts) {
  const double sum = total(counts);
  if (sum <= 0) return 0;
  double h = 0;
  for (double x : counts)
    if (x > 0) h -= x / sum * std::log2(x / sum);
  return h;
}

double effective_experts(const Counts& counts) {
  return total(counts) > 0 ? std::exp2(entropy_bits(counts)) : 0.0;
}

double imbalance(const Counts& counts) {
  const double sum = total(counts);
  if (sum <= 0 || counts.empty()) return 0;
  return *std::max_element(counts.begin(), counts.end()) / (sum / double(counts.size()));
}

std::vector<int> top_experts(const Counts& counts, int n) {
  std::vector<int> order(counts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return counts[size_t(a)] > counts[size_t(b)]; });
  order.resize(std::min(order.size(), size_t(std::max(n, 0))));
  return order;
}

double top_share(const Counts& counts, int n) {
  const double sum = total(counts);
  if (sum <= 0) return 0;
  double in_top = 0;
  for (int e : top_experts(counts, n)) in_top += counts[size_t(e)];
  return in_top / sum;
}

int dead_experts(const std::vector<Counts>& layers, int layers_per_pool) {
  check(layers_per_pool >= 1, "dead_experts: need layers_per_pool >= 1");
  int dead = 0;
  for (size_t g0 = 0; g0 < layers.size(); g0 += size_t(layers_per_pool))
    for (size_t e = 0; e < layers[g0].size(); ++e) {
      double got = 0;
      for (size_t l = g0; l < std::min(layers.size(), g0 + size_t(layers_per_pool)); ++l)
        got += layers[l][e];
      dead += got == 0 ? 1 : 0;
    }
  return dead;
}

std::vector<int> zero_gate_alarms(const std::vector<double>& zero_gate, double threshold,
                                  std::vector<char>* armed) {
  std::vector<int> alarms;
  if (threshold <= 0) return alarms;
  armed->resize(zero_gate.size(), 1);
  for (size_t l = 0; l < zero_gate.size(); ++l) {
    if ((*armed)[l] && zero_gate[l] > threshold) {
      alarms.push_back(int(l));
      (*armed)[l] = 0;
    } else if (!(*armed)[l] && zero_gate[l] < threshold / 2) {
      (*armed)[l] = 1;
    }
  }
  return alarms;
}

double mean_pairwise_jaccard(const std::vector<Counts>& layers, int n) {
  const size_t L = layers.size();
  if (L < 2) return 0;
  std::vector<std::set<int>> tops;
  for (const Counts& c : layers) {
    const std::vector<int> t = top_experts(c, n);
    tops.emplace_back(t.begin(), t.end());
  }
  double sum = 0;
  for (size_t a = 0; a < L; ++a)
    for (size_t b = a + 1; b < L; ++b) {
      std::vector<int> both;
      std::set_intersection(tops[a].begin(), tops[a].end(), tops[b].begin(), tops[b].end(),
                            std::back_inserter(both));
      const double uni = double(tops[a].size() + tops[b].size() - both.size());
      sum += uni > 0 ? double(both.size()) / uni : 0.0;
    }
  return sum / (double(L) * double(L - 1) / 2);
}

std::vector<UnionCoverage> union_coverage(const std::vector<Counts>& layers,
                                          const std::vector<int>& ks) {
  check(!layers.empty(), "union_coverage: no layers");
  const int width = int(layers[0].size()), L = int(layers.size());
  std::vector<UnionCoverage> out;
  for (int k : ks) {
    if (k < 1 || k > width) continue;
    std::vector<char> in_union(size_t(width), 0);
    for (const Counts& c : layers)
      for (int e : top_experts(c, k)) in_union[size_t(e)] = 1;
    UnionCoverage u;
    u.k = k;
    for (char x : in_union) u.union_size += x;
    u.pool_coverage = double(u.union_size) / width;
    u.saturation = double(u.union_size) / std::min<double>(double(k) * L, width);
    std::vector<double> shares;
    double covered_all = 0, tokens_all = 0;
    for (const Counts& c : layers) {
      double covered = 0;
      for (int e = 0; e < width; ++e)
        if (in_union[size_t(e)]) covered += c[size_t(e)];
      const double t = total(c);
      covered_all += covered;
      tokens_all += t;
      shares.push_back(t > 0 ? covered / t : 0.0);
    }
    u.token_weighted = tokens_all > 0 ? covered_all / tokens_all : 0.0;
    u.token_mean = std::accumulate(shares.begin(), shares.end(), 0.0) / double(shares.size());
    std::sort(shares.begin(), shares.end());
    u.token_min = shares.front();
    u.token_max = shares.back();
    u.token_median = shares[(shares.size() - 1) / 2];
    out.push_back(u);
  }
  return out;
}

double mean_reuse(const Choices& top1) {
  const size_t L = top1.size();
  if (L == 0 || top1[0].empty()) return 0;
  const size_t T = top1[0].size();
  double sum = 0;
  std::vector<int32_t> seen(L);
  for (size_t t = 0; t < T; ++t) {
    for (size_t l = 0; l < L; ++l) seen[l] = top1[l][t];
    std::sort(seen.begin(), seen.end());
    sum += double(std::unique(seen.begin(), seen.end()) - seen.begin()) / double(L);
  }
  return sum / double(T);
}

PathStats path_stats(const Choices& top1, const std::vector<int64_t>& ks) {
  PathStats p;
  const size_t L = top1.size();
  if (L == 0) return p;
  const size_t T = top1[0].size();
  std::map<std::vector<int32_t>, int64_t> paths;
  std::vector<int32_t> path(L);
  for (size_t t = 0; t < T; ++t) {
    for (size_t l = 0; l < L; ++l) path[l] = top1[l][t];
    ++paths[path];
  }
  p.tokens = int64_t(T);
  p.distinct = int64_t(paths.size());
  std::vector<int64_t> freq;
  for (const auto& [key, n] : paths) {
    freq.push_back(n);
    const double f = double(n) / double(T);
    p.entropy_bits -= f * std::log2(f);
  }
  std::sort(freq.begin(), freq.end(), std::greater<int64_t>());
  for (int64_t k : ks) {
    if (k < 1) continue;
    int64_t in_top = 0;
    for (int64_t i = 0; i < std::min<int64_t>(k, int64_t(freq.size())); ++i)
      in_top += freq[size_t(i)];
    p.top_share.emplace_back(k, T > 0 ? double(in_top) / double(T) : 0.0);
  }
  return p;
}

double adjacent_jaccard(const ChoiceSets& sets) {
  const size_t L = sets.size();
  if (L < 2 || sets[0].empty()) return 0;
  const size_t T = sets[0].size();
  double sum = 0;
  for (size_t l = 0; l + 1 < L; ++l)
    for (size_t t = 0; t < T; ++t) {
      const std::set<int32_t> a(sets[l][t].begin(), sets[l][t].end());
      const std::set<int32_t> b(sets[l + 1][t].begin(), sets[l + 1][t].end());
      std::vector<int32_t> both;
      std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
      const double uni = double(a.size() + b.size() - both.size());
      sum += uni > 0 ? double(both.size()) / uni : 0.0;
    }
  return sum / (double(L - 1) * double(T));
}

double adjacent_pair_consistency(const Choices& top1) {
  const size_t L = top1.size();
  if (L < 2) return 0;
  double shared_here = 0, shared_both = 0;
  for (size_t l = 0; l + 1 < L; ++l) {
    std::map<int32_t, int64_t> here;
    std::map<std::pair<int32_t, int32_t>, int64_t> both;
    for (size_t t = 0; t < top1[l].size(); ++t) {
      ++here[top1[l][t]];
      ++both[{top1[l][t], top1[l + 1][t]}];
    }
    shared_here += pairs_within(here);
    shared_both += pairs_within(both);
  }
  return shared_here > 0 ? shared_both / shared_here : 0.0;
}

}  // namespace unipool::analysis
