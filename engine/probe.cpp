// `unipool probe` (engine/probe.h, docs/analysis.md).
#include "engine/probe.h"

#include <cmath>
#include <cstdio>
#include <memory>

#include "base/error.h"
#include "base/fsutil.h"
#include "base/json_fields.h"
#include "base/random.h"
#include "data/loader.h"
#include "engine/backends.h"
#include "engine/checkpoint.h"
#include "engine/lock.h"
#include "engine/routing_analysis.h"
#include "engine/train.h"
#include "engine/zero_shot.h"
#include "model/layout.h"
#include "model/model.h"

namespace unipool {

namespace {

using analysis::Choices;
using analysis::ChoiceSets;
using analysis::Counts;

// The K of the union coverage (the reference's diagnostics), the top-K path shares.
const std::vector<int> kUnionKs = {1, 2, 3, 5, 8, 10, 16, 20, 32, 48, 64};
const std::vector<int64_t> kPathKs = {1,     2,      5,      10,     20,     50,    100,
                                      200,   500,    1000,   2000,   5000,   10000, 20000,
                                      50000, 100000, 200000, 500000, 1000000};

// The probe batches (then, for "matched", as many more), read once.
struct Batches {
  std::vector<std::vector<int32_t>> inputs, targets;
};

// What the probe batches' routing was: per layer the tokens per expert, and per token its top-1
// expert and its k experts, as the router names them (its own indices), and its top-1 expert in ids
// that name one expert across layers (pool g's expert e: g·M + e; vanilla layer l's expert e:
// l·E + e), for the reuse.
struct Seen {
  std::vector<Counts> counts;
  Choices top1, top1_global;
  ChoiceSets sets;
  std::vector<int64_t> stats;  // the routing_stats op's counts [L][1 + 2R] (zero gates, ...)
};

template <class B>
class Prober {
 public:
  Prober(const Config& c, const OpenedCheckpoint& ck, const Batches& batches)
      : c_(c),
        layout_(make_layout(c.model)),
        model_(layout_, c.loss, c.train.micro_batch, c.model.seq_len),
        batches_(batches) {
    std::vector<float> weights(layout_.arena_size);
    load_weights(ck.dir + "/model.safetensors", layout_, weights.data());
    model_.params_from_host(weights.data());
    const LockRouting lock = checkpoint_lock_routing(c, ck.state);  // UniPool-lock's sets
    if (!lock.sets.empty()) model_.set_lock_routing(lock);
  }

  // Mean LM loss over n batches from `first`; with `seen`, their routing.
  double run(int first, int n, Seen* seen) {
    const ModelConfig& m = c_.model;
    const int L = m.n_layer, R = m.router_width(), k = m.top_k;
    if (seen) {
      seen->counts.assign(size_t(L), Counts(size_t(R), 0.0));
      seen->top1.assign(size_t(L), {});
      seen->top1_global.assign(size_t(L), {});
      seen->sets.assign(size_t(L), {});
    }
    double sum = 0;
    model_.reset_routing_stats();
    model_.collect_routing_stats = seen != nullptr;
    for (int b = first; b < first + n; ++b) {
      sum += model_
                 .forward(batches_.inputs[size_t(b)].data(), batches_.targets[size_t(b)].data(),
                          /*train=*/false)
                 .lm;
      if (!seen) continue;
      for (int l = 0; l < L; ++l) {
        const std::vector<int32_t> ids = model_.routed_experts(l);
        const int32_t base = m.has_pools() ? layout_.layers[size_t(l)].pool * R : l * R;
        for (size_t t = 0; t * k < ids.size(); ++t) {
          std::vector<int32_t> chosen(ids.begin() + int64_t(t * k),
                                      ids.begin() + int64_t(t * k + k));
          for (int32_t e : chosen) seen->counts[size_t(l)][size_t(e)] += 1;
          seen->top1[size_t(l)].push_back(chosen[0]);
          seen->top1_global[size_t(l)].push_back(base + chosen[0]);
          seen->sets[size_t(l)].push_back(std::move(chosen));
        }
      }
    }
    model_.collect_routing_stats = false;
    if (seen) seen->stats = model_.routing_stats();
    return sum / n;
  }

  Model<B>& model() { return model_; }
  const Layout& layout() const { return layout_; }

