// The whole model on the GPU against the CPU engine (fp32) on the same weights and batch, for every
// variant; GPU training tracks CPU training; GPU runs are bitwise reproducible and resume exactly.
// Without a device (or without nvcc) the tests skip.
//
// Routing is made robust on purpose. bf16 activations move the router logits by ~1e-3 relative, so
// a token whose top-k scores nearly tie could route differently on the two backends, and the
// gradients would then differ for a reason that is not a bug. The tests therefore give every token
// a clear routing: the embedding of token v is +3 on dimension e1(v), +2 on e2(v) and −1 on the
// other router dimensions (plus the usual init noise elsewhere), and router row e reads dimension e
// (α·onehot(e) + init noise). Every layer then routes v to e1 then e2 with wide margins (softmax:
// logit gaps of several units; NormRouter: u gaps of ~0.3, and every unchosen u clearly below the
// ReLU kink). Routing ids must then be identical on both backends, and everything else is compared
// with bf16 tolerances.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/catch.h"
#include "tests/model_variants.h"
#include "tests/cuda_test_util.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "engine/config.h"
#include "engine/trainer.h"
#include "model/generator.h"
#include "model/init.h"
#include "model/layout.h"
#include "model/model.h"

using namespace unipool;

namespace {

using test::ModelVariant;

const ModelVariant kVariants[] = {
    {"dense", FfnKind::dense, RouterKind::softmax, 1, 1, 0, 0, false, 0, 0, 0},
    {"moe softmax k1 switch", FfnKind::moe, RouterKind::softmax, 1, 1, 0, 0, false, 0.01, 0, 0},
    {"moe softmax k2 renorm z-loss", FfnKind::moe, RouterKind::softmax, 2, 1, 0, 0, true, 0.01, 0,
     0.001},
    {"moe norm k2", FfnKind::moe, RouterKind::norm, 2, 1, 0, 0, false, 0.01, 0, 0},
    {"unipool global norm k1 M96 pool", FfnKind::unipool, RouterKind::norm, 1, 1, 0, 96, false, 0,
     0.01, 0},
    {"unipool global norm k2 M16 pool+switch", FfnKind::unipool, RouterKind::norm, 2, 1, 0, 16,
     false, 0.01, 0.01, 0},
    {"unipool grouped N2 norm k1 M8 pool", FfnKind::unipool, RouterKind::norm, 1, 1, 2, 8, false, 0,
     0.01, 0},
    {"unipool global softmax k1 M16", FfnKind::unipool, RouterKind::softmax, 1, 1, 0, 16, false, 0,
     0.01, 0.001},
    {"moe softmax k1 router_share 2", FfnKind::moe, RouterKind::softmax, 1, 2, 0, 0, false, 0.01, 0,
     0},
    {"unipool norm k2 router_share 2 grouped", FfnKind::unipool, RouterKind::norm, 2, 2, 2, 16,
     false, 0.01, 0.01, 0},
    {"moe sigmoid k2 expert bias", FfnKind::moe, RouterKind::sigmoid, 2, 1, 0, 0, false, 0, 0, 0,
     true},
    // UniPool-lock: the anneal's faded scores, and the locked sets on the compact path
    {"unipool lock anneal alpha 0.4 k2 M16 entropy", FfnKind::unipool, RouterKind::norm, 2, 1, 0,
     16, false, 0, 0.01, 0, false, 0.4, false, 0.01},
    {"unipool lock locked compact k1 M96 entropy", FfnKind::unipool, RouterKind::norm, 1, 1, 0, 96,
     false, 0, 0.01, 0, false, 1.0, true, 0.01},
};

// hd = 32 (a head size the GPU attention supports), T not a multiple of the attention tiles,
// widths multiples of 8 (the grouped GEMM's requirement).
Config gpu_test_config(const ModelVariant& v) {
  Config c;
  ModelConfig& m = c.model;
  m.vocab_size = 300;
  m.vocab_multiple = 64;  // Vp = 320: padded columns take part in the softmax
  m.seq_len = 80;
  m.n_layer = 4;
  m.d_model = 128;
  m.n_head = 4;
  m.n_kv_head = 2;
  m.ffn_hidden = 64;
  m.experts_per_layer = 8;
  m.pool_size = 96;
  test::apply_variant(c, v);
  c.train.micro_batch = 2;
  c.train.backend = BackendKind::cuda;
  validate_config(c, /*check_data=*/false);
  return c;
}

// The two experts token v is steered to (distinct).
std::pair<int, int> steered_experts(int v, int R) {
  const int e1 = v % R;
  int e2 = (v * 7 + 3) % R;
  if (e2 == e1) e2 = (e1 + 1) % R;
  return {e1, e2};
}

// Weights from init_parameters, then the embedding and router rows that give clear routing.
std::vector<float> steered_weights(const Layout& layout, uint64_t seed) {
  std::vector<float> w(layout.arena_size);
  init_parameters(layout, w.data(), seed);
  const ModelConfig& c = layout.config;
  if (!c.is_moe()) return w;
  const int R = c.router_width(), d = c.d_model;
  const ParamTensor& E = layout[layout.tok_embeddings];
  for (int v = 0; v < c.vocab_size; ++v) {
    float* row = w.data() + E.offset + int64_t(v) * d;
    const auto [e1, e2] = steered_experts(v, R);
    for (int e = 0; e < R; ++e) row[e] = e == e1 ? 3.0f : e == e2 ? 2.0f : -1.0f;
  }
  for (const ParamTensor& t : layout.tensors) {
    if (t.name.rfind("routers.", 0) != 0 || t.shape.size() != 2) continue;
    for (int e = 0; e < R; ++e) w[t.offset + int64_t(e) * d + e] += 1.0f;
  }
  return w;
}

// A batch with structure (so that training can learn something): a noisy repeating pattern.
void pattern_batch(int32_t* in, int32_t* tg, int B, int T, int V, uint64_t step) {
  for (int b = 0; b < B; ++b) {
    const uint64_t start = splitmix64(step * 131 + b) % V;
    for (int t = 0; t <= T; ++t) {
      const uint64_t noise = splitmix64(step * 7919 + b * 104729 + t);
      const int32_t tok = int32_t((start + 17 * t + (noise % 8 == 0 ? noise % 5 : 0)) % V);
      if (t < T) in[b * T + t] = tok;
      if (t > 0) tg[b * T + t - 1] = tok;
    }
  }
}

// ‖a − b‖ / ‖b‖ over one tensor (0 when both are 0).
double relative_l2(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return std::sqrt(num / den);
}

}  // namespace

