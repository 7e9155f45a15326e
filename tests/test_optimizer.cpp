// The CPU optimizer step (engine/optimizer.h, kernels/cpu/optimizer.h): LR schedule, clipping,
// AdamW with decay on rank >= 2 only, and a global norm that counts each shared tensor once and
// does not depend on the thread count; on the small layouts of tests/small_layouts.h, which the
// GPU twin (tests/test_cuda_optimizer.cpp) shares.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/config.h"
#include "engine/optimizer.h"
#include "kernels/cpu/ops.h"
#include "model/layout.h"
#include "tests/catch.h"
#include "tests/small_layouts.h"

using namespace unipool;
using unipool::test::dense_layout;
using unipool::test::small_pool_layout;
using unipool::test::unipool_layout;

TEST_CASE("warmup + cosine schedule", "[optim]") {
  OptimConfig o;
  o.lr = 1.0;
  o.min_lr = 0.1;
  o.warmup_steps = 10;
  const LrPlan plan{110, 0, 0.0};
  CHECK(learning_rate(o, plan, 1) == Approx(0.1));
  CHECK(learning_rate(o, plan, 10) == Approx(1.0));
  CHECK(learning_rate(o, plan, 60) == Approx(0.1 + 0.9 * 0.5));  // halfway through the cosine
  CHECK(learning_rate(o, plan, 110) == Approx(0.1));
  CHECK(learning_rate(o, plan, 200) == Approx(0.1));
  o.warmup_steps = 0;
  CHECK(learning_rate(o, LrPlan{100, 0, 0.0}, 1) ==
        Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 0.01))));
}

TEST_CASE("linear, constant and warmup-stable-decay schedules at chosen steps", "[optim]") {
  OptimConfig o;
  o.lr = 1.0;
  o.min_lr = 0.1;
  o.warmup_steps = 10;
  const LrPlan plan{110, 0, 0.0};
  o.schedule = LrSchedule::linear;
  CHECK(learning_rate(o, plan, 5) == Approx(0.5));  // the warmup is every schedule's
  CHECK(learning_rate(o, plan, 10) == Approx(1.0));
  CHECK(learning_rate(o, plan, 35) == Approx(1.0 - 0.9 * 0.25));
  CHECK(learning_rate(o, plan, 60) == Approx(0.55));
  CHECK(learning_rate(o, plan, 110) == Approx(0.1));
  o.schedule = LrSchedule::constant;
  CHECK(learning_rate(o, plan, 5) == Approx(0.5));
  CHECK(learning_rate(o, plan, 11) == 1.0);
  CHECK(learning_rate(o, plan, 110) == 1.0);
  o.schedule = LrSchedule::wsd;
  o.decay_steps = 20;  // stable through step 90, then down to min_lr at 110
  CHECK(learning_rate(o, plan, 5) == Approx(0.5));
  CHECK(learning_rate(o, plan, 50) == 1.0);
  CHECK(learning_rate(o, plan, 90) == 1.0);
  CHECK(learning_rate(o, plan, 100) == Approx(0.55));
  CHECK(learning_rate(o, plan, 110) == Approx(0.1));
  o.decay_steps = 100;  // a decay longer than the stable phase starts at the warmup's end
  CHECK(learning_rate(o, plan, 10) == Approx(1.0));
  CHECK(learning_rate(o, plan, 60) == Approx(0.55));
}

