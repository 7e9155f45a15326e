// What a run tells its researcher while it trains (docs/run-directory.md §metrics.jsonl): every
// step's routing health (per MoE layer the zero-gate share and the experts with a nonzero gate)
// and the warning when a layer stops using its experts; a wall-clock time on every line and an
// elapsed_s that continues across resumes; a learning rate that continues when a resumed run gets
// another train.steps; and a run directory that is never overwritten by accident.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/fsutil.h"
#include "data/loader.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/routing_analysis.h"
#include "engine/safetensors.h"
#include "engine/train.h"
#include "engine/trainer.h"
#include "tests/catch.h"
#include "tests/small_config.h"
#include "tests/tempdir.h"
#include "tests/train_fixtures.h"

using namespace unipool;
using namespace unipool::test;
using json = nlohmann::json;

TEST_CASE("zero-gate alarms: once per crossing, again only after the share fell to half",
          "[run-metrics]") {
  std::vector<char> armed;
  CHECK(analysis::zero_gate_alarms({0.1, 0.6, 0.2}, 0.5, &armed) == std::vector<int>{1});
  CHECK(analysis::zero_gate_alarms({0.1, 0.9, 0.2}, 0.5, &armed).empty());  // still high
  CHECK(analysis::zero_gate_alarms({0.7, 0.3, 0.51}, 0.5, &armed) == std::vector<int>{0, 2});
  CHECK(analysis::zero_gate_alarms({0.7, 0.6, 0.51}, 0.5, &armed).empty());  // 1 never fell to 0.25
  CHECK(analysis::zero_gate_alarms({0.2, 0.24, 0.51}, 0.5, &armed).empty());  // 0 and 1 re-armed
  CHECK(analysis::zero_gate_alarms({0.6, 0.6, 0.6}, 0.5, &armed) == std::vector<int>{0, 1});
  CHECK(analysis::zero_gate_alarms({1.0, 1.0}, 0.0, &armed).empty());  // 0 = never
  std::vector<char> fresh;
  CHECK(analysis::zero_gate_alarms({0.5, 0.50001}, 0.5, &fresh) == std::vector<int>{1});  // > only
}