 private:
  const Config& c_;
  Layout layout_;
  Model<B> model_;
  const Batches& batches_;
};

// A task scored alongside the probe: the checkpoint's weights for the scorer and the requests.
struct TaskProbe {
  ScoringModel model;
  LoadedTask task;
};

nlohmann::json number_or_null(double x) {
  return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr);
}

// The task's metrics with `perturbations` of the routing (none: the checkpoint's own).
template <class B>
TaskMetrics task_metrics_under(const TaskProbe& tp,
                               const std::vector<RoutingPerturbation>& perturbations,
                               const std::string& label) {
  ScoreOptions so;
  so.perturbations = perturbations;
  so.progress = label;
  return task_metrics(tp.task, score_requests<B>(tp.model, tp.task.requests, so));
}

// A random permutation of 0..n−1 (Fisher–Yates on a splitmix64 stream).
std::vector<int32_t> random_permutation(int n, uint64_t seed) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) p[size_t(i)] = i;
  for (int i = n - 1; i > 0; --i)
    std::swap(p[size_t(i)], p[size_t(splitmix64(seed + uint64_t(i)) % uint64_t(i + 1))]);
  return p;
}

template <class B>
nlohmann::json probe_on(const Config& c, const OpenedCheckpoint& ck, const Batches& batches,
                        const ProbeOptions& o, const TaskProbe* tp) {
  const ModelConfig& m = c.model;
  const int L = m.n_layer, R = m.router_width(), n = o.batches;
  Prober<B> prober(c, ck, batches);
  Seen seen;
  const double base = prober.run(0, n, &seen);

  nlohmann::json j;
  j["checkpoint"] = ck.dir;
  j["step"] = ck.step;
  j["batches"] = n;
  j["tokens"] = int64_t(n) * c.train.micro_batch * m.seq_len;
  j["seed"] = o.seed;
  j["val_loss"] = base;
  j["val_ppl"] = std::exp(base);
  TaskMetrics task_base;
  if (tp) {
    task_base = task_metrics_under<B>(*tp, {}, o.task);
    j["task"] = metrics_json(task_base, tp->task);
  }

  // Per layer.
  nlohmann::json layers = nlohmann::json::array();
  const double tokens = double(n) * c.train.micro_batch * m.seq_len;
  for (int l = 0; l < L; ++l) {
    const Counts& cl = seen.counts[size_t(l)];
    std::vector<int64_t> ints(cl.begin(), cl.end());
    // From the routing_stats op: tokens whose k gates are all 0 (the layer adds nothing to them),
    // experts that got a token with a nonzero gate.
    const analysis::LayerStats st =
        analysis::layer_stats(seen.stats.data() + size_t(l) * (1 + 2 * R), R, tokens);
    layers.push_back({{"counts", ints},
                      {"zero_gate", st.zero_gate},
                      {"experts_used", st.experts_used},
                      {"entropy_bits", analysis::entropy_bits(cl)},
                      {"effective_experts", analysis::effective_experts(cl)},
                      {"top16_share", analysis::top_share(cl, 16)},
                      {"imbalance", analysis::imbalance(cl)}});
  }
  j["layers"] = layers;

  // Per pool (a vanilla layer's experts are its own pool of one layer): dead experts, and for
  // pools shared by several layers the Jaccard of the layers' top-16 sets and the union coverage.
  const int group = m.has_pools() ? m.pool_layers() : 1;
  const int dead = analysis::dead_experts(seen.counts, group);
  nlohmann::json pools = nlohmann::json::array();
  for (int g0 = 0; g0 < L && group > 1; g0 += group) {
    const std::vector<Counts> of_pool(seen.counts.begin() + g0, seen.counts.begin() + g0 + group);
    nlohmann::json unions = nlohmann::json::array();
    for (const analysis::UnionCoverage& u : analysis::union_coverage(of_pool, kUnionKs))
      unions.push_back({{"k", u.k},
                        {"union_size", u.union_size},
                        {"pool_coverage", u.pool_coverage},
                        {"saturation", u.saturation},
                        {"token_coverage",
                         {{"weighted", u.token_weighted},
                          {"mean", u.token_mean},
                          {"min", u.token_min},
                          {"median", u.token_median},
                          {"max", u.token_max}}}});
    pools.push_back({{"layers", {g0, g0 + group - 1}},
                     {"top16_jaccard", analysis::mean_pairwise_jaccard(of_pool, 16)},
                     {"union_coverage", unions}});
  }
  j["dead_experts"] = dead;
  if (!pools.empty()) j["pools"] = pools;

  // Per token.
  j["reuse"] = analysis::mean_reuse(seen.top1_global);
  std::vector<int64_t> path_ks;  // the K up to the token count
  for (int64_t k : kPathKs)
    if (k <= int64_t(seen.top1[0].size())) path_ks.push_back(k);
  const analysis::PathStats paths = analysis::path_stats(seen.top1, path_ks);
  nlohmann::json shares = nlohmann::json::array();
  for (const auto& [k, share] : paths.top_share) shares.push_back({{"k", k}, {"share", share}});
  j["paths"] = {{"tokens", paths.tokens},
                {"distinct", paths.distinct},
                {"entropy_bits", paths.entropy_bits},
                {"top_share", shares},
                {"adjacent_jaccard", analysis::adjacent_jaccard(seen.sets)},
                {"adjacent_pair_consistency", analysis::adjacent_pair_consistency(seen.top1)}};

  // The random-routing probe, deep-half layers one at a time.
  Seen matched_set;
  if (m.has_pools()) prober.run(n, n, &matched_set);  // the "matched" experts' own batches
  const int matched = std::max(m.top_k, R / group);   // a layer's share of its pool (8 at M = 8L)
  nlohmann::json probes = nlohmann::json::array();
  std::map<std::string, std::pair<double, int>> mean_delta, mean_acc_delta;
  for (int l = L / 2; l < L; ++l) {
    std::vector<std::pair<std::string, std::vector<int32_t>>> modes;
    std::vector<int32_t> all(static_cast<size_t>(R));
    for (int e = 0; e < R; ++e) all[size_t(e)] = e;
    if (m.has_pools()) {
      const std::vector<int> top = analysis::top_experts(matched_set.counts[size_t(l)], matched);
      modes.emplace_back("matched", std::vector<int32_t>(top.begin(), top.end()));
      modes.emplace_back("full_pool", all);
    } else {
      modes.emplace_back("layer", all);
    }
    for (const auto& [mode, experts] : modes) {
      RoutingPerturbation p;
      p.kind = RoutingPerturbation::Kind::random;
      p.layer = l;
      p.experts = experts;
      p.seed = splitmix64(o.seed ^ (uint64_t(l) << 32));
      prober.model().set_routing_perturbations({p});
      const double loss = prober.run(0, n, nullptr);
      nlohmann::json entry = {
          {"layer", l}, {"mode", mode}, {"val_loss", loss}, {"delta", loss - base}};
      if (tp) {
        const TaskMetrics t = task_metrics_under<B>(
            *tp, {p}, o.task + " (layer " + std::to_string(l) + ", " + mode + ")");
        entry["acc"] = number_or_null(t.acc.value);
        entry["acc_delta"] = number_or_null(t.acc.value - task_base.acc.value);
        entry["acc_norm"] = number_or_null(t.acc_norm.value);
        entry["acc_norm_delta"] = number_or_null(t.acc_norm.value - task_base.acc_norm.value);
        mean_acc_delta[mode].first += t.acc.value - task_base.acc.value;
        mean_acc_delta[mode].second += 1;
      }
      probes.push_back(entry);
      mean_delta[mode].first += loss - base;
      mean_delta[mode].second += 1;
    }
  }
  j["random_probe"] = probes;
  nlohmann::json means = nlohmann::json::object(), acc_means = nlohmann::json::object();
  for (const auto& [mode, acc] : mean_delta) means[mode] = acc.first / acc.second;
  for (const auto& [mode, acc] : mean_acc_delta) acc_means[mode] = acc.first / acc.second;
  j["random_probe_mean_delta"] = means;
  if (tp) j["random_probe_mean_acc_delta"] = acc_means;

  // Expert-index shuffling: every layer's chosen ids through its own random permutation.
  std::vector<RoutingPerturbation> shuffles;
  for (int l = 0; l < L; ++l) {
    RoutingPerturbation p;
    p.kind = RoutingPerturbation::Kind::permute;
    p.layer = l;
    p.experts = random_permutation(R, splitmix64(o.seed + 0x5348554646ULL + uint64_t(l)));
    shuffles.push_back(std::move(p));
  }
  prober.model().set_routing_perturbations(shuffles);
  const double shuffled = prober.run(0, n, nullptr);
  prober.model().set_routing_perturbations({});
  j["shuffle"] = {{"val_loss", shuffled}, {"ppl_change", std::exp(shuffled - base) - 1}};
  return j;
}

