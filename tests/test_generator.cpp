// The KV-cached generator and sampler (model/generator.h, model/generator.cpp) and the decode
// attention it uses (cpu::attention_decode, kernels/cpu/attention.h): the generator reproduces the
// training forward's per-token losses for dense, MoE and UniPool models; attention_decode equals
// attention_forward's rows; the sampler is greedy at temperature 0 / top-k 1 and reproducible by
// seed; generation slides its window past seq_len; bad input is an Error. The `eval` and `sample`
// commands on top of it: tests/test_eval.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include "base/error.h"
#include "engine/config.h"
#include "kernels/cpu/ops.h"
#include "model/generator.h"
#include "model/init.h"
#include "model/layout.h"
#include "model/model.h"
#include "tests/catch.h"
#include "tests/model_variants.h"

using namespace unipool;

namespace {

const test::ModelVariant kGenVariants[] = {
    {"dense", FfnKind::dense, RouterKind::softmax, 1},
    {"moe softmax k2", FfnKind::moe, RouterKind::softmax, 2},
    {"unipool norm k1", FfnKind::unipool, RouterKind::norm, 1},
};

// Vp = 64 > V = 50: the padded columns take part in the loss's softmax.
Config gen_config(const test::ModelVariant& v) {
  Config c;
  ModelConfig& m = c.model;
  m.vocab_size = 50;
  m.vocab_multiple = 16;
  m.seq_len = 24;
  m.n_layer = 3;
  m.d_model = 32;
  m.n_head = 4;
  m.n_kv_head = 2;
  m.ffn_hidden = 24;
  m.init_std = 0.3;  // far from uniform: real attention patterns and routing
  m.experts_per_layer = 4;
  m.pool_size = 6;
  test::apply_variant(c, v);
  validate_config(c, /*check_data=*/false);
  return c;
}

std::vector<int32_t> random_ids(int n, int vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int32_t> v(n);
  for (auto& t : v) t = static_cast<int32_t>(gen() % vocab);
  return v;
}

// −log softmax(row)[target] over n columns, in double.
double cross_entropy(const float* row, int n, int target) {
  double m = row[0];
  for (int i = 1; i < n; ++i) m = std::max(m, static_cast<double>(row[i]));
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(row[i]) - m);
  return m + std::log(sum) - static_cast<double>(row[target]);
}

}  // namespace

TEST_CASE("generator: per-token losses equal the training forward's", "[generator]") {
  for (const test::ModelVariant& variant : kGenVariants) {
    DYNAMIC_SECTION(variant.name) {
      const Config c = gen_config(variant);
      const Layout layout = make_layout(c.model);
      const int B = 2, T = c.model.seq_len, V = c.model.vocab_size, Vp = c.model.padded_vocab();
      REQUIRE(Vp > V);
      CpuModel<float> model(layout, c.loss, B, T);
      init_parameters(layout, model.params(), 7);
      // B rows of T + 1 tokens: inputs the first T, targets the last T.
      std::vector<int32_t> inputs(B * T), targets(B * T);
      for (int b = 0; b < B; ++b) {
        const std::vector<int32_t> seq = random_ids(T + 1, V, 100 + b);
        for (int t = 0; t < T; ++t) {
          inputs[b * T + t] = seq[t];
          targets[b * T + t] = seq[t + 1];
        }
      }
      const double mean = model.forward(inputs.data(), targets.data(), /*train=*/false).lm;
      INFO("routing margin " << model.routing_margin() << ", mean loss " << mean);
      REQUIRE(std::isfinite(mean));
      const std::vector<float> ref = model.token_losses();

      Generator gen(layout, model.params());
      REQUIRE(gen.max_len() == T);
      REQUIRE(gen.vocab_size() == V);
      double worst = 0, sum = 0;
      for (int b = 0; b < B; ++b) {  // the second row after reset(): the cache starts over
        gen.reset();
        for (int t = 0; t < T; ++t) {
          const float* logits = gen.step(inputs[b * T + t]);
          REQUIRE(logits == gen.padded_logits());  // the first V columns of the LM-head row
          REQUIRE(gen.position() == t + 1);
          const double ce = cross_entropy(gen.padded_logits(), Vp, targets[b * T + t]);
          worst = std::max(worst, std::fabs(ce - static_cast<double>(ref[b * T + t])));
          sum += ce;
        }
      }
      INFO("worst |generator − training| per-token loss " << worst);
      CHECK(worst < 1e-4);
      CHECK(sum / (B * T) == Approx(mean).margin(1e-5));
      // The cache holds seq_len positions.
      CHECK_THROWS_AS(gen.step(0), Error);
      gen.reset();
      CHECK_THROWS_AS(gen.step(V), Error);  // outside the vocabulary
      CHECK_NOTHROW(gen.step(V - 1));
    }
  }
}