TEST_CASE("each step logs its MoE layers' zero-gate share and experts used, and warns",
          "[run-metrics]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  Config c = small_config(FfnKind::unipool, corpus, tmp / "run");
  c.train.steps = 3;
  c.optim.lr = 0;  // the routers stay as set below: every step has the same kind of routing
  c.optim.min_lr = 0;
  c.train.zero_gate_warning = 0.2;
  // Routers whose rows are all the same vector v: every expert's logit is v·x, so the tokens
  // with v·x <= 0 get score 0 everywhere (no expert: gate 0) and the others all go to one expert.
  Trainer init(c);
  for (const LayerView& layer : init.layout.layers) {
    const ParamTensor& router = init.layout[layer.router];
    const int64_t width = router.shape[0], d = router.shape[1];
    float* w = init.model.params() + router.offset;
    for (int64_t e = 1; e < width; ++e)
      for (int64_t j = 0; j < d; ++j) w[e * d + j] = w[j];
  }
  const std::string weights = tmp / "one-direction.safetensors";
  write_safetensors(weights, arena_refs(init.layout, init.model.params()));
  TrainOptions opt;
  opt.init_from = weights;
  run_train(c, opt);

  const auto lines = train_lines(c.train.out_dir);
  REQUIRE(lines.size() == 3);
  for (const auto& [step, line] : lines) {
    INFO("step " << step);
    REQUIRE(line.at("zero_gate").size() == size_t(c.model.n_layer));
    REQUIRE(line.at("experts_used").size() == size_t(c.model.n_layer));
    for (int l = 0; l < c.model.n_layer; ++l) {
      const double share = line["zero_gate"][size_t(l)];
      CHECK(share > 0.2);  // about half of the tokens
      CHECK(share < 0.8);
      CHECK(line["experts_used"][size_t(l)] == 1);
    }
  }
  // The warning: each layer once, at step 1 (the share stays high after it).
  const std::vector<json> warnings = events_of(c.train.out_dir, "zero_gate_warning");
  REQUIRE(warnings.size() == size_t(c.model.n_layer));
  for (int l = 0; l < c.model.n_layer; ++l) {
    CHECK(warnings[size_t(l)].at("step") == 1);
    CHECK(warnings[size_t(l)].at("layer") == l);
    CHECK(warnings[size_t(l)].at("zero_gate") == lines.at(1)["zero_gate"][size_t(l)]);
    CHECK(warnings[size_t(l)].at("threshold") == 0.2);
  }
  // The counts are those of the step's forwards: an evaluation of the same two micro-batches
  // (grad_accum 2) with the same weights routes the same way.
  Trainer again(c);
  again.model.params_from_host(init.model.params());
  data::Loader loader(loader_spec(c), data::Split::train);
  again.evaluate([&](int32_t* in, int32_t* tg) { loader.next_batch(c.train.micro_batch, in, tg); },
                 c.train.grad_accum);
  const json health = again.routing_health();
  for (int l = 0; l < c.model.n_layer; ++l) {
    CHECK(health["layers"][size_t(l)]["zero_gate"] == lines.at(1)["zero_gate"][size_t(l)]);
    CHECK(health["layers"][size_t(l)]["experts_used"] == lines.at(1)["experts_used"][size_t(l)]);
  }

  // Without the warning (0) nothing is said; a dense model's lines have no routing keys.
  c.train.zero_gate_warning = 0;
  c.train.out_dir = tmp / "quiet";
  run_train(c, opt);
  CHECK(events_of(c.train.out_dir, "zero_gate_warning").empty());
  Config dense = small_config(FfnKind::dense, corpus, tmp / "dense");
  dense.train.steps = 1;
  run_train(dense, {});
  CHECK_FALSE(train_lines(dense.train.out_dir).at(1).contains("zero_gate"));
}

TEST_CASE("every metrics line has a wall-clock time, and elapsed_s continues across a resume",
          "[run-metrics]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  Config c = small_config(FfnKind::moe, corpus, tmp / "first");
  c.train.steps = 4;
  c.train.ckpt_every = 2;
  c.train.eval_every = 2;
  c.train.eval_batches = 1;
  const double t0 = unix_time();
  run_train(c, {});
  const Config r = resume_into(c, tmp / "second", tmp / "first/ckpt-2");
  const double t1 = unix_time();
  for (const char* dir : {"first", "second"})
    for (const json& line : read_jsonl(tmp / (std::string(dir) + "/metrics.jsonl"))) {
      INFO(line.dump());
      REQUIRE(line.contains("time"));
      CHECK(line["time"].get<double>() >= t0 - 1);
      CHECK(line["time"].get<double>() <= t1 + 1);
    }
  const double saved = json::parse(read_file(tmp / "first/ckpt-2/state.json")).at("elapsed_s");
  CHECK(saved > 0);
  CHECK(saved <= train_lines(tmp / "first").at(3).at("elapsed_s").get<double>());
  const auto resumed = train_lines(r.train.out_dir);
  REQUIRE(resumed.count(3) == 1);
  CHECK(resumed.at(3).at("elapsed_s").get<double>() > saved);
  CHECK(events_of(r.train.out_dir, "resume").at(0).at("elapsed_s") == saved);
  const double later = json::parse(read_file(tmp / "second/ckpt-4/state.json")).at("elapsed_s");
  CHECK(later > resumed.at(3).at("elapsed_s").get<double>());
}

