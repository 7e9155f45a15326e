// UniPool-lock (docs/model.md §UniPool-lock): the lock.* keys and their preconditions, the
// curriculum's schedule (α, β), its decisions at validations (snapshots, freeze, lock, fail-stop)
// and its checkpoint form (engine/lock.h); the model's routing restriction: every route after the
// lock stays in the layer's set, and the compact path equals the whole-width masked path bit for
// bit (model/model.h).
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/config.h"
#include "engine/lock.h"
#include "model/init.h"
#include "model/layout.h"
#include "model/model.h"
#include "tests/catch.h"

using namespace unipool;
using json = nlohmann::json;

namespace {

// A valid UniPool-lock config: 4 layers, a pool of 16 (K = 4), 120 steps, evaluation every 10;
// the freeze at step 30 and the lock at 60 (fractions 1/2 and 1/4), β's warm-up over 12 steps.
json lock_json() {
  return {{"model",
           {{"ffn", "unipool"},
            {"n_layer", 4},
            {"d_model", 16},
            {"n_head", 2},
            {"n_kv_head", 1},
            {"ffn_hidden", 16},
            {"seq_len", 8},
            {"vocab_size", 32},
            {"vocab_multiple", 8},
            {"pool_size", 16},
            {"router", "norm"}}},
          {"lock",
           {{"enabled", true},
            {"lock_fraction", 0.5},
            {"anneal_fraction", 0.25},
            {"entropy_warmup_fraction", 0.1},
            {"entropy_target", 3}}},
          {"train", {{"steps", 120}, {"eval_every", 10}, {"micro_batch", 2}}}};
}

std::string config_error(const std::vector<std::string>& overrides) {
  try {
    load_config(lock_json(), overrides, /*check_data=*/false);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Counts [L][M] where layer l sends most of its tokens to experts 4l..4l+3 (a partition exists).
std::vector<std::vector<double>> blocky_counts(int L, int M, int K, double inside, double outside) {
  std::vector<std::vector<double>> c(size_t(L), std::vector<double>(size_t(M), outside));
  for (int l = 0; l < L; ++l)
    for (int j = 0; j < K; ++j) c[size_t(l)][size_t(l * K + j)] = inside;
  return c;
}

}  // namespace

TEST_CASE("lock.* keys: defaults, and every precondition names its key", "[lock]") {
  const Config c = load_config(lock_json(), {}, false);
  CHECK(c.model.lock.enabled);
  CHECK(c.model.lock_set_size() == 4);
  const LockSchedule s = lock_schedule(c);
  CHECK(s.freeze == 30);
  CHECK(s.lock == 60);
  CHECK(s.anneal_steps == 30);
  CHECK(s.warmup == 12);
  const LockConfig defaults;
  CHECK(defaults.lock_fraction == 2.0 / 60);
  CHECK(defaults.coverage == 0.95);
  CHECK(defaults.compact);
  CHECK(config_defaults()["lock"]["enabled"] == false);

  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"model.ffn=moe"}, "model.ffn = unipool"},
      {{"model.pool_group=2"}, "model.pool_group"},
      {{"model.router=softmax"}, "model.router = norm"},
      {{"model.router_share=2"}, "model.router_share"},
      {{"loss.aux_coeff=0.01"}, "loss.aux_coeff"},
      {{"loss.pool_aux_coeff=0"}, "loss.pool_aux_coeff"},
      {{"model.pool_size=18"}, "model.pool_size"},
      {{"model.top_k=5"}, "model.top_k"},
      {{"lock.anneal_fraction=0.5"}, "lock.anneal_fraction"},
      {{"lock.entropy_warmup_fraction=0.3"}, "lock.entropy_warmup_fraction"},
      {{"lock.entropy_target=5"}, "lock.entropy_target"},
      {{"lock.coverage=0"}, "lock.coverage"},
      {{"lock.coverage=1.5"}, "lock.coverage"},
      {{"lock.ema_alpha=0"}, "lock.ema_alpha"},
      {{"lock.ema_lookback=0"}, "lock.ema_lookback"},
      {{"lock.loss_excess_consecutive=0"}, "lock.loss_excess_consecutive"},
      {{"lock.max_val_loss_excess=-1"}, "lock.max_val_loss_excess"},
      {{"lock.lock_fraction=1"}, "lock.lock_fraction"},
      {{"train.eval_every=0"}, "train.eval_every"},
      {{"train.eval_every=20"}, "train.eval_every"},  // does not divide the freeze (30)
      // the anneal: round(0.25 · 2) = round(0.5) = 0 steps (halves to even, as Python's round)
      {{"train.steps=2", "train.eval_every=1"}, "lock.anneal_fraction"},
      {{"model.n_layer=1", "model.pool_size=16"}, "model.n_layer"},
  };
  for (const auto& [overrides, key] : bad) {
    INFO(overrides[0]);
    CHECK_THAT(config_error(overrides), HasSubstring(key));
  }
  CHECK(config_error({"lock.enabled=false", "model.router=softmax"}).empty());
}