// Tolerances (bf16 activations and GEMM weights, fp32 accumulation, vs an fp32 CPU engine): the LM
// loss within 0.5% (+1e-3), the aux loss within 2% (+1e-6), every gradient tensor within 6% in
// relative L2 norm (measured bf16 drift through 4 layers is ~1%; a wrong kernel gives O(1)).
TEST_CASE("cuda model: loss and every gradient tensor match the CPU engine, every variant",
          "[cuda][model]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (const ModelVariant& variant : kVariants) {
    DYNAMIC_SECTION(variant.name) {
      const Config c = gpu_test_config(variant);
      const Layout layout = make_layout(c.model);
      const int B = c.train.micro_batch, T = c.model.seq_len;
      CpuModel<float> cpu_model(layout, c.loss, B, T);
      Model<CudaBackend> gpu_model(layout, c.loss, B, T);
      test::apply_lock_variant(cpu_model, c, variant);
      test::apply_lock_variant(gpu_model, c, variant);
      const std::vector<float> w = steered_weights(layout, 5);
      std::copy(w.begin(), w.end(), cpu_model.params());
      gpu_model.params_from_host(w.data());

      std::vector<int32_t> in(size_t(B) * T), tg(in.size());
      // Two micro-batches: the first fills the pool loss's ĝ, the second is compared.
      for (int micro = 0; micro < 2; ++micro) {
        pattern_batch(in.data(), tg.data(), B, T, c.model.vocab_size, uint64_t(micro));
        cpu_model.zero_grads();
        gpu_model.zero_grads();
        const Losses lc = cpu_model.forward(in.data(), tg.data(), true, 0.5);
        const Losses lg = gpu_model.forward(in.data(), tg.data(), true, 0.5);
        cpu_model.backward();
        gpu_model.backward();
        INFO("micro-batch " << micro << ": lm cpu " << lc.lm << " gpu " << lg.lm << ", aux cpu "
                            << lc.aux << " gpu " << lg.aux);
        CHECK(std::fabs(lg.lm - lc.lm) <= 5e-3 * std::fabs(lc.lm) + 1e-3);
        CHECK(std::fabs(lg.aux - lc.aux) <= 2e-2 * std::fabs(lc.aux) + 1e-6);
        for (int l = 0; l < c.model.n_layer && c.model.is_moe(); ++l) {
          INFO("layer " << l);
          CHECK(gpu_model.routed_experts(l) == cpu_model.routed_experts(l));
        }
        const PoolLossState pc = cpu_model.pool_state(), pg = gpu_model.pool_state();
        CHECK(pg.valid == pc.valid);
        CHECK(pg.ghat == pc.ghat);  // counts are integers: exact
      }
      const std::vector<float> gg = gpu_model.grads_to_host();
      const std::vector<float> token_cpu = cpu_model.token_losses();
      const std::vector<float> token_gpu = gpu_model.token_losses();
      test::expect_close(token_gpu, token_cpu, "per-token loss", 2e-2, 2e-2);
      int bad = 0;
      for (const ParamTensor& t : layout.tensors) {
        if (!t.trained) continue;  // the expert bias: no gradient on either side
        const double err = relative_l2(gg.data() + t.offset, cpu_model.grads() + t.offset, t.numel);
        if (!(err <= 6e-2)) {
          UNSCOPED_INFO(t.name << ": relative L2 error " << err);
          ++bad;
        }
      }
      CHECK(bad == 0);
    }
  }
}