TEST_CASE("resumed with a longer train.steps, the learning rate continues from where it was",
          "[run-metrics]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  Config c = small_config(FfnKind::dense, corpus, tmp / "short");
  c.train.steps = 6;
  c.train.ckpt_every = 3;
  run_train(c, {});
  const auto first = train_lines(c.train.out_dir);
  Config longer = c;
  longer.train.steps = 12;
  resume_into(longer, tmp / "long", tmp / "short/ckpt-3");
  const auto extended = train_lines(tmp / "long");
  const double lr3 = first.at(3).at("lr"), lr4_short = first.at(4).at("lr");
  const double lr4 = extended.at(4).at("lr");
  CHECK(lr4 < lr3);         // still falling: no jump back up
  CHECK(lr4 > lr4_short);   // more slowly, over the longer horizon
  CHECK(extended.at(12).at("lr").get<double>() == Approx(c.optim.min_lr));
  const json plan = json::parse(read_file(tmp / "long/ckpt-12/state.json")).at("schedule");
  CHECK(plan.at("steps") == 12);
  CHECK(plan.at("anchor_step") == 3);
  // The anchored plan resumes bit-exactly: from ckpt-6 of the extended run to the same end.
  resume_into(longer, tmp / "long-again", tmp / "long/ckpt-6");
  const auto again = train_lines(tmp / "long-again");
  for (int step = 7; step <= 12; ++step) {
    INFO("step " << step);
    CHECK(again.at(step).at("lr") == extended.at(step).at("lr"));
    CHECK(again.at(step).at("loss") == extended.at(step).at("loss"));
  }
}

TEST_CASE("a fresh run into a non-empty train.out_dir is refused unless --overwrite",
          "[run-metrics]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const std::string out = tmp / "run";
  const std::string cfg = write_config(tmp, corpus, out, 2, 2);
  REQUIRE(run_binary("train --config '" + cfg + "'", tmp.path).status == 0);
  const std::string metrics = read_file(out + "/metrics.jsonl");
  const std::string weights = read_file(out + "/ckpt-2/model.safetensors");

  const Outcome refused = run_binary("train --config '" + cfg + "' --set train.steps=1", tmp.path);
  INFO(refused.out << refused.err);
  CHECK(refused.status != 0);
  CHECK(contains(refused.err, "train.out_dir '" + out + "' is not empty"));
  CHECK(contains(refused.err, "--overwrite"));
  CHECK(read_file(out + "/metrics.jsonl") == metrics);  // untouched
  CHECK(checkpoint_dirs(out) == std::vector<std::string>{"ckpt-2"});
  // A file of someone else's counts too.
  const std::string other = tmp / "notes";
  make_dirs(other);
  write_file_atomic(other + "/README", "mine\n");
  const Outcome notes = run_binary(
      "train --config '" + cfg + "' --set train.out_dir='" + other + "' --set train.steps=1",
      tmp.path);
  CHECK(notes.status != 0);
  CHECK(contains(notes.err, "README"));
  // --overwrite moves the old run aside whole; --resume and --overwrite do not mix.
  const Outcome both = run_binary("train --config '" + cfg + "' --resume --overwrite", tmp.path);
  CHECK(both.status != 0);
  CHECK(contains(both.err, "cannot be combined"));
  const Outcome replaced =
      run_binary("train --config '" + cfg + "' --set train.steps=1 --overwrite", tmp.path);
  INFO(replaced.out << replaced.err);
  REQUIRE(replaced.status == 0);
  std::string aside;
  for (const std::string& n : list_directory(out))
    if (n.rfind("replaced-", 0) == 0) aside = out + "/" + n;
  REQUIRE(!aside.empty());
  CHECK(contains(replaced.out, "moved to " + aside));
  CHECK(read_file(aside + "/metrics.jsonl") == metrics);
  CHECK(read_file(aside + "/ckpt-2/model.safetensors") == weights);
  CHECK(train_lines(out).size() == 1);
  CHECK(checkpoint_dirs(out) == std::vector<std::string>{"ckpt-1"});
}