void print_summary(const nlohmann::json& j, const std::string& path) {
  std::printf("val loss %.4f (ppl %.2f) over %lld tokens\n", j["val_loss"].get<double>(),
              j["val_ppl"].get<double>(), static_cast<long long>(j["tokens"].get<int64_t>()));
  std::printf(
      "layer | entropy bits | effective experts | top-16 share | max/mean | zero gate | "
      "experts used\n");
  int l = 0;
  for (const auto& layer : j["layers"])
    std::printf("%5d | %12.3f | %17.2f | %12.3f | %8.2f | %9.3f | %12d\n", l++,
                layer["entropy_bits"].get<double>(), layer["effective_experts"].get<double>(),
                layer["top16_share"].get<double>(), layer["imbalance"].get<double>(),
                layer["zero_gate"].get<double>(), layer["experts_used"].get<int>());
  std::printf(
      "dead experts %d | reuse U/L %.4f | paths: %lld distinct of %lld tokens, entropy "
      "%.2f bits, adjacent consistency %.3f (Jaccard %.3f)\n",
      j["dead_experts"].get<int>(), j["reuse"].get<double>(),
      static_cast<long long>(j["paths"]["distinct"].get<int64_t>()),
      static_cast<long long>(j["paths"]["tokens"].get<int64_t>()),
      j["paths"]["entropy_bits"].get<double>(),
      j["paths"]["adjacent_pair_consistency"].get<double>(),
      j["paths"]["adjacent_jaccard"].get<double>());
  for (auto it = j["random_probe_mean_delta"].begin(); it != j["random_probe_mean_delta"].end();
       ++it)
    std::printf("random routing (%s), deep-half layers: val loss %+.4f on average\n",
                it.key().c_str(), it.value().get<double>());
  if (j.contains("task")) {
    const nlohmann::json& t = j["task"];
    std::printf("%s: acc %.4f over %d examples\n", t["task"].get<std::string>().c_str(),
                t["acc"].get<double>(), t["n"].get<int>());
    for (auto it = j["random_probe_mean_acc_delta"].begin();
         it != j["random_probe_mean_acc_delta"].end(); ++it)
      std::printf("random routing (%s), deep-half layers: %s acc %+.4f on average\n",
                  it.key().c_str(), t["task"].get<std::string>().c_str(), it.value().get<double>());
  }
  std::printf("expert-index shuffling, every layer: ppl %+.1f%%\n",
              100 * j["shuffle"]["ppl_change"].get<double>());
  std::printf("written: %s\n", path.c_str());
  std::fflush(stdout);
}

}  // namespace

