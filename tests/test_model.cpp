// Whole-model tests: finite differences of the full objective (LM loss + balancing terms) w.r.t.
// samples of every parameter tensor for every variant; shared experts and shared routers receive
// the sum of the gradients of an untied copy; parameter totals of the paper's presets.
#include <array>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/config.h"
#include "model/init.h"
#include "model/layout.h"
#include "model/model.h"
#include "tests/catch.h"
#include "tests/model_variants.h"
#include "tests/fd.h"

using namespace unipool;

namespace {

using test::ModelVariant;

// A model small enough for finite differences over every tensor, big enough to route for real.
Config tiny_config(const ModelVariant& v) {
  Config c;
  ModelConfig& m = c.model;
  m.vocab_size = 11;
  m.vocab_multiple = 4;  // Vp = 12: one padded column takes part in the softmax
  m.seq_len = 5;
  m.n_layer = 4;
  m.d_model = 8;
  m.n_head = 2;
  m.n_kv_head = 1;
  m.ffn_hidden = 6;
  m.init_std = 0.4;
  m.experts_per_layer = 4;
  m.pool_size = 6;
  test::apply_variant(c, v);
  validate_config(c, /*check_data=*/false);
  return c;
}

void random_tokens(std::vector<int32_t>& v, int vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  for (auto& t : v) t = static_cast<int32_t>(gen() % vocab);
}

constexpr int kBatch = 2;

const ModelVariant kVariants[] = {
    {"dense", FfnKind::dense, RouterKind::softmax, 1, 1, 0, 0, false, 0, 0, 0},
    {"moe softmax k1 switch", FfnKind::moe, RouterKind::softmax, 1, 1, 0, 0, false, 0.05, 0, 0},
    {"moe softmax k2 renorm switch z-loss", FfnKind::moe, RouterKind::softmax, 2, 1, 0, 0, true,
     0.05, 0, 0.02},
    {"moe norm k2", FfnKind::moe, RouterKind::norm, 2, 1, 0, 0, false, 0.05, 0, 0},
    {"unipool global norm k1 pool", FfnKind::unipool, RouterKind::norm, 1, 1, 0, 0, false, 0, 0.05,
     0},
    {"unipool global norm k2 pool+switch", FfnKind::unipool, RouterKind::norm, 2, 1, 0, 0, false,
     0.05, 0.05, 0},
    {"unipool grouped N=2 norm k1 pool", FfnKind::unipool, RouterKind::norm, 1, 1, 2, 0, false, 0,
     0.05, 0},
    {"unipool global softmax k1 pool", FfnKind::unipool, RouterKind::softmax, 1, 1, 0, 0, false, 0,
     0.05, 0.01},
    {"moe softmax k1 router_share 2", FfnKind::moe, RouterKind::softmax, 1, 2, 0, 0, false, 0.05, 0,
     0},
    {"unipool norm k2 router_share 2 grouped", FfnKind::unipool, RouterKind::norm, 2, 2, 2, 0,
     false, 0.05, 0.05, 0},
    {"moe softmax k2 router_share 4", FfnKind::moe, RouterKind::softmax, 2, 4, 0, 0, false, 0, 0,
     0},
    {"moe sigmoid k1 expert bias", FfnKind::moe, RouterKind::sigmoid, 1, 1, 0, 0, false, 0, 0, 0,
     true},
    {"moe sigmoid k2 switch z-loss", FfnKind::moe, RouterKind::sigmoid, 2, 1, 0, 0, false, 0.05, 0,
     0.02},
    {"unipool sigmoid k2 expert bias router_share 2", FfnKind::unipool, RouterKind::sigmoid, 2, 2,
     0, 0, false, 0, 0.05, 0, true},
    // UniPool-lock (M = 8, K = 2): the entropy term alone, then the phases' routing
    {"unipool lock explore entropy k2", FfnKind::unipool, RouterKind::norm, 2, 1, 0, 8, false, 0,
     0.05, 0, false, -1, false, 0.05},
    {"unipool lock anneal alpha 0.4 k2 entropy", FfnKind::unipool, RouterKind::norm, 2, 1, 0, 8,
     false, 0, 0.05, 0, false, 0.4, false, 0.05},
    {"unipool lock hidden alpha 1 k1 entropy z-loss", FfnKind::unipool, RouterKind::norm, 1, 1, 0,
     8, false, 0, 0.05, 0.01, false, 1.0, false, 0.05},
    {"unipool lock locked compact k1 entropy", FfnKind::unipool, RouterKind::norm, 1, 1, 0, 8,
     false, 0, 0.05, 0, false, 1.0, true, 0.05},
    {"unipool lock locked compact k2 entropy", FfnKind::unipool, RouterKind::norm, 2, 1, 0, 8,
     false, 0, 0.05, 0, false, 1.0, true, 0.05},
};

// A bias that reorders the choice (the bias is not trained: it only moves the selection).
void random_expert_bias(const Layout& layout, double* params, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-0.3, 0.3);
  for (const ParamTensor& t : layout.tensors)
    if (!t.trained)
      for (int64_t i = 0; i < t.numel; ++i) params[t.offset + i] = u(gen);
}

}  // namespace