TEST_CASE("lock curriculum: α's cosine over the anneal, β's ramp, the phases", "[lock]") {
  const Config c = load_config(lock_json(), {}, false);
  LockCurriculum lc(c);
  CHECK(lc.phase() == LockCurriculum::Phase::explore);
  CHECK(lc.routing(0).sets.empty());
  CHECK(lc.entropy_coeff(0) == 0);
  CHECK(lc.entropy_coeff(6) == Approx(5e-3 * 0.5));
  CHECK(lc.entropy_coeff(12) == 5e-3);
  CHECK(lc.entropy_coeff(100) == 5e-3);

  // Validations before the freeze only record snapshots.
  const auto counts = blocky_counts(4, 16, 4, 100, 1);
  for (int step = 10; step < 30; step += 10) {
    const auto d = lc.after_evaluation(step, 3.0, counts);
    CHECK(d.stop.empty());
    CHECK(d.metrics["phase"] == "explore");
    CHECK(!d.metrics.contains("event"));
  }
  CHECK(lc.to_json()["history"].size() == 2);
  // The freeze: the partition follows the counts (each layer keeps its block).
  const auto freeze = lc.after_evaluation(30, 2.5, counts);
  CHECK(freeze.metrics["event"] == "freeze");
  CHECK(freeze.metrics["partition"]["status"] == "optimal");
  REQUIRE(lc.phase() == LockCurriculum::Phase::anneal);
  for (int l = 0; l < 4; ++l)
    CHECK(lc.sets()[size_t(l)] == std::vector<int>{4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3});
  CHECK(lc.to_json()["history"].empty());
  // α: 0 at the freeze's step, ½ halfway, below 1 on the last anneal step, 1 once locked.
  CHECK(lc.routing(30).alpha == 0);
  CHECK(lc.routing(45).alpha == Approx(0.5).margin(1e-15));
  CHECK(lc.routing(59).alpha < 1);
  CHECK(lc.routing(59).alpha > 0.99);
  CHECK(!lc.routing(59).locked);
  CHECK(lc.routing(45).sets == lc.sets());
  // The lock.
  const auto lock = lc.after_evaluation(60, 2.4, counts);
  CHECK(lock.metrics["event"] == "lock");
  CHECK(lock.metrics["phase"] == "anneal");  // the phase that produced these counts
  REQUIRE(lc.phase() == LockCurriculum::Phase::locked);
  CHECK(lc.routing(60).locked);
  CHECK(lc.routing(60).alpha == 1);
  CHECK(lc.routing(59).alpha < 1);  // the routing step 60 had (a checkpoint's evaluation)
}

