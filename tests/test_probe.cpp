// `unipool probe` (engine/probe.h) on small trained checkpoints: the measures' invariants, the same
// file on 1 and 2 threads and for the same seed, the random probe of a layer leaving the layers
// before it untouched and choosing among its candidates, a clear error for a dense model, the
// probe on the GPU against the CPU's.
#include <cmath>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/fsutil.h"
#include "engine/config.h"
#include "engine/probe.h"
#include "engine/train.h"
#include "model/init.h"
#include "model/layout.h"
#include "model/model.h"
#include "tests/catch.h"
#include "tests/cuda_test_util.h"
#include "tests/small_config.h"
#include "tests/tempdir.h"
#include "tests/train_fixtures.h"

using namespace unipool;
using namespace unipool::test;
using json = nlohmann::json;

namespace {

// A small model of `ffn` trained 6 steps into tmp/name; returns its checkpoint directory.
std::string trained(const TempDir& tmp, const std::string& corpus, FfnKind ffn,
                    const std::string& name, int top_k = 1) {
  Config c = small_config(ffn, corpus, tmp / name);
  c.model.top_k = top_k;
  c.train.ckpt_every = 6;
  c.train.eval_every = 0;
  run_train(c, {});
  return tmp / (name + "/ckpt-6");
}

json probe(const std::string& ckpt, const std::string& out, std::vector<std::string> sets = {},
           uint64_t seed = 7) {
  ProbeOptions o;
  o.checkpoint = ckpt;
  o.batches = 2;
  o.seed = seed;
  o.out = out;
  o.overrides = std::move(sets);
  return run_probe(o);
}

}  // namespace

TEST_CASE("probe: the measures of a UniPool checkpoint, reproducible on any thread count",
          "[probe]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const std::string ckpt = trained(tmp, corpus, FfnKind::unipool, "unipool", 2);
  const json a = probe(ckpt, tmp / "a.json", {"train.threads=1"});
  const json b = probe(ckpt, tmp / "b.json", {"train.threads=2"});
  CHECK(a == b);
  CHECK(json::parse(read_file(tmp / "a.json")) == a);
  CHECK(probe(ckpt, tmp / "c.json", {}, 8)["random_probe"] != a["random_probe"]);  // the seed

  // 2 layers, a pool of 8, top-2, 2 batches of 4 × 32 tokens.
  REQUIRE(a["layers"].size() == 2);
  CHECK(a["tokens"] == 256);
  for (const json& layer : a["layers"]) {
    REQUIRE(layer["counts"].size() == 8);
    int64_t sum = 0;
    for (const json& x : layer["counts"]) sum += x.get<int64_t>();
    CHECK(sum == 256 * 2);  // every token's two slots
    CHECK(layer["entropy_bits"].get<double>() > 0);
    CHECK(layer["entropy_bits"].get<double>() <= 3.0);
    CHECK(layer["top16_share"] == 1.0);  // 16 > the 8 experts
    CHECK(layer["zero_gate"].get<double>() >= 0);
    CHECK(layer["zero_gate"].get<double>() <= 1);
    CHECK(layer["experts_used"].get<int>() >= 0);
    CHECK(layer["experts_used"].get<int>() <= 8);
    if (layer["zero_gate"].get<double>() < 1) CHECK(layer["experts_used"].get<int>() >= 1);
  }
  CHECK(a["dead_experts"].get<int>() >= 0);
  CHECK(a["reuse"].get<double>() >= 0.5);  // U ≥ 1 of 2 layers
  CHECK(a["reuse"].get<double>() <= 1.0);
  CHECK(a["paths"]["distinct"].get<int64_t>() >= 1);
  CHECK(a["paths"]["distinct"].get<int64_t>() <= 64);  // 8 × 8 top-1 pairs
  REQUIRE(a["pools"].size() == 1);
  CHECK(a["pools"][0]["union_coverage"][0]["k"] == 1);
  // The random probe: the deep half (layer 1), matched and full pool, each a loss change.
  REQUIRE(a["random_probe"].size() == 2);
  std::set<std::string> modes;
  for (const json& p : a["random_probe"]) {
    CHECK(p["layer"] == 1);
    modes.insert(p["mode"].get<std::string>());
    CHECK(p["delta"].get<double>() ==
          Approx(p["val_loss"].get<double>() - a["val_loss"].get<double>()));
  }
  CHECK(modes == std::set<std::string>{"matched", "full_pool"});
  CHECK(a["shuffle"]["ppl_change"].get<double>() != 0);
}