TEST_CASE("finite differences of the whole model, every variant, every tensor", "[model][fd]") {
  for (const ModelVariant& variant : kVariants) {
    DYNAMIC_SECTION(variant.name) {
      const Config c = tiny_config(variant);
      const Layout layout = make_layout(c.model);
      CpuModel<double> model(layout, c.loss, kBatch, c.model.seq_len);
      test::apply_lock_variant(model, c, variant);
      const int N = kBatch * c.model.seq_len;
      std::vector<int32_t> inputs(N), targets(N);

      // Find weights and tokens whose routing is well away from any tie or ReLU kink.
      double margin = 0;
      for (uint32_t seed = 1; seed < 200 && margin < 2e-3; ++seed) {
        init_parameters(layout, model.params(), seed);
        random_expert_bias(layout, model.params(), seed);
        random_tokens(inputs, c.model.vocab_size, seed);
        random_tokens(targets, c.model.vocab_size, seed + 1000);
        model.advance_pool_state = true;
        PoolLossState reset = model.pool_state();
        reset.valid = false;
        model.set_pool_state(reset);
        model.zero_grads();
        model.forward(inputs.data(), targets.data(), true);  // fills ĝ for the pool loss
        model.backward();
        model.advance_pool_state = false;
        model.forward(inputs.data(), targets.data(), true);
        margin = model.routing_margin();
      }
      INFO("routing margin " << margin);
      REQUIRE(margin >= 2e-3);
      if (c.model.ffn == FfnKind::unipool) REQUIRE(model.pool_state().valid);

      model.zero_grads();
      const Losses at = model.forward(inputs.data(), targets.data(), true);
      model.backward();
      const std::vector<double> grads(model.grads(), model.grads() + layout.arena_size);
      if (variant.aux > 0 || variant.pool_aux > 0 || variant.z_loss > 0 || variant.entropy > 0)
        CHECK(at.aux > 0);

      auto objective = [&]() {
        const Losses l = model.forward(inputs.data(), targets.data(), true);
        return l.lm + l.aux;
      };
      std::mt19937 pick(7);
      int checked = 0, failures = 0;
      for (const ParamTensor& t : layout.tensors) {
        const int samples = static_cast<int>(std::min<int64_t>(t.numel, 6));
        for (int s = 0; s < samples; ++s) {
          const int64_t i = t.offset + (s == 0 ? 0 : static_cast<int64_t>(pick() % t.numel));
          const double numeric = test::central_difference(objective, model.params() + i, 1e-5);
          ++checked;
          if (!test::close_enough(grads[i], numeric, 1e-5, 1e-9)) {
            if (failures < 8)
              UNSCOPED_INFO(t.name << "[" << i - t.offset << "]: analytic " << grads[i]
                                   << ", numeric " << numeric);
            ++failures;
          }
        }
      }
      INFO(variant.name << ": checked " << checked << " elements");
      CHECK(failures == 0);
      CHECK(checked > 6 * 8);
    }
  }
}