TEST_CASE("lock curriculum: the metrics, the fail-stop, a route outside a locked set", "[lock]") {
  const Config c = load_config(lock_json(), {}, false);
  LockCurriculum lc(c);
  auto counts = blocky_counts(4, 16, 4, 30, 0);
  counts[0][5] = 10;  // layer 0: 120 tokens in its block, 10 on expert 5 (layer 1's)
  counts[2][8] = 0;   // layer 2 leaves one of its experts empty
  lc.after_evaluation(10, 3.0, counts);
  lc.after_evaluation(20, 3.0, counts);
  const auto f = lc.after_evaluation(30, 2.0, counts);
  CHECK(f.metrics["coverage"][0] == 1.0);  // before the freeze every expert is visible
  CHECK(f.metrics["effective_k"][1] == Approx(4.0));
  // After the freeze the metrics describe the sets.
  const auto m = lc.after_evaluation(40, 2.02, counts);
  CHECK(m.stop.empty());
  CHECK(m.metrics["coverage"][0] == Approx(120.0 / 130));
  CHECK(m.metrics["off_mask_routes"] == 10.0);
  CHECK(m.metrics["dead_in_mask"] == 1);
  CHECK(m.metrics["reference_val_loss"] == 2.0);
  CHECK(m.metrics["loss_excess_consecutive"] == 0);
  // Fail-stop: two validations in a row above 2.0 + 0.05; one good one in between resets.
  CHECK(lc.after_evaluation(50, 2.06, counts).stop.empty());
  CHECK(lc.after_evaluation(60, 2.01, counts).metrics["loss_excess_consecutive"] == 0);
  // Locked now: a route outside a set is a broken lock.
  CHECK_THROWS_WITH(lc.after_evaluation(70, 2.0, counts), HasSubstring("outside the locked sets"));
  counts[0][5] = 0;
  CHECK(lc.after_evaluation(70, 2.06, counts).stop.empty());
  const auto stop = lc.after_evaluation(80, 2.07, counts);
  CHECK_THAT(stop.stop, HasSubstring("fail-stop at step 80"));
  CHECK_THAT(stop.stop, HasSubstring("2 validations in a row"));
  // The validation at the last step decides nothing.
  LockCurriculum end(c);
  const auto last = end.after_evaluation(120, 9.0, counts);
  CHECK(last.stop.empty());
  CHECK(end.to_json()["history"].empty());
}

TEST_CASE("lock curriculum: the checkpoint form round-trips and is checked", "[lock]") {
  const Config c = load_config(lock_json(), {}, false);
  LockCurriculum lc(c);
  std::vector<std::vector<double>> counts(4, std::vector<double>(16));
  std::mt19937 gen(3);
  for (auto& row : counts)
    for (auto& x : row) x = double(gen() % 50);
  lc.after_evaluation(10, 3.0, counts);
  lc.after_evaluation(20, 2.9, counts);
  const json explore = lc.to_json();
  lc.after_evaluation(30, 2.8, counts);
  const json anneal = lc.to_json();
  CHECK(anneal["partition"].size() == 4);
  CHECK(anneal["phase"] == "anneal");

  LockCurriculum again(c);
  again.from_json(explore, 20);
  CHECK(again.to_json() == explore);
  // The same decision from the restored state: the EMA over the same snapshots.
  again.after_evaluation(30, 2.8, counts);
  CHECK(again.to_json() == anneal);
  for (int done : {30, 31, 44, 59}) CHECK(again.routing(done).alpha == lc.routing(done).alpha);

  LockCurriculum wrong_step(c);
  CHECK_THROWS_WITH(wrong_step.from_json(anneal, 20), HasSubstring("lock.phase"));
  Config other = c;
  other.model.lock.coverage = 0.9;
  LockCurriculum changed(other);
  CHECK_THROWS_WITH(changed.from_json(anneal, 30), HasSubstring("lock.coverage changed"));
  json bad = anneal;
  bad["partition"][1][0] = bad["partition"][0][0];  // one expert in two sets
  CHECK_THROWS_WITH(LockCurriculum(c).from_json(bad, 30), HasSubstring("in two sets"));
  bad = anneal;
  bad["history"] = json::array({json::array({1, 2})});
  CHECK_THROWS_WITH(LockCurriculum(c).from_json(bad, 30), HasSubstring("lock.history"));
}