TEST_CASE("probe: vanilla MoE probes among a layer's own experts, a dense model is refused",
          "[probe]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const json moe = probe(trained(tmp, corpus, FfnKind::moe, "moe"), tmp / "moe.json");
  CHECK(moe["reuse"] == 1.0);  // private experts: every layer's is another one
  CHECK(!moe.contains("pools"));
  REQUIRE(moe["random_probe"].size() == 1);
  CHECK(moe["random_probe"][0]["mode"] == "layer");
  const std::string dense = trained(tmp, corpus, FfnKind::dense, "dense");
  CHECK_THROWS_WITH(probe(dense, tmp / "dense.json"), HasSubstring("dense model"));
}

TEST_CASE("routing perturbations: one layer's routes only, among its candidates", "[probe]") {
  Config c;
  ModelConfig& m = c.model;
  m.vocab_size = 50;
  m.vocab_multiple = 8;
  m.seq_len = 16;
  m.n_layer = 3;
  m.d_model = 16;
  m.n_head = 2;
  m.n_kv_head = 1;
  m.ffn_hidden = 16;
  m.ffn = FfnKind::unipool;
  m.pool_size = 12;
  m.top_k = 2;
  m.router = RouterKind::norm;
  m.init_std = 0.3;
  validate_config(c, false);
  const Layout layout = make_layout(m);
  CpuModel<float> model(layout, c.loss, 2, m.seq_len);
  init_parameters(layout, model.params(), 3);
  std::vector<int32_t> in(32), tg(32);
  for (int i = 0; i < 32; ++i) in[size_t(i)] = tg[size_t(i)] = (i * 7) % 50;
  model.forward(in.data(), tg.data(), false);
  std::vector<std::vector<int32_t>> learned;
  for (int l = 0; l < 3; ++l) learned.push_back(model.routed_experts(l));

  RoutingPerturbation p;
  p.layer = 1;
  p.experts = {9, 4, 11};
  p.seed = 5;
  model.set_routing_perturbations({p});
  model.forward(in.data(), tg.data(), false);
  CHECK(model.routed_experts(0) == learned[0]);  // before it: untouched
  const std::vector<int32_t> random = model.routed_experts(1);
  CHECK(random != learned[1]);
  for (size_t t = 0; t < random.size(); t += 2) {
    CHECK(std::set<int32_t>{9, 4, 11}.count(random[t]) == 1);
    CHECK(std::set<int32_t>{9, 4, 11}.count(random[t + 1]) == 1);
    CHECK(random[t] != random[t + 1]);  // k distinct draws
  }
  // Every layer permuted: the ids are the permutation of the learned ones.
  RoutingPerturbation perm;
  perm.kind = RoutingPerturbation::Kind::permute;
  perm.layer = 0;
  for (int e = 0; e < 12; ++e) perm.experts.push_back((e + 5) % 12);
  model.set_routing_perturbations({perm});
  model.forward(in.data(), tg.data(), false);
  const std::vector<int32_t> permuted = model.routed_experts(0);
  for (size_t i = 0; i < permuted.size(); ++i) CHECK(permuted[i] == (learned[0][i] + 5) % 12);
  CHECK_THROWS_WITH(model.forward(in.data(), tg.data(), true), HasSubstring("evaluation"));
  model.set_routing_perturbations({});
  model.forward(in.data(), tg.data(), false);
  CHECK(model.routed_experts(1) == learned[1]);

  RoutingPerturbation bad = p;
  bad.experts = {3};  // fewer than top_k
  CHECK_THROWS_WITH(model.set_routing_perturbations({bad}), HasSubstring("top_k"));
  bad.experts = {3, 3};
  CHECK_THROWS_WITH(model.set_routing_perturbations({bad}), HasSubstring("distinct"));
  CHECK_THROWS_WITH(model.set_routing_perturbations({p, p}), HasSubstring("twice"));
}