// The KV-cached generator (model/generator.h: Model::decode) on the GPU against the CPU generator,
// on steered weights so both route alike: 24 positions of a pattern sequence, the −log softmax of
// the next token from each step's padded logits within 2% (+0.02) as for the training forward's
// per-token losses; a second pass after reset() is bitwise equal to the first.
TEST_CASE("cuda generator: decoding with the KV cache matches the CPU generator", "[cuda][model]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (const ModelVariant& variant : {kVariants[0], kVariants[2], kVariants[6]}) {
    DYNAMIC_SECTION(variant.name) {
      const Config c = gpu_test_config(variant);
      const Layout layout = make_layout(c.model);
      const std::vector<float> w = steered_weights(layout, 9);
      Generator cpu_gen(layout, w.data());
      GeneratorOn<CudaBackend> gpu_gen(layout, w.data());
      REQUIRE(gpu_gen.max_len() == c.model.seq_len);
      const int T = 24, Vp = c.model.padded_vocab();
      std::vector<int32_t> in(static_cast<size_t>(T)), tg(in.size());
      pattern_batch(in.data(), tg.data(), 1, T, c.model.vocab_size, 3);
      auto nll = [Vp](const float* row, int target) {
        double m = row[0], sum = 0;
        for (int i = 1; i < Vp; ++i) m = std::max(m, double(row[i]));
        for (int i = 0; i < Vp; ++i) sum += std::exp(double(row[i]) - m);
        return float(m + std::log(sum) - row[target]);
      };
      std::vector<float> cpu_nll, gpu_nll;
      std::vector<std::vector<float>> first_pass;
      for (int t = 0; t < T; ++t) {
        cpu_nll.push_back(nll(cpu_gen.step(in[t]), tg[t]));
        gpu_gen.step(in[t]);
        gpu_nll.push_back(nll(gpu_gen.padded_logits(), tg[t]));
        first_pass.emplace_back(gpu_gen.padded_logits(), gpu_gen.padded_logits() + Vp);
      }
      test::expect_close(gpu_nll, cpu_nll, "per-token loss", 2e-2, 2e-2);
      gpu_gen.reset();
      bool same = true;
      for (int t = 0; t < T; ++t) {
        gpu_gen.step(in[t]);
        same =
            same && std::equal(first_pass[t].begin(), first_pass[t].end(), gpu_gen.padded_logits(),
                               [](float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; });
      }
      CHECK(same);
    }
  }
}

namespace {

Config small_unipool_training_config() {
  Config c = gpu_test_config(kVariants[5]);  // unipool global norm k2 M16 pool+switch
  c.train.steps = 50;
  c.train.grad_accum = 2;
  c.optim.lr = 2e-3;
  c.optim.min_lr = 2e-4;
  c.optim.warmup_steps = 5;
  c.train.seed = 77;
  return c;
}

BatchSource pattern_source(const Config& c, uint64_t* counter) {
  return [&c, counter](int32_t* in, int32_t* tg) {
    pattern_batch(in, tg, c.train.micro_batch, c.model.seq_len, c.model.vocab_size, (*counter)++);
  };
}

}  // namespace