namespace {

// Copies every tensor of `from` into `to` by name; `rename` maps names of `to` to names of `from`
// for tensors that only one of the two has (the untied copy of a shared tensor).
template <typename F>
void copy_weights(const Layout& to_layout, double* to, const Layout& from_layout,
                  const double* from, F rename) {
  for (const ParamTensor& t : to_layout.tensors) {
    const int src = from_layout.find(rename(t.name));
    REQUIRE(src >= 0);
    REQUIRE(from_layout[src].numel == t.numel);
    std::copy(from + from_layout[src].offset, from + from_layout[src].offset + t.numel,
              to + t.offset);
  }
}

struct Pair {
  Config shared, untied;
};

void run_pair(CpuModel<double>& model, const std::vector<int32_t>& in,
              const std::vector<int32_t>& tg, Losses& out) {
  model.zero_grads();
  out = model.forward(in.data(), tg.data(), true);
  model.backward();
}

}  // namespace

TEST_CASE("planned_activation_bytes equals what a model allocates, every variant", "[model]") {
  for (const ModelVariant& v : kVariants) {
    DYNAMIC_SECTION(v.name) {
      const Config c = tiny_config(v);
      const Layout layout = make_layout(c.model);
      for (const auto [batch, seq, kv] :
           {std::array<int, 3>{2, c.model.seq_len, 0}, std::array<int, 3>{3, 5, 0},
            std::array<int, 3>{1, 1, c.model.seq_len}}) {
        INFO(batch << " × " << seq << ", KV cache " << kv);
        const CpuModel<float> model(layout, c.loss, batch, seq, kv);
        CHECK(model.activation_bytes() > 0);
        CHECK(CpuModel<float>::planned_activation_bytes(layout, c.loss, batch, seq, kv) ==
              model.activation_bytes());
      }
    }
  }
}

TEST_CASE("a shared pool's gradient is the sum of the untied per-layer experts' gradients",
          "[model][shared]") {
  for (int pool_group : {0, 2}) {
    DYNAMIC_SECTION("pool_group " << pool_group) {
      // UniPool with one pool (or two groups) vs. a vanilla MoE whose every layer holds a copy of
      // its pool: the same function, so each pool gradient equals the sum over its layers' copies.
      Config shared = tiny_config(
          {"", FfnKind::unipool, RouterKind::norm, 2, 1, pool_group, 0, false, 0.05, 0, 0.01});
      Config untied = shared;
      untied.model.ffn = FfnKind::moe;
      untied.model.experts_per_layer = shared.model.pool_size;
      const Layout ls = make_layout(shared.model), lu = make_layout(untied.model);
      CpuModel<double> ms(ls, shared.loss, kBatch, shared.model.seq_len);
      CpuModel<double> mu(lu, untied.loss, kBatch, untied.model.seq_len);
      init_parameters(ls, ms.params(), 3);
      const int N_group = shared.model.pool_layers();
      copy_weights(lu, mu.params(), ls, ms.params(), [&](const std::string& name) {
        // layers.L.experts.w13 ← pools.(L / N).w13
        const size_t pos = name.find(".experts.");
        if (pos == std::string::npos) return name;
        const int layer = std::stoi(name.substr(7, pos - 7));
        return "pools." + std::to_string(layer / N_group) + "." + name.substr(pos + 9);
      });
      const int N = kBatch * shared.model.seq_len;
      std::vector<int32_t> in(N), tg(N);
      random_tokens(in, 11, 5);
      random_tokens(tg, 11, 6);
      Losses a, b;
      run_pair(ms, in, tg, a);
      run_pair(mu, in, tg, b);
      CHECK(a.lm == b.lm);  // the same computation, op for op
      CHECK(a.aux == b.aux);
      for (int g = 0; g < shared.model.n_pools(); ++g) {
        for (const char* w : {"w13", "w2"}) {
          const ParamTensor& pool = ls[ls.find("pools." + std::to_string(g) + "." + w)];
          std::vector<double> sum(pool.numel, 0.0);
          for (int l = g * N_group; l < (g + 1) * N_group; ++l) {
            const ParamTensor& copy = lu[lu.find("layers." + std::to_string(l) + ".experts." + w)];
            for (int64_t i = 0; i < pool.numel; ++i) sum[i] += mu.grads()[copy.offset + i];
          }
          double max_err = 0, max_ref = 0;
          for (int64_t i = 0; i < pool.numel; ++i) {
            max_err = std::max(max_err, std::fabs(ms.grads()[pool.offset + i] - sum[i]));
            max_ref = std::max(max_ref, std::fabs(sum[i]));
          }
          INFO(pool.name);
          CHECK(max_ref > 0);
          CHECK(max_err <= 1e-12 * max_ref);
        }
      }
      // Every unshared tensor has the identical gradient in both.
      for (const ParamTensor& t : ls.tensors) {
        if (t.name.rfind("pools.", 0) == 0) continue;
        const ParamTensor& u = lu[lu.find(t.name)];
        for (int64_t i = 0; i < t.numel; ++i)
          REQUIRE(ms.grads()[t.offset + i] == mu.grads()[u.offset + i]);
      }
    }
  }
}