TEST_CASE("cuda probe: the GPU's probe of a checkpoint is the CPU's", "[cuda][probe]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  TempDir tmp;
  const std::string corpus = tmp / "docs";
  REQUIRE(write_gpl_corpus(corpus, UNIPOOL_SOURCE_DIR "/docs/backward.md"));
  Config c = small_config(FfnKind::unipool, corpus, tmp / "run");
  c.model.d_model = 64;  // head size 32: one the GPU attention supports
  c.model.ffn_hidden = 64;
  c.train.ckpt_every = 6;
  run_train(c, {});
  const json cpu = probe(tmp / "run/ckpt-6", tmp / "cpu.json", {"train.backend=cpu"});
  const json gpu = probe(tmp / "run/ckpt-6", tmp / "gpu.json", {"train.backend=cuda"});
  CHECK(gpu["val_loss"].get<double>() == Approx(cpu["val_loss"].get<double>()).epsilon(5e-3));
  // bf16 activations may move a near-tie: the counts agree to within a few tokens per layer.
  for (size_t l = 0; l < cpu["layers"].size(); ++l) {
    int64_t moved = 0;
    for (size_t e = 0; e < cpu["layers"][l]["counts"].size(); ++e)
      moved += std::llabs(gpu["layers"][l]["counts"][e].get<int64_t>() -
                          cpu["layers"][l]["counts"][e].get<int64_t>());
    CHECK(moved <= 2 * 256 / 20);
  }
}

TEST_CASE("unipool plot draws loss, utilisation, entropy and path coverage as valid files",
          "[probe]") {
  if (std::system("/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1") != 0) {
    WARN("skipped: /usr/bin/python3 has no matplotlib (apt-get install python3-matplotlib)");
    return;
  }
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  Config c = small_config(FfnKind::unipool, corpus, tmp / "run");
  c.train.ckpt_every = 6;
  c.train.eval_every = 3;
  run_train(c, {});
  probe(tmp / "run/ckpt-6", tmp / "run/ckpt-6/probe.json");
  const std::string unipool_run = tmp / "run", moe_run = tmp / "moe";
  trained(tmp, corpus, FfnKind::moe, "moe");  // a second run, without a probe: loss only
  for (const char* format : {"png", "svg"}) {
    const Outcome o = run_binary("plot '" + unipool_run + "' '" + moe_run + "' --format " + format +
                                     " --out '" + (tmp / "plots") + "'",
                                 tmp / "plot-log");
    INFO("stdout:\n" << o.out << "\nstderr:\n" << o.err);
    REQUIRE(o.status == 0);
    CHECK_THAT(o.err + o.out, HasSubstring("has no probe.json"));
    for (const char* name : {"loss", "utilisation", "entropy", "paths"}) {
      const std::string file = tmp / ("plots/" + std::string(name) + "." + format);
      INFO(file);
      REQUIRE(path_exists(file));
      const std::string bytes = read_file(file);
      if (std::string(format) == "png") {
        CHECK(bytes.size() > 5000);
        CHECK(bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
      } else {
        CHECK(bytes.find("<svg") != std::string::npos);
        CHECK(bytes.find("</svg>") != std::string::npos);
      }
    }
  }
  const Outcome bad = run_binary("plot '" + (tmp / "nowhere") + "'", tmp / "bad-log");
  CHECK(bad.status != 0);
  CHECK_THAT(bad.err, HasSubstring("no metrics.jsonl"));
}