// 50 optimizer steps (grad_accum 2) of a small UniPool model: the GPU's losses track the CPU's.
// Tolerance: |Δ loss| <= 3% of the CPU loss + 0.02 at every step (bf16 rounding makes the two
// trajectories drift apart slowly; a broken backward or optimizer separates them by far more), and
// the loss must fall on both.
TEST_CASE("cuda training: 50 steps of a small UniPool model track the CPU losses",
          "[cuda][train]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const Config c = small_unipool_training_config();
  Trainer cpu(c);
  TrainerOn<CudaBackend> gpu(c);
  uint64_t cpu_counter = 0, gpu_counter = 0;
  const BatchSource cpu_batches = pattern_source(c, &cpu_counter);
  const BatchSource gpu_batches = pattern_source(c, &gpu_counter);
  double first_cpu = 0, last_cpu = 0, first_gpu = 0, last_gpu = 0, worst = 0;
  for (int s = 0; s < c.train.steps; ++s) {
    const StepResult rc = cpu.train_step(cpu_batches);
    const StepResult rg = gpu.train_step(gpu_batches);
    if (s == 0) first_cpu = rc.loss, first_gpu = rg.loss;
    last_cpu = rc.loss, last_gpu = rg.loss;
    const double diff = std::fabs(rg.loss - rc.loss);
    worst = std::max(worst, diff / (std::fabs(rc.loss) + 1e-9));
    INFO("step " << s + 1 << ": loss cpu " << rc.loss << " gpu " << rg.loss << ", grad norm cpu "
                 << rc.grad_norm << " gpu " << rg.grad_norm);
    REQUIRE(diff <= 0.03 * std::fabs(rc.loss) + 0.02);
  }
  std::printf(
      "cuda training vs cpu: worst relative loss difference over %d steps %.4f; loss %.4f"
      " -> %.4f (cpu), %.4f -> %.4f (gpu)\n",
      c.train.steps, worst, first_cpu, last_cpu, first_gpu, last_gpu);
  CHECK(last_cpu < first_cpu - 0.5);
  CHECK(last_gpu < first_gpu - 0.5);
}

namespace {

struct GpuRun {
  std::vector<double> losses;
  std::vector<float> params, exp_avg, exp_avg_sq;
  PoolLossState pool;
};

// Runs steps [from, to) of a GPU trainer fed by the pattern batches; optionally starts from saved
// state (the checkpoint's content: weights, moments, step, pool state, data position).
GpuRun gpu_run(const Config& c, int to, const GpuRun* resume_from = nullptr, int from = 0) {
  TrainerOn<CudaBackend> t(c);
  uint64_t counter = uint64_t(from) * c.train.grad_accum;  // the data position
  if (resume_from != nullptr) {
    const auto host = t.gather_state();
    std::copy(resume_from->params.begin(), resume_from->params.end(), host.params);
    std::copy(resume_from->exp_avg.begin(), resume_from->exp_avg.end(), host.exp_avg);
    std::copy(resume_from->exp_avg_sq.begin(), resume_from->exp_avg_sq.end(), host.exp_avg_sq);
    t.scatter_state();
    t.model.set_pool_state(resume_from->pool);
    t.step = from;
  }
  const BatchSource batches = pattern_source(c, &counter);
  GpuRun r;
  while (t.step < to) r.losses.push_back(t.train_step(batches).loss);
  const auto host = t.gather_state();
  r.params.assign(host.params, host.params + t.layout.arena_size);
  r.exp_avg.assign(host.exp_avg, host.exp_avg + t.layout.arena_size);
  r.exp_avg_sq.assign(host.exp_avg_sq, host.exp_avg_sq + t.layout.arena_size);
  r.pool = t.model.pool_state();
  return r;
}

}  // namespace

TEST_CASE(
    "cuda training: two runs with the same seed are bitwise identical, and a resumed run "
    "equals the uninterrupted one",
    "[cuda][train]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  Config c = small_unipool_training_config();
  c.train.steps = 8;
  const GpuRun a = gpu_run(c, 8), b = gpu_run(c, 8);
  REQUIRE(a.losses.size() == 8);
  CHECK(a.losses == b.losses);
  CHECK(test::bitwise_equal(a.params, b.params));
  CHECK(test::bitwise_equal(a.exp_avg, b.exp_avg));
  CHECK(test::bitwise_equal(a.exp_avg_sq, b.exp_avg_sq));

  const GpuRun first = gpu_run(c, 3);
  const GpuRun rest = gpu_run(c, 8, &first, 3);
  std::vector<double> joined = first.losses;
  joined.insert(joined.end(), rest.losses.begin(), rest.losses.end());
  CHECK(joined == a.losses);
  CHECK(test::bitwise_equal(rest.params, a.params));
  CHECK(test::bitwise_equal(rest.exp_avg_sq, a.exp_avg_sq));
  CHECK(rest.pool.ghat == a.pool.ghat);
}

