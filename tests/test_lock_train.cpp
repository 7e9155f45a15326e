// UniPool-lock end to end (engine/lock.h through engine/train.cpp): a tiny run through every phase
// (explore, the freeze, the anneal, the lock, locked) whose sets partition the pool and whose
// routes after the lock never leave them; a resume in each phase (and at both boundaries) and the
// runs with activation recompute equal the uninterrupted run bit for bit; `unipool eval` of a
// checkpoint gives the val_loss logged at its step; a checkpoint refuses to resume with other lock
// settings or without the lock; the fail-stop ends a run whose validation loss climbs.
//
// The corpus is /usr/share/common-licenses/GPL-3, as in tests/test_train.cpp.
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/fsutil.h"
#include "engine/config.h"
#include "engine/eval.h"
#include "engine/train.h"
#include "tests/catch.h"
#include "tests/cuda_test_util.h"
#include "tests/small_config.h"
#include "tests/tempdir.h"
#include "tests/train_fixtures.h"

using namespace unipool;
using namespace unipool::test;
using json = nlohmann::json;

namespace {

// The small UniPool config (2 layers, a pool of 8: K = 4) with the lock: 24 steps, evaluation and
// a checkpoint every 2; the freeze after step 6, the lock after step 12, β's warm-up over 3 steps.
Config lock_config(const std::string& corpus, const std::string& out_dir) {
  Config c = small_config(FfnKind::unipool, corpus, out_dir);
  c.train.steps = 24;
  c.train.eval_every = 2;
  c.train.eval_batches = 2;
  c.train.ckpt_every = 2;
  c.train.ckpt_keep = 100;
  c.model.top_k = 2;
  LockConfig& lk = c.model.lock;
  lk.enabled = true;
  lk.lock_fraction = 0.5;
  lk.anneal_fraction = 0.25;
  lk.entropy_warmup_fraction = 0.125;
  lk.entropy_target = 2;
  lk.entropy_coeff = 0.01;
  validate_config(c, /*check_data=*/true);
  return c;
}

std::map<int, json> eval_lines(const std::string& out_dir) {
  std::map<int, json> lines;
  for (const json& j : read_jsonl(out_dir + "/metrics.jsonl"))
    if (j.contains("val_loss")) lines[j.at("step").get<int>()] = j;
  return lines;
}

}  // namespace