TEST_CASE("a shared router's gradient is the sum of the untied routers' gradients",
          "[model][shared]") {
  for (RouterKind router : {RouterKind::softmax, RouterKind::norm}) {
    DYNAMIC_SECTION(name_of(router)) {
      Config shared = tiny_config({"", FfnKind::moe, router, 2, 2, 0, 0, false, 0.05, 0, 0.01});
      Config untied = shared;
      untied.model.router_share = 1;
      const Layout ls = make_layout(shared.model), lu = make_layout(untied.model);
      CpuModel<double> ms(ls, shared.loss, kBatch, shared.model.seq_len);
      CpuModel<double> mu(lu, untied.loss, kBatch, untied.model.seq_len);
      init_parameters(ls, ms.params(), 4);
      copy_weights(lu, mu.params(), ls, ms.params(), [&](const std::string& name) {
        if (name.rfind("routers.", 0) != 0) return name;  // routers.r ← routers.(r / B)
        const size_t dot = name.find('.', 8);
        const int r = std::stoi(name.substr(8, dot - 8));
        return "routers." + std::to_string(r / 2) + name.substr(dot);
      });
      const int N = kBatch * shared.model.seq_len;
      std::vector<int32_t> in(N), tg(N);
      random_tokens(in, 11, 8);
      random_tokens(tg, 11, 9);
      Losses a, b;
      run_pair(ms, in, tg, a);
      run_pair(mu, in, tg, b);
      CHECK(a.lm == b.lm);
      CHECK(a.aux == b.aux);
      for (int r = 0; r < shared.model.n_routers(); ++r) {
        for (const std::string& w : {std::string("weight"), std::string("scale")}) {
          const int ti = ls.find("routers." + std::to_string(r) + "." + w);
          if (ti < 0) continue;
          const ParamTensor& t = ls[ti];
          const ParamTensor& u0 = lu[lu.find("routers." + std::to_string(2 * r) + "." + w)];
          const ParamTensor& u1 = lu[lu.find("routers." + std::to_string(2 * r + 1) + "." + w)];
          double max_err = 0, max_ref = 0;
          for (int64_t i = 0; i < t.numel; ++i) {
            const double sum = mu.grads()[u0.offset + i] + mu.grads()[u1.offset + i];
            max_err = std::max(max_err, std::fabs(ms.grads()[t.offset + i] - sum));
            max_ref = std::max(max_ref, std::fabs(sum));
          }
          INFO(t.name);
          CHECK(max_ref > 0);
          CHECK(max_err <= 1e-12 * max_ref);
        }
      }
    }
  }
}