nlohmann::json run_probe(const ProbeOptions& o) {
  check(o.batches >= 1, "--batches: must be >= 1");
  const OpenedCheckpoint ck = open_checkpoint(o.checkpoint, o.overrides, /*check_data=*/true);
  const Config& c = ck.config;
  check(c.model.is_moe(), "unipool probe: " + ck.dir +
                              " is a dense model (model.ffn = dense): it has no routing to probe");
  const BackendKind backend = select_backend(c);
  // The first 2·batches validation micro-batches: the probe set, then the "matched" set.
  data::Loader loader(validation_spec(c), data::Split::valid);  // the run's evaluation data
  Batches batches;
  const size_t n = size_t(c.train.micro_batch) * c.model.seq_len;
  for (int b = 0; b < 2 * o.batches; ++b) {
    batches.inputs.emplace_back(n);
    batches.targets.emplace_back(n);
    loader.next_batch(c.train.micro_batch, batches.inputs.back().data(),
                      batches.targets.back().data());
  }
  std::printf(
      "unipool probe | %s (step %d) | %s, %d layers, width %d, top-%d | %d batches of %d x "
      "%d tokens, seed %llu | %s\n",
      ck.dir.c_str(), ck.step, name_of(c.model.ffn), c.model.n_layer, c.model.router_width(),
      c.model.top_k, o.batches, c.train.micro_batch, c.model.seq_len,
      static_cast<unsigned long long>(o.seed), backend_banner(backend).c_str());
  std::fflush(stdout);
  std::unique_ptr<TaskProbe> tp;
  if (!o.task.empty()) {
    check(!o.data.empty(), "--task needs --data FILE (the task's file: docs/evaluation.md)");
    tp = std::make_unique<TaskProbe>();
    tp->task = load_task(o.task, o.data, o.limit, make_codec("auto", c.model), c.model.seq_len);
    tp->model = load_scoring_model(ck);
  } else {
    check(o.data.empty() && o.limit == 0, "--data and --limit go with --task NAME");
  }
  const nlohmann::json j = on_backend(backend, [&](auto b) {
    using B = typename decltype(b)::type;
    check_memory(memory_need<B>(c, make_layout(c.model), Workload::eval), c, backend,
                 "unipool probe");
    return probe_on<B>(c, ck, batches, o, tp.get());
  });
  // DIR/probe.json for the DIR given (SPEC.md: a run directory or a checkpoint's).
  const std::string path = o.out.empty() ? o.checkpoint + "/probe.json" : o.out;
  write_file_atomic(path, dump_json(j, 1) + "\n");
  print_summary(j, path);
  return j;
}

}  // namespace unipool