TEST_CASE("UniPool-lock: a run through every phase, resumed in each bit for bit", "[lock][train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const Config c = lock_config(corpus, tmp / "full");
  run_train(c, {});

  // The phases on the evaluation lines.
  const auto evals = eval_lines(c.train.out_dir);
  REQUIRE(evals.size() == 12);
  for (const auto& [step, line] : evals) {
    INFO("step " << step);
    REQUIRE(line.contains("lock"));
    const json& lk = line["lock"];
    const char* phase = step <= 6 ? "explore" : step <= 12 ? "anneal" : "locked";
    CHECK(lk["phase"] == phase);
    CHECK(lk.contains("event") == (step == 6 || step == 12));
    if (step == 6) CHECK(lk["event"] == "freeze");
    if (step == 12) CHECK(lk["event"] == "lock");
    if (step > 12) {  // the lock holds: every route inside the layer's set
      CHECK(lk["off_mask_routes"] == 0.0);
      for (const json& share : lk["coverage"]) CHECK(share == 1.0);
      CHECK(lk["alpha"] == 1.0);
    }
    if (step <= 6) CHECK(lk["alpha"] == 0.0);
    if (step == 10) CHECK(lk["alpha"].get<double>() == Approx(0.5));  // ½(1 − cos(π·3/6)), done 9
  }
  // β ramps over 3 steps, then stays.
  CHECK(evals.at(2)["lock"]["entropy_coeff"].get<double>() == Approx(0.01 / 3));
  CHECK(evals.at(4)["lock"]["entropy_coeff"] == 0.01);

  // The partition in the checkpoint: 2 sets of 4 that cover the pool.
  const json state = json::parse(read_file(tmp / "full/ckpt-24/state.json"));
  REQUIRE(state.contains("lock"));
  CHECK(state["lock"]["phase"] == "locked");
  const json& partition = state["lock"]["partition"];
  REQUIRE(partition.size() == 2);
  std::set<int> experts;
  for (const json& set : partition) {
    CHECK(set.size() == 4);
    for (const json& e : set) experts.insert(e.get<int>());
  }
  CHECK(experts.size() == 8);
  CHECK(json::parse(read_file(tmp / "full/ckpt-4/state.json"))["lock"]["phase"] == "explore");
  CHECK(json::parse(read_file(tmp / "full/ckpt-8/state.json"))["lock"]["phase"] == "anneal");

  // Resumed before, at and inside the anneal, at the lock and after it: the same run.
  const std::string final_weights = read_file(tmp / "full/ckpt-24/model.safetensors");
  const auto full_lines = train_lines(c.train.out_dir);
  for (int at : {4, 6, 8, 12, 16}) {
    INFO("resumed at step " << at);
    const std::string out = tmp / ("resumed-" + std::to_string(at));
    resume_into(c, out, tmp / ("full/ckpt-" + std::to_string(at)));
    CHECK(read_file(out + "/ckpt-24/model.safetensors") == final_weights);
    CHECK(read_file(out + "/ckpt-24/optimizer.safetensors") ==
          read_file(tmp / "full/ckpt-24/optimizer.safetensors"));
    const auto lines = train_lines(out);
    for (int step = at + 1; step <= 24; ++step)
      CHECK(lines.at(step).at("loss") == full_lines.at(step).at("loss"));
    CHECK(json::parse(read_file(out + "/ckpt-24/state.json"))["lock"] == state["lock"]);
  }

  // Activation recompute reruns the locked routing in the backward: the same run, bit for bit.
  for (Recompute r : {Recompute::moe, Recompute::full}) {
    INFO("train.recompute = " << name_of(r));
    Config rc = c;
    rc.train.recompute = r;
    rc.train.out_dir = tmp / (std::string("recompute-") + name_of(r));
    run_train(rc, {});
    CHECK(read_file(rc.train.out_dir + "/ckpt-24/model.safetensors") == final_weights);
  }

  // `unipool eval` of a checkpoint uses the routing of its last step: the logged val_loss, in the
  // anneal and locked (and at the lock's step, whose evaluation ran before the lock).
  for (int at : {10, 12, 16}) {
    INFO("eval of ckpt-" << at);
    EvalOptions o;
    o.checkpoint = tmp / ("full/ckpt-" + std::to_string(at));
    const EvalResult r = run_eval(o);
    CHECK(r.loss == Approx(evals.at(at)["val_loss"].get<double>()).epsilon(1e-6));
  }
}

TEST_CASE("UniPool-lock: a checkpoint resumes only with its own lock settings", "[lock][train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  Config c = lock_config(corpus, tmp / "full");
  c.train.steps = 8;  // the freeze after step 2, the lock after step 4
  c.train.ckpt_every = 3;
  run_train(c, {});
  const std::string ckpt = tmp / "full/ckpt-3";
  CHECK(json::parse(read_file(ckpt + "/state.json"))["lock"]["phase"] == "anneal");

  Config other = c;
  other.model.lock.coverage = 0.5;
  CHECK_THROWS_WITH(resume_into(other, tmp / "other", ckpt), HasSubstring("lock.coverage changed"));
  Config off = c;
  off.model.lock.enabled = false;
  CHECK_THROWS_WITH(resume_into(off, tmp / "off", ckpt), HasSubstring("lock.enabled = true"));
  Config longer = c;
  longer.train.steps = 16;
  CHECK_THROWS_WITH(resume_into(longer, tmp / "longer", ckpt), HasSubstring("train.steps"));
}