TEST_CASE("router_share = 1 is independent routing, bit for bit", "[model][shared]") {
  // B = 1 builds one router per layer, each used once, and computes exactly what a config that
  // never mentions router sharing computes.
  Config c = tiny_config({"", FfnKind::moe, RouterKind::softmax, 1, 1, 0, 0, false, 0.05, 0, 0});
  const Layout layout = make_layout(c.model);
  for (int l = 0; l < c.model.n_layer; ++l) {
    CHECK(layout.layers[l].router == layout.find("routers." + std::to_string(l) + ".weight"));
    CHECK(layout[layout.layers[l].router].uses == 1);
  }
  nlohmann::json with = c.to_json(), without = c.to_json();
  without["model"].erase("router_share");
  const Config a = load_config(with, {}, false),
               b = load_config(without, {"model.router_share=1"}, false);
  CpuModel<float> ma(make_layout(a.model), a.loss, 1, 5), mb(make_layout(b.model), b.loss, 1, 5);
  init_parameters(ma.layout(), ma.params(), 11);
  init_parameters(mb.layout(), mb.params(), 11);
  std::vector<int32_t> in(5), tg(5);
  random_tokens(in, 11, 1);
  random_tokens(tg, 11, 2);
  const Losses la = ma.forward(in.data(), tg.data(), true),
               lb = mb.forward(in.data(), tg.data(), true);
  ma.backward();
  mb.backward();
  CHECK(la.lm == lb.lm);
  CHECK(la.aux == lb.aux);
  CHECK(std::equal(ma.grads(), ma.grads() + ma.layout().arena_size, mb.grads()));
}

TEST_CASE("pool loss: skipped on the first micro-batch, then uses the previous counts",
          "[model][pool]") {
  Config c = tiny_config({"", FfnKind::unipool, RouterKind::norm, 1, 1, 0, 0, false, 0, 0.05, 0});
  const Layout layout = make_layout(c.model);
  CpuModel<double> model(layout, c.loss, kBatch, c.model.seq_len);
  init_parameters(layout, model.params(), 2);
  const int N = kBatch * c.model.seq_len;
  std::vector<int32_t> in(N), tg(N);
  random_tokens(in, 11, 3);
  random_tokens(tg, 11, 4);
  CHECK(!model.pool_state().valid);
  const Losses first = model.forward(in.data(), tg.data(), true);
  CHECK(first.aux == 0);  // no ĝ yet
  REQUIRE(model.pool_state().valid);
  // ĝ = layer-mean of the counts: Σ_i ĝ_i = k·N (every token counted once per layer, averaged)
  const PoolLossState after_first = model.pool_state();
  double total = 0;
  for (double g : after_first.ghat[0]) total += g;
  CHECK(total == Approx(c.model.top_k * N));
  // The running sums start over after the group's last layer.
  for (double r : after_first.running[0]) CHECK(r == 0);
  // The second forward's pool term: Σ_l α M Σ_i ĝ_i Σ_t s_ti / (k N² L).
  const auto ghat = model.pool_state().ghat[0];
  const Losses second = model.forward(in.data(), tg.data(), true);
  CHECK(second.aux > 0);
  // Same tokens, same weights: the counts are the same, so ĝ is unchanged.
  CHECK(model.pool_state().ghat[0] == ghat);
  // Evaluation never touches the state; a state set from outside (a checkpoint) is kept exactly.
  PoolLossState changed = model.pool_state();
  changed.ghat[0][0] += 1;
  model.set_pool_state(changed);
  model.forward(in.data(), tg.data(), false);
  CHECK(model.pool_state().ghat == changed.ghat);
  CHECK(model.pool_state().running == changed.running);
}