TEST_CASE("attention_decode equals attention_forward's rows", "[generator]") {
  const int Tlen = 37, nh = 4, nkv = 2, hd = 16, C = (nh + 2 * nkv) * hd;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> qkv(static_cast<size_t>(Tlen) * C);
  for (float& x : qkv) x = dist(rng);
  std::vector<float> out(static_cast<size_t>(Tlen) * nh * hd), lse(static_cast<size_t>(nh) * Tlen);
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), 1, Tlen, nh, nkv, hd);
  std::vector<float> row(nh * hd), scratch(Tlen + 16);
  double worst = 0;
  for (int t = 0; t < Tlen; ++t) {  // row t attends to the t + 1 rows 0..t, read in place
    const float* q = qkv.data() + static_cast<size_t>(t) * C;
    cpu::attention_decode(row.data(), q, qkv.data() + nh * hd, qkv.data() + (nh + nkv) * hd, C,
                          t + 1, nh, nkv, hd, scratch.data());
    for (int i = 0; i < nh * hd; ++i)
      worst = std::max(worst, std::fabs(static_cast<double>(row[i]) -
                                        out[static_cast<size_t>(t) * nh * hd + i]));
  }
  INFO("worst |decode − forward| " << worst);
  CHECK(worst < 1e-6);

  // double, a cache with its own row stride (as the generator keeps it: K and V apart)
  std::vector<double> qkvd(qkv.begin(), qkv.end()), outd(out.size()), lsed(lse.size());
  cpu::attention_forward(outd.data(), lsed.data(), qkvd.data(), 1, Tlen, nh, nkv, hd);
  std::vector<double> kc(static_cast<size_t>(Tlen) * nkv * hd), vc(kc.size());
  for (int t = 0; t < Tlen; ++t)
    for (int i = 0; i < nkv * hd; ++i) {
      kc[static_cast<size_t>(t) * nkv * hd + i] = qkvd[static_cast<size_t>(t) * C + nh * hd + i];
      vc[static_cast<size_t>(t) * nkv * hd + i] =
          qkvd[static_cast<size_t>(t) * C + (nh + nkv) * hd + i];
    }
  std::vector<double> rowd(nh * hd), scratchd(Tlen + 16);
  const int t = Tlen - 1;
  cpu::attention_decode(rowd.data(), qkvd.data() + static_cast<size_t>(t) * C, kc.data(), vc.data(),
                        nkv * hd, Tlen, nh, nkv, hd, scratchd.data());
  double worstd = 0;
  for (int i = 0; i < nh * hd; ++i)
    worstd = std::max(worstd, std::fabs(rowd[i] - outd[static_cast<size_t>(t) * nh * hd + i]));
  CHECK(worstd < 1e-12);
}

TEST_CASE("sampler: greedy, top-k, temperature and seeds", "[generator]") {
  SECTION("fixed logits") {
    const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
    CHECK(argmax(logits.data(), 5) == 1);  // ties to the lower index
    Sampler s(1);
    CHECK(s.sample(logits.data(), 5, 0.0, 40) == 1);
    CHECK(s.sample(logits.data(), 5, 1.0, 1) == 1);
    // top-k 2 keeps the two 2.0 logits (ids 1 and 3), equally likely.
    std::map<int, int> counts;
    for (int i = 0; i < 4000; ++i) ++counts[s.sample(logits.data(), 5, 1.0, 2)];
    CHECK(counts.size() == 2);
    CHECK(counts[1] > 1800);
    CHECK(counts[3] > 1800);
    // All 5 at temperature 1: frequencies follow the softmax.
    counts.clear();
    const int draws = 20000;
    for (int i = 0; i < draws; ++i) ++counts[s.sample(logits.data(), 5, 1.0, 0)];
    double z = 0;
    for (float l : logits) z += std::exp(l);
    for (int i = 0; i < 5; ++i) {
      const double p = std::exp(logits[i]) / z;
      CHECK(std::fabs(counts[i] / double(draws) - p) < 4 * std::sqrt(p * (1 - p) / draws) + 1e-3);
    }
  }

  SECTION("generation") {
    const Config c = gen_config(kGenVariants[2]);
    const Layout layout = make_layout(c.model);
    std::vector<float> params(layout.arena_size);
    init_parameters(layout, params.data(), 11);
    Generator gen(layout, params.data());
    const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
    const int n = 15;  // prompt + n < seq_len: no window slide here

    auto run = [&](uint64_t seed, double temperature, int top_k) {
      Sampler s(seed);
      return generate(gen, s, prompt, n, temperature, top_k);
    };
    const std::vector<int32_t> greedy = run(1, 0.0, 40);
    REQUIRE(greedy.size() == size_t(n));
    CHECK(run(2, 0.0, 0) == greedy);  // greedy ignores the seed
    CHECK(run(3, 1.0, 1) == greedy);  // top-k 1 is greedy
    // temperature 0 is the argmax of each step's logits
    gen.reset();
    const float* logits = nullptr;
    for (int32_t t : prompt) logits = gen.step(t);
    for (int i = 0; i < n; ++i) {
      const int32_t next = argmax(logits, gen.vocab_size());
      CHECK(next == greedy[i]);
      logits = gen.step(next);
    }
    // seeded sampling: the same seed gives the same tokens, another seed others
    const std::vector<int32_t> a = run(1234, 1.0, 0), b = run(1234, 1.0, 0), d = run(99, 1.0, 0);
    CHECK(a == b);
    CHECK(a != d);
    // streaming callback sees the same tokens
    std::vector<int32_t> seen;
    Sampler s(1234);
    generate(gen, s, prompt, n, 1.0, 0, [&](int32_t id) { seen.push_back(id); });
    CHECK(seen == a);
    // beyond seq_len the window slides
    Sampler s2(5);
    const std::vector<int32_t> longer = generate(gen, s2, prompt, 3 * c.model.seq_len, 0.8, 10);
    CHECK(longer.size() == size_t(3 * c.model.seq_len));
    // bad prompts
    Sampler s3(5);
    CHECK_THROWS_AS(generate(gen, s3, {}, 5, 1.0, 0), Error);
    CHECK_THROWS_AS(generate(gen, s3, std::vector<int32_t>(c.model.seq_len + 1, 1), 5, 1.0, 0),
                    Error);
  }
}