TEST_CASE("UniPool-lock: the fail-stop ends a run whose validation loss climbs after the freeze",
          "[lock][train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  Config c = lock_config(corpus, tmp / "run");
  c.train.ckpt_every = 6;
  c.train.steps = 24;
  run_train(c, {});  // a healthy run; its checkpoint after the freeze holds the reference loss
  const json at_freeze = json::parse(read_file(tmp / "run/ckpt-6/state.json"));
  REQUIRE(at_freeze["lock"]["reference_val_loss"].is_number());

  // The same run from there with a learning rate that wrecks the model: the validation loss
  // climbs above the freeze's at once, twice in a row (steps 8 and 10) stops it.
  Config wrecked = c;
  wrecked.optim.lr = 1.0;
  wrecked.optim.min_lr = 1.0;
  std::string message;
  try {
    resume_into(wrecked, tmp / "wrecked", tmp / "run/ckpt-6");
  } catch (const Error& e) {
    message = e.what();
  }
  INFO(message);
  REQUIRE(!message.empty());
  CHECK_THAT(message, HasSubstring("UniPool-lock fail-stop at step 10"));
  CHECK_THAT(message, HasSubstring("2 validations in a row"));
  CHECK_THAT(message, HasSubstring("Last good checkpoint: " + tmp / "run/ckpt-6"));
  // The stopping validation is logged with the count that stopped it; nothing after it, and no
  // checkpoint of the stopping step.
  const auto evals = eval_lines(tmp / "wrecked");
  REQUIRE(evals.count(10) == 1);
  CHECK(evals.rbegin()->first == 10);
  const json& last = evals.at(10)["lock"];
  CHECK(last["loss_excess_consecutive"] == 2);
  CHECK(evals.at(8)["lock"]["loss_excess_consecutive"] == 1);
  CHECK(evals.at(10)["val_loss"].get<double>() >
        at_freeze["lock"]["reference_val_loss"].get<double>() + 0.05);
  CHECK(train_lines(tmp / "wrecked").rbegin()->first == 10);
  CHECK(!path_exists(tmp / "wrecked/ckpt-10"));
}

TEST_CASE("cuda UniPool-lock: a run through every phase, reproducible and resumed bit for bit",
          "[cuda][lock][train]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  TempDir tmp;
  const std::string corpus = tmp / "docs";  // the repository's notes as a byte corpus
  REQUIRE(write_gpl_corpus(corpus, UNIPOOL_SOURCE_DIR "/docs/backward.md"));
  auto gpu_config = [&](const std::string& out) {
    Config c = lock_config(corpus, out);
    c.model.d_model = 64;  // head size 32: one the GPU attention supports
    c.model.ffn_hidden = 64;
    c.train.backend = BackendKind::cuda;
    c.train.ckpt_every = 4;
    validate_config(c, /*check_data=*/true);
    return c;
  };
  const Config a = gpu_config(tmp / "a"), b = gpu_config(tmp / "b");
  run_train(a, {});
  run_train(b, {});
  const std::string weights = read_file(tmp / "a/ckpt-24/model.safetensors");
  CHECK(read_file(tmp / "b/ckpt-24/model.safetensors") == weights);
  const json state = json::parse(read_file(tmp / "a/ckpt-24/state.json"));
  CHECK(state["lock"]["phase"] == "locked");
  for (const auto& [step, line] : eval_lines(a.train.out_dir))
    if (step > 12) CHECK(line["lock"]["off_mask_routes"] == 0.0);
  for (int at : {8, 16}) {  // inside the anneal, and locked
    INFO("resumed at " << at);
    const std::string out = tmp / ("resumed-" + std::to_string(at));
    resume_into(a, out, tmp / ("a/ckpt-" + std::to_string(at)));
    CHECK(read_file(out + "/ckpt-24/model.safetensors") == weights);
  }
}