TEST_CASE("a resumed run with another train.steps continues the learning rate", "[optim]") {
  OptimConfig o;
  o.lr = 6e-4;
  o.min_lr = 6e-5;
  o.warmup_steps = 10;
  for (LrSchedule kind : {LrSchedule::cosine, LrSchedule::linear, LrSchedule::wsd}) {
    CAPTURE(name_of(kind));
    o.schedule = kind;
    o.decay_steps = kind == LrSchedule::wsd ? 50 : 0;
    const LrPlan first{200, 0, 0.0};
    const double at_200 = learning_rate(o, first, 200), at_180 = learning_rate(o, first, 180);
    // Resumed at step 180 (inside every decay) with the horizon doubled: step 181 gets about
    // what the old plan gave it, the rate still falls, and min_lr comes at the new end.
    std::vector<std::string> notes;
    const LrPlan longer = continue_lr_plan(o, first, o, 400, 180, &notes);
    CHECK(longer.anchor_step == 180);
    CHECK(notes.size() == 1);  // what changes; no warning: the rate is continuous
    CHECK(learning_rate(o, longer, 180) == Approx(at_180));
    const double next = learning_rate(o, longer, 181);
    CHECK(next < at_180);
    CHECK(next > at_200);
    CHECK(learning_rate(o, longer, 300) < next);
    CHECK(learning_rate(o, longer, 400) == Approx(o.min_lr));
    // A second extension composes: continuous again.
    notes.clear();
    const LrPlan again = continue_lr_plan(o, longer, o, 500, 300, &notes);
    CHECK(learning_rate(o, again, 300) == Approx(learning_rate(o, longer, 300)));
    CHECK(learning_rate(o, again, 500) == Approx(o.min_lr));
    // The plan survives the checkpoint's JSON.
    const LrPlan back = LrPlan::from_json(again.to_json());
    CHECK(back.steps == again.steps);
    CHECK(back.anchor_step == again.anchor_step);
    CHECK(back.anchor_progress == again.anchor_progress);
  }
  // Still in wsd's stable phase: the decay simply moves to the new end.
  o.schedule = LrSchedule::wsd;
  o.decay_steps = 50;
  std::vector<std::string> notes;
  const LrPlan moved = continue_lr_plan(o, LrPlan{200, 0, 0.0}, o, 400, 100, &notes);
  CHECK(moved.anchor_step == 0);
  CHECK(learning_rate(o, moved, 349) == o.lr);
  CHECK(learning_rate(o, moved, 400) == Approx(o.min_lr));
  // Nothing changed: the same plan, nothing said.
  notes.clear();
  CHECK(continue_lr_plan(o, moved, o, 400, 150, &notes).steps == 400);
  CHECK(notes.empty());
  // Another peak rate is a jump, said loudly with both values.
  OptimConfig hotter = o;
  hotter.lr = 1e-3;
  notes.clear();
  continue_lr_plan(o, moved, hotter, 400, 150, &notes);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].find("warning: the learning rate jumps: step 150 had 6.000e-04, this run's "
                      "schedule continues from 1.000e-03") == 0);
  // Malformed plans in a checkpoint are errors naming the key.
  CHECK_THROWS_WITH(LrPlan::from_json(nlohmann::json{{"steps", 10}}),
                    HasSubstring("schedule"));
  CHECK_THROWS_WITH(
      LrPlan::from_json(nlohmann::json{{"steps", 10}, {"anchor_step", 12}, {"anchor_progress", 0}}),
      HasSubstring("out of range"));
}

TEST_CASE("clip factor", "[optim]") {
  CHECK(clip_factor(0.5, 1.0) == 1.0);
  CHECK(clip_factor(4.0, 1.0) == Approx(1.0 / (4.0 + 1e-6)));
  CHECK(clip_factor(4.0, 0.0) == 1.0);  // 0 disables clipping
}