namespace {

// The lock config as a model: 4 layers, a pool of 16 (K = 4), top-2, pool loss and entropy term.
Config lock_model_config() {
  Config c = load_config(lock_json(), {"model.top_k=2", "loss.z_loss_coeff=0.001"}, false);
  c.model.init_std = 0.3;
  return c;
}

// One training micro-batch (forward + backward) of `model` from fresh weights of `seed`, with the
// pool loss's ĝ filled by a first micro-batch: the losses, the gradients and every layer's routes.
struct Pass {
  Losses losses;
  std::vector<float> grads;
  std::vector<std::vector<int32_t>> routes;
};
Pass train_pass(CpuModel<float>& model, const Config& c, const LockRouting& routing) {
  const Layout& layout = model.layout();
  init_parameters(layout, model.params(), 5);
  model.set_lock_routing(routing);
  model.set_entropy_coeff(0.01);
  std::vector<int32_t> in(size_t(2) * c.model.seq_len), tg(in.size());
  std::mt19937 gen(9);
  Pass p;
  for (int micro = 0; micro < 2; ++micro) {
    for (size_t i = 0; i < in.size(); ++i) {
      in[i] = int32_t(gen() % c.model.vocab_size);
      tg[i] = int32_t(gen() % c.model.vocab_size);
    }
    model.zero_grads();
    p.losses = model.forward(in.data(), tg.data(), true, 0.5);
    model.backward();
  }
  p.grads.assign(model.grads(), model.grads() + layout.arena_size);
  for (int l = 0; l < c.model.n_layer; ++l) p.routes.push_back(model.routed_experts(l));
  return p;
}

}  // namespace

TEST_CASE(
    "locked routing: routes stay in the sets, the compact path is the whole width bit for bit",
    "[lock]") {
  const Config c = lock_model_config();
  const Layout layout = make_layout(c.model);
  // A partition that is not the identity: layer l owns experts l, l + 4, l + 8, l + 12.
  LockRouting locked;
  for (int l = 0; l < 4; ++l) locked.sets.push_back({l + 12, l, l + 8, l + 4});  // any order
  locked.alpha = 1;
  locked.locked = true;
  LockRouting whole = locked;
  whole.locked = false;  // α = 1 on the whole width: the others faded to 0 and hidden

  CpuModel<float> a(layout, c.loss, 2, c.model.seq_len), b(layout, c.loss, 2, c.model.seq_len);
  const Pass compact = train_pass(a, c, locked);
  const Pass masked = train_pass(b, c, whole);
  for (int l = 0; l < 4; ++l) {
    INFO("layer " << l);
    for (int32_t e : compact.routes[size_t(l)]) CHECK(e % 4 == l);
    CHECK(compact.routes[size_t(l)] == masked.routes[size_t(l)]);
  }
  CHECK(compact.losses.lm == masked.losses.lm);
  CHECK(compact.losses.aux == masked.losses.aux);
  CHECK(compact.losses.aux > 0);
  size_t differ = 0;
  for (size_t i = 0; i < compact.grads.size(); ++i)
    differ += std::memcmp(&compact.grads[i], &masked.grads[i], sizeof(float)) != 0 ? 1 : 0;
  CHECK(differ == 0);

  // Without the lock the same weights route across the pool (the test has teeth).
  CpuModel<float> free_model(layout, c.loss, 2, c.model.seq_len);
  const Pass unlocked = train_pass(free_model, c, LockRouting{});
  bool left_the_sets = false;
  for (int l = 0; l < 4; ++l)
    for (int32_t e : unlocked.routes[size_t(l)]) left_the_sets |= e % 4 != l;
  CHECK(left_the_sets);

  // Bad routings are errors.
  CHECK_THROWS_WITH(a.set_lock_routing({{{0, 1, 2, 3}}, 1, true}),
                    HasSubstring("one set per layer"));
  LockRouting twice = locked;
  twice.sets[1][0] = twice.sets[0][0];
  CHECK_THROWS_WITH(a.set_lock_routing(twice), HasSubstring("in two sets"));
  LockRouting early = locked;
  early.alpha = 0.5;
  CHECK_THROWS_WITH(a.set_lock_routing(early), HasSubstring("alpha = 1"));
}