TEST_CASE("parameter totals of the 182M presets match the paper", "[model][layout]") {
  const Config dense =
      load_config(read_config_file(UNIPOOL_SOURCE_DIR "/configs/dense-182m.json"), {}, false);
  const Layout dl = make_layout(dense.model);
  CHECK(dl.num_parameters() == 182471424);
  CHECK(dl.active_parameters(false) == 182471424);
  const Config uni =
      load_config(read_config_file(UNIPOOL_SOURCE_DIR "/configs/unipool-182m.json"), {}, false);
  const Layout ul = make_layout(uni.model);
  CHECK(ul.num_parameters() == 777898764);
  CHECK(ul.active_parameters(false) == 182471424);
  CHECK(ul.find("pools.0.w13") >= 0);
  CHECK(ul[ul.find("pools.0.w13")].shape == std::vector<int64_t>{96, 6144, 768});
  CHECK(ul[ul.find("pools.0.w13")].uses == 12);
  CHECK(ul[ul.find("routers.11.weight")].shape == std::vector<int64_t>{96, 768});
  CHECK(ul[ul.find("routers.11.scale")].shape.empty());
  CHECK(ul[ul.find("layers.0.attn.wqkv.weight")].shape == std::vector<int64_t>{1280, 768});
  CHECK(ul[ul.find("tok_embeddings.weight")].shape == std::vector<int64_t>{51200, 768});
  // Vanilla MoE 8E/top-1: 8× the expert parameters, dense active parameters.
  const Config moe =
      load_config(read_config_file(UNIPOOL_SOURCE_DIR "/configs/moe-182m.json"), {}, false);
  const Layout ml = make_layout(moe.model);
  CHECK(ml.num_parameters() == 182471424 + 12LL * 7 * 3 * 768 * 3072 + 12LL * 8 * 768);
  CHECK(ml.active_parameters(false) == 182471424);
  // Every preset loads and builds.
  for (const char* name :
       {"tiny", "unipool-182m-m64", "unipool-182m-m48", "unipool-182m-g2", "unipool-182m-g4",
        "pathmoe-182m", "pathmoe-unipool-182m", "bench-dense-d256-l4", "bench-dense-124m"}) {
    INFO(name);
    const Config c = load_config(
        read_config_file(std::string(UNIPOOL_SOURCE_DIR "/configs/") + name + ".json"), {}, false);
    CHECK(make_layout(c.model).num_parameters() > 0);
  }
  const Config path =
      load_config(read_config_file(UNIPOOL_SOURCE_DIR "/configs/pathmoe-182m.json"), {}, false);
  CHECK(path.model.n_routers() == 3);
}

TEST_CASE("initialisation depends only on seed and tensor name", "[model][init]") {
  Config c = tiny_config({"", FfnKind::unipool, RouterKind::norm, 1, 1, 0, 0, false, 0, 0.05, 0});
  const Layout a = make_layout(c.model);
  c.model.n_layer = 8;  // a different model: shared names keep their values
  const Layout b = make_layout(c.model);
  std::vector<float> pa(a.arena_size), pb(b.arena_size);
  init_parameters(a, pa.data(), 42);
  init_parameters(b, pb.data(), 42);
  for (const char* name :
       {"tok_embeddings.weight", "layers.3.attn.wqkv.weight", "routers.0.weight"}) {
    const ParamTensor& ta = a[a.find(name)];
    const ParamTensor& tb = b[b.find(name)];
    CHECK(std::equal(pa.begin() + ta.offset, pa.begin() + ta.offset + ta.numel,
                     pb.begin() + tb.offset));
  }
  // Wo and W2 use σ0/sqrt(2L); norms and the NormRouter scale start at 1.
  const ParamTensor& wo = a[a.find("layers.0.attn.wo.weight")];
  double sq = 0;
  for (int64_t i = 0; i < wo.numel; ++i) sq += double(pa[wo.offset + i]) * pa[wo.offset + i];
  CHECK(std::sqrt(sq / wo.numel) == Approx(0.4 / std::sqrt(8.0)).epsilon(0.2));
  CHECK(pa[a[a.find("routers.0.scale")].offset] == 1.0f);
  CHECK(pa[a[a.find("norm.weight")].offset] == 1.0f);
  std::vector<float> pc(a.arena_size);
  init_parameters(a, pc.data(), 43);
  CHECK(pc != pa);
}