// Activation recompute on the GPU: the MoE block or whole layers recomputed in the backward give
// bitwise the run that kept every activation, with ZeRO-1 on one rank as well.
TEST_CASE("cuda training: recompute moe and full are bitwise the run without recompute",
          "[cuda][train]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  Config c = small_unipool_training_config();
  c.train.steps = 4;
  const GpuRun plain = gpu_run(c, 4);
  for (Recompute r : {Recompute::moe, Recompute::full}) {
    INFO("recompute " << name_of(r));
    Config rc = c;
    rc.train.recompute = r;
    rc.train.zero = 1;
    const GpuRun run = gpu_run(rc, 4);
    CHECK(run.losses == plain.losses);
    CHECK(test::bitwise_equal(run.params, plain.params));
    CHECK(test::bitwise_equal(run.exp_avg_sq, plain.exp_avg_sq));
    CHECK(run.pool.ghat == plain.pool.ghat);
  }
}

// The GPU model and the CPU model share one checkpoint format: weights written from a GPU trainer
// load into a CPU model that then computes the same loss (within bf16 tolerance).
// UniPool-lock on the GPU: the compact path (the K columns of each layer's set) against the whole
// width with the others faded to 0 and hidden: the same routes and LM loss, the gradients bit for
// bit (the entropy term sums each column alone, the zero columns add nothing); the aux loss's
// value only to rounding (the pool term's row sums see another width).
TEST_CASE("cuda lock: the compact path is the whole-width masked path", "[cuda][model]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  test::ModelVariant compact_variant = kVariants[std::size(kVariants) - 1];
  test::ModelVariant masked_variant = compact_variant;
  masked_variant.lock_locked = false;
  const Config c = gpu_test_config(compact_variant);
  const Layout layout = make_layout(c.model);
  const int B = c.train.micro_batch, T = c.model.seq_len;
  Model<CudaBackend> compact(layout, c.loss, B, T), masked(layout, c.loss, B, T);
  test::apply_lock_variant(compact, c, compact_variant);
  test::apply_lock_variant(masked, c, masked_variant);
  REQUIRE(compact.lock_routing().locked);
  REQUIRE(!masked.lock_routing().locked);
  const std::vector<float> w = steered_weights(layout, 5);
  compact.params_from_host(w.data());
  masked.params_from_host(w.data());
  std::vector<int32_t> in(size_t(B) * T), tg(in.size());
  for (int micro = 0; micro < 2; ++micro) {
    pattern_batch(in.data(), tg.data(), B, T, c.model.vocab_size, uint64_t(micro));
    compact.zero_grads();
    masked.zero_grads();
    const Losses a = compact.forward(in.data(), tg.data(), true, 0.5);
    const Losses b = masked.forward(in.data(), tg.data(), true, 0.5);
    compact.backward();
    masked.backward();
    CHECK(a.lm == b.lm);
    CHECK(a.aux == Approx(b.aux).epsilon(1e-5));
    for (int l = 0; l < c.model.n_layer; ++l) {
      CHECK(compact.routed_experts(l) == masked.routed_experts(l));
      for (int32_t e : compact.routed_experts(l)) {
        const auto& set = compact.lock_routing().sets[size_t(l)];
        CHECK(std::find(set.begin(), set.end(), e) != set.end());
      }
    }
  }
  const std::vector<float> ga = compact.grads_to_host(), gb = masked.grads_to_host();
  CHECK(std::memcmp(ga.data(), gb.data(), ga.size() * sizeof(float)) == 0);
}

TEST_CASE("cuda model: weights move between the backends", "[cuda][model]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  Config c = small_unipool_training_config();
  c.train.steps = 3;
  const GpuRun run = gpu_run(c, 3);
  CpuModel<float> cpu_model(make_layout(c.model), c.loss, c.train.micro_batch, c.model.seq_len);
  Model<CudaBackend> gpu_model(make_layout(c.model), c.loss, c.train.micro_batch, c.model.seq_len);
  std::copy(run.params.begin(), run.params.end(), cpu_model.params());
  gpu_model.params_from_host(run.params.data());
  CHECK(test::bitwise_equal(gpu_model.params_to_host(), run.params));
  std::vector<int32_t> in(size_t(c.train.micro_batch) * c.model.seq_len), tg(in.size());
  pattern_batch(in.data(), tg.data(), c.train.micro_batch, c.model.seq_len, c.model.vocab_size, 99);
  const double lc = cpu_model.forward(in.data(), tg.data(), false).lm;
  const double lg = gpu_model.forward(in.data(), tg.data(), false).lm;
  CHECK(std::fabs(lg - lc) <= 5e-3 * lc + 1e-3);
}

#endif  // UNIPOOL_HAVE_CUDA