namespace {

// One AdamW step (step 1, weight decay 0.1) on every tensor of `layout` against the formula, in
// double; every updated weight lands in the copy arena, and exactly the rank >= 2 tensors decay.
void check_adamw_step(const Layout& layout) {
  std::vector<double> p(layout.arena_size, 0.5), g(layout.arena_size, 0.0),
      m(layout.arena_size, 0.0), v(layout.arena_size, 0.0);
  for (int64_t i = 0; i < layout.arena_size; ++i) g[i] = 0.01 * ((i % 7) - 3);
  OptimConfig o;
  o.weight_decay = 0.1;
  const double lr = 0.01, scale = 0.5;
  const std::vector<double> p0 = p;
  std::vector<double> copy(layout.arena_size, -1.0);
  cpu::adamw_step(layout.optimizer_table, p.data(), g.data(), m.data(), v.data(), copy.data(),
                  adamw_params(o, 1, lr, scale));
  // The copy arena receives every updated weight (the CUDA backend's bf16 copy has this role).
  for (const ParamTensor& t : layout.tensors)
    CHECK(
        std::equal(p.begin() + t.offset, p.begin() + t.offset + t.numel, copy.begin() + t.offset));
  for (const ParamTensor& t : layout.tensors) {
    for (int64_t j = 0; j < t.numel; j += std::max<int64_t>(1, t.numel / 5)) {
      const int64_t i = t.offset + j;
      const double grad = g[i] * scale;
      const double m1 = (1 - o.beta1) * grad, v1 = (1 - o.beta2) * grad * grad;
      const double mh = m1 / (1 - o.beta1), vh = v1 / (1 - o.beta2);
      const double decay = t.decay ? 1 - lr * o.weight_decay : 1.0;
      const double expected = p0[i] * decay - lr * mh / (std::sqrt(vh) + o.eps);
      INFO(t.name << "[" << j << "]");
      CHECK(p[i] == Approx(expected).epsilon(1e-12));
      CHECK(m[i] == Approx(m1).margin(1e-18));
    }
    CHECK(t.decay == (t.shape.size() >= 2));
  }
}

// The sum of squared gradients over `layout` equals the direct sum of squares over its tensors (each
// once), with 1 and 3 threads alike.
void check_grad_sum_squares(const Layout& layout) {
  std::vector<float> g(layout.arena_size, 0.0f);
  double expected = 0;
  for (const ParamTensor& t : layout.tensors)
    for (int64_t i = 0; i < t.numel; ++i) {
      g[t.offset + i] = 0.001f * static_cast<float>((i * 37 + t.offset) % 101 - 50);
      expected += double(g[t.offset + i]) * g[t.offset + i];
    }
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const double n1 = cpu::grad_sum_squares(layout.optimizer_table, g.data());
  omp_set_num_threads(3);
  const double n3 = cpu::grad_sum_squares(layout.optimizer_table, g.data());
  omp_set_num_threads(saved);
  CHECK(n1 == n3);
  CHECK(n1 == Approx(expected).epsilon(1e-12));
}

}  // namespace

TEST_CASE("AdamW: decoupled decay on rank >= 2, bias-corrected step, every tensor moves",
          "[optim]") {
  const Layout layout = small_pool_layout();
  check_adamw_step(layout);
  // A zero gradient still decays a matrix and still moves through its moments on the next step.
  const ParamTensor& pool = layout[layout.find("pools.0.w13")];
  CHECK(pool.decay);
  CHECK(!layout[layout.find("routers.0.scale")].decay);
  CHECK(!layout[layout.find("layers.0.attn_norm.weight")].decay);
}

TEST_CASE("global grad norm counts each shared tensor once and ignores the thread count",
          "[optim]") {
  const Layout layout = small_pool_layout();
  // The pool tensors are used by 4 layers but appear once in the layout: counted once.
  CHECK(layout[layout.find("pools.0.w13")].uses == 4);
  CHECK(layout[layout.find("routers.1.weight")].uses == 2);
  check_grad_sum_squares(layout);
}

TEST_CASE("AdamW and the global grad norm on the CUDA optimizer test's layouts", "[optim]") {
  SECTION("unipool_layout") {
    const Layout layout = unipool_layout();
    check_adamw_step(layout);
    check_grad_sum_squares(layout);
  }
  SECTION("dense_layout") {
    const Layout layout = dense_layout();
    check_adamw_step(layout);
    check_grad_sum_squares(layout);
  }
}
