// End-to-end tests of the training loop (engine/train.cpp, engine/trainer.cpp,
// engine/checkpoint.cpp and the `unipool train` CLI): bitwise determinism across runs and thread
// counts, bit-exact resume (data position, AdamW moments and the pool loss's ĝ), checkpoint
// contents and pruning, the loss falling on real text, non-finite losses stopping the run with the
// last good checkpoint untouched,
// --init-from, bad input through the real binary, and gradient accumulation being a mean.
//
// The corpus is /usr/share/common-licenses/GPL-3 (present on every Debian) cut into paragraph
// documents and byte-encoded (vocabulary 257, EOD 256); the cases that need it are skipped with a
// warning when the file is missing.
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/shards.h"
#include "data/tokenize.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "base/error.h"
#include "base/fsutil.h"
#include "engine/safetensors.h"
#include "engine/train.h"
#include "engine/trainer.h"
#include "model/init.h"
#include "model/layout.h"
#include "tests/catch.h"
#include "tests/cuda_test_util.h"
#include "tests/small_config.h"
#include "tests/tempdir.h"
#include "tests/train_fixtures.h"

using unipool::test::small_config;
using unipool::test::TempDir;
using namespace unipool::test;  // tests/train_fixtures.h, tests/errors.h

using namespace unipool;
using json = nlohmann::json;

namespace {

std::vector<TensorRef> file_refs(const SafetensorsFile& f) {
  std::vector<TensorRef> refs;
  for (const std::string& name : f.order) {
    const SafeTensor& t = f.tensors.at(name);
    refs.push_back({name, t.shape, t.data.data()});
  }
  return refs;
}

std::string g9(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

const FfnKind kVariantNames[] = {FfnKind::dense, FfnKind::moe, FfnKind::unipool};

}  // namespace

// ------------------------------------------------------------------------------------------------
// 1. Determinism

TEST_CASE(
    "training is bitwise reproducible: same seed, same losses and weights, 1 thread = 2 threads",
    "[train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  for (FfnKind ffn : kVariantNames) {
    const std::string variant = name_of(ffn);
    DYNAMIC_SECTION(variant) {
      std::vector<std::string> runs;
      for (int threads : {2, 2, 1}) {
        const std::string out = tmp / (variant + "-run" + std::to_string(runs.size()));
        Config c = small_config(ffn, corpus, out);
        c.train.eval_every = 3;
        c.train.ckpt_every = 6;
        c.train.threads = threads;
        run_train(c, {});
        runs.push_back(out);
      }
      const auto ref_lines = train_lines(runs[0]);
      const auto ref_val = val_losses(runs[0]);
      REQUIRE(ref_lines.size() == 6);
      REQUIRE(ref_val.size() == 2);
      const std::string ref_model = read_file(runs[0] + "/ckpt-6/model.safetensors");
      for (size_t r = 1; r < runs.size(); ++r) {
        INFO(variant << ": run " << r << (r == 2 ? " (1 thread)" : " (2 threads)") << " vs run 0");
        const auto lines = train_lines(runs[r]);
        REQUIRE(lines.size() == ref_lines.size());
        for (const auto& [step, j] : ref_lines) {
          INFO("step " << step);
          CHECK(lines.at(step).at("loss").get<double>() == j.at("loss").get<double>());
          CHECK(lines.at(step).at("aux_loss").get<double>() == j.at("aux_loss").get<double>());
          CHECK(lines.at(step).at("grad_norm").get<double>() == j.at("grad_norm").get<double>());
        }
        CHECK(val_losses(runs[r]) == ref_val);
        CHECK(read_file(runs[r] + "/ckpt-6/model.safetensors") == ref_model);
        CHECK(read_file(runs[r] + "/ckpt-6/optimizer.safetensors") ==
              read_file(runs[0] + "/ckpt-6/optimizer.safetensors"));
      }
      // The comparison has teeth: the weights moved, and another seed gives other losses.
      Trainer fresh(small_config(ffn, corpus, tmp / "unused"));
      SafetensorsFile trained = read_safetensors(runs[0] + "/ckpt-6/model.safetensors");
      const ParamTensor& out_w = fresh.layout[fresh.layout.output];
      CHECK(trained.tensors.at("output.weight").data !=
            std::vector<float>(fresh.model.params() + out_w.offset,
                               fresh.model.params() + out_w.offset + out_w.numel));
      Config other = small_config(ffn, corpus, tmp / (variant + "-seed"));
      other.train.seed = 4321;
      run_train(other, {});
      CHECK(train_lines(other.train.out_dir).at(1).at("loss").get<double>() !=
            ref_lines.at(1).at("loss").get<double>());
    }
  }
}

// ------------------------------------------------------------------------------------------------
// 2. Resume

TEST_CASE("a resumed run continues bit-exactly: metrics, weights and AdamW moments", "[train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);

  auto compare_continuation = [&](const std::string& full, const std::string& resumed) {
    const auto a = train_lines(full), b = train_lines(resumed);
    REQUIRE(a.size() == 6);
    REQUIRE(b.size() == 3);  // steps 4..6 only: the resumed run starts at step 4
    for (int step = 4; step <= 6; ++step) {
      INFO("step " << step);
      REQUIRE(b.count(step) == 1);
      for (const char* key : {"loss", "aux_loss", "grad_norm", "lr", "tokens"})
        CHECK(b.at(step).at(key).get<double>() == a.at(step).at(key).get<double>());
    }
    for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
      INFO(f);
      CHECK(read_file(resumed + "/ckpt-6/" + f) == read_file(full + "/ckpt-6/" + f));
    }
    const json sa = json::parse(read_file(full + "/ckpt-6/state.json"));
    const json sb = json::parse(read_file(resumed + "/ckpt-6/state.json"));
    CHECK(sb.at("step") == 6);
    CHECK(sb.at("data") == sa.at("data"));
    CHECK(sb.value("pool_loss", json()) == sa.value("pool_loss", json()));
  };

  SECTION("unipool, grad_accum 2: --resume CKPT_DIR into another out_dir (ĝ restored)") {
    Config c = small_config(FfnKind::unipool, corpus, tmp / "full");
    c.train.ckpt_every = 3;
    run_train(c, {});
    REQUIRE(checkpoint_dirs(c.train.out_dir) == std::vector<std::string>{"ckpt-3", "ckpt-6"});
    const json state3 = json::parse(read_file(tmp / "full/ckpt-3/state.json"));
    REQUIRE(state3.contains("pool_loss"));

    const Config r = resume_into(c, tmp / "resumed", tmp / "full/ckpt-3");
    compare_continuation(c.train.out_dir, r.train.out_dir);

    // Without ĝ (counts cleared) the continuation differs: the comparison above can fail.
    json broken = state3;
    broken["pool_loss"]["valid"] = false;
    for (auto& group : broken["pool_loss"]["ghat"])
      for (auto& x : group) x = 0.0;
    for (auto& group : broken["pool_loss"]["running"])
      for (auto& x : group) x = 0.0;
    // Without the per-rank list the top-level ĝ (rank 0's) is what a resume reads.
    REQUIRE(broken["pool_loss"]["ranks"].size() == 1);
    CHECK(broken["pool_loss"]["ranks"][0]["ghat"] == state3["pool_loss"]["ghat"]);
    broken["pool_loss"].erase("ranks");
    copy_checkpoint(tmp / "full/ckpt-3", tmp / "broken/ckpt-3");
    write_file_atomic(tmp / "broken/ckpt-3/state.json", broken.dump(1));
    resume_into(c, tmp / "broken-run", tmp / "broken/ckpt-3");
    CHECK(read_file(tmp / "broken-run/ckpt-6/model.safetensors") !=
          read_file(tmp / "full/ckpt-6/model.safetensors"));
  }

  SECTION("moe: --resume alone picks the newest checkpoint of train.out_dir") {
    Config c = small_config(FfnKind::moe, corpus, tmp / "full");
    c.train.ckpt_every = 1;
    c.train.ckpt_keep = 10;
    run_train(c, {});
    REQUIRE(checkpoint_dirs(c.train.out_dir).size() == 6);
    // A run directory holding ckpt-2 and ckpt-3, and metrics of steps 1..5 whose lines after step 3
    // are stale (loss 99): the resumed run must drop them. ckpt-2's weights are unreadable, so
    // resuming from it (instead of the newest, ckpt-3) would fail.
    const std::string dir = tmp / "continue";
    copy_checkpoint(tmp / "full/ckpt-2", dir + "/ckpt-2");
    write_file_atomic(dir + "/ckpt-2/model.safetensors", "not a safetensors file");
    copy_checkpoint(tmp / "full/ckpt-3", dir + "/ckpt-3");
    std::string old_metrics;
    for (json j : read_jsonl(tmp / "full/metrics.jsonl")) {
      const int step = j.at("step").get<int>();
      if (step > 5) continue;
      if (step > 3) j["loss"] = 99.0;
      old_metrics += j.dump() + "\n";
    }
    write_file_atomic(dir + "/metrics.jsonl", old_metrics);
    Config r = c;
    r.train.out_dir = dir;
    TrainOptions opt;
    opt.resume = true;
    run_train(r, opt);
    const auto lines = train_lines(dir);
    REQUIRE(lines.size() == 6);  // 1..3 kept from before, 4..6 rewritten by the resumed run
    for (int step = 1; step <= 6; ++step) {
      INFO("step " << step);
      CHECK(lines.at(step).at("loss").get<double>() ==
            train_lines(c.train.out_dir).at(step).at("loss").get<double>());
    }
    for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
      INFO(f);
      CHECK(read_file(dir + "/ckpt-6/" + f) == read_file(tmp / "full/ckpt-6/" + f));
    }
    // The same with --resume pointing at the directory explicitly, into a fresh out_dir.
    Config r2 = c;
    r2.train.out_dir = tmp / "explicit";
    opt.resume_dir = tmp / "full/ckpt-3";
    run_train(r2, opt);
    compare_continuation(c.train.out_dir, r2.train.out_dir);
  }

  SECTION("a checkpoint of another model config is refused, naming the key") {
    Config c = small_config(FfnKind::unipool, corpus, tmp / "full");
    c.train.steps = 3;
    c.train.ckpt_every = 3;
    run_train(c, {});
    TrainOptions opt;
    opt.resume = true;
    opt.resume_dir = tmp / "full/ckpt-3";
    {
      Config r = c;
      r.train.steps = 6;
      r.train.out_dir = tmp / "wider";
      r.model.d_model = 64;
      const std::string msg = error_of([&] { run_train(r, opt); });
      INFO(msg);
      CHECK(contains(msg, "model.d_model"));
    }
    {
      Config r = c;
      r.train.steps = 6;
      r.train.out_dir = tmp / "rope";
      r.model.rope_base = 1e4;  // same shapes, different function
      const std::string msg = error_of([&] { run_train(r, opt); });
      INFO(msg);
      CHECK(contains(msg, "model.rope_base"));
    }
    {
      Config r = c;  // train.steps 3: nothing left to do
      r.train.out_dir = tmp / "done";
      const std::string msg = error_of([&] { run_train(r, opt); });
      INFO(msg);
      CHECK(contains(msg, "train.steps"));
    }
    {
      Config r = c;
      r.train.steps = 6;
      r.train.out_dir = tmp / "empty";
      TrainOptions latest;
      latest.resume = true;
      const std::string msg = error_of([&] { run_train(r, latest); });
      INFO(msg);
      CHECK(contains(msg, "no checkpoint"));
    }
  }

  SECTION("state.json: another format_version is refused, keys added since are defaulted") {
    Config c = small_config(FfnKind::unipool, corpus, tmp / "full");
    c.train.steps = 3;
    c.train.ckpt_every = 3;
    run_train(c, {});
    const json state = json::parse(read_file(tmp / "full/ckpt-3/state.json"));
    REQUIRE(state.at("format_version") == 1);
    TrainOptions opt;
    opt.resume = true;
    Config r = c;
    r.train.steps = 4;
    {  // a checkpoint from a future (or past) schema
      json future = state;
      future["format_version"] = 2;
      copy_checkpoint(tmp / "full/ckpt-3", tmp / "future/ckpt-3");
      write_file_atomic(tmp / "future/ckpt-3/state.json", future.dump(1));
      opt.resume_dir = tmp / "future/ckpt-3";
      r.train.out_dir = tmp / "future-run";
      const std::string msg = error_of([&] { run_train(r, opt); });
      INFO(msg);
      CHECK(contains(msg, "format_version 2"));
    }
    {  // a checkpoint written before model.router_share and train.log_every existed
      json older = state;
      older["config"]["model"].erase("router_share");
      older["config"]["train"].erase("log_every");
      copy_checkpoint(tmp / "full/ckpt-3", tmp / "older/ckpt-3");
      write_file_atomic(tmp / "older/ckpt-3/state.json", older.dump(1));
      opt.resume_dir = tmp / "older/ckpt-3";
      r.train.out_dir = tmp / "older-run";
      run_train(r, opt);
      CHECK(json::parse(read_file(tmp / "older-run/ckpt-4/state.json")).at("step") == 4);
      // ... but a default that differs from this run's value is still a difference
      r.model.router_share = 2;
      r.train.out_dir = tmp / "older-run-2";
      const std::string msg = error_of([&] { run_train(r, opt); });
      INFO(msg);
      CHECK(contains(msg, "model.router_share"));
    }
  }
}

// ------------------------------------------------------------------------------------------------
// 3. Checkpoint contents

TEST_CASE("checkpoints hold the documented tensors, the state, and only the newest ckpt_keep",
          "[train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  Config c = small_config(FfnKind::unipool, corpus, tmp / "run");
  c.train.ckpt_every = 1;
  c.train.ckpt_keep = 2;
  run_train(c, {});
  const std::string out = c.train.out_dir;
  CHECK(checkpoint_dirs(out) == std::vector<std::string>{"ckpt-5", "ckpt-6"});
  CHECK(leftovers(out).empty());
  for (const std::string& d : checkpoint_dirs(out)) {
    INFO(d);
    CHECK(list_directory(out + "/" + d) ==
          std::vector<std::string>{"model.safetensors", "optimizer.safetensors", "state.json"});
  }

  // Written out by hand from docs/run-directory.md (Vp 320, d 32, qkv (2 + 2·1)·16 = 64, F 32, M 8,
  // 2 routers).
  using Shape = std::vector<int64_t>;
  const std::map<std::string, Shape> expected = {
      {"tok_embeddings.weight", {320, 32}},
      {"layers.0.attn_norm.weight", {32}},
      {"layers.0.attn.wqkv.weight", {64, 32}},
      {"layers.0.attn.wo.weight", {32, 32}},
      {"layers.0.ffn_norm.weight", {32}},
      {"layers.1.attn_norm.weight", {32}},
      {"layers.1.attn.wqkv.weight", {64, 32}},
      {"layers.1.attn.wo.weight", {32, 32}},
      {"layers.1.ffn_norm.weight", {32}},
      {"pools.0.w13", {8, 64, 32}},
      {"pools.0.w2", {8, 32, 32}},
      {"routers.0.weight", {8, 32}},
      {"routers.0.scale", {}},
      {"routers.1.weight", {8, 32}},
      {"routers.1.scale", {}},
      {"norm.weight", {32}},
      {"output.weight", {320, 32}},
  };
  const SafetensorsFile model = read_safetensors(out + "/ckpt-6/model.safetensors");
  std::map<std::string, Shape> got;
  for (const auto& [name, t] : model.tensors) got[name] = t.shape;
  CHECK(got == expected);

  const SafetensorsFile opt = read_safetensors(out + "/ckpt-6/optimizer.safetensors");
  std::map<std::string, Shape> expected_opt;
  for (const auto& [name, shape] : expected) {
    expected_opt["exp_avg." + name] = shape;
    expected_opt["exp_avg_sq." + name] = shape;
  }
  std::map<std::string, Shape> got_opt;
  for (const auto& [name, t] : opt.tensors) got_opt[name] = t.shape;
  CHECK(got_opt == expected_opt);

  // The weights are the trained ones: loading the checkpoint into a Trainer gives the same bytes
  // back.
  Trainer t(c);
  load_checkpoint(out + "/ckpt-6", t.layout, t.model.params(), t.exp_avg.data(),
                  t.exp_avg_sq.data());
  const json state = read_checkpoint_state(out + "/ckpt-6");
  for (const ParamTensor& p : t.layout.tensors) {
    INFO(p.name);
    CHECK(std::equal(model.tensors.at(p.name).data.begin(), model.tensors.at(p.name).data.end(),
                     t.model.params() + p.offset));
  }
  CHECK(opt.tensors.at("exp_avg_sq.pools.0.w13").data != std::vector<float>(8 * 64 * 32, 0.0f));

  CHECK(state.at("step") == 6);
  CHECK(json::parse(read_file(out + "/ckpt-5/state.json")).at("step") == 5);
  CHECK(state.at("config") == c.to_json());
  REQUIRE(state.contains("data"));
  CHECK(state.at("data").contains("train"));
  REQUIRE(state.contains("pool_loss"));
  CHECK(state.at("pool_loss").contains("ghat"));
  CHECK(state.at("pool_loss").dump().size() > 20);
  CHECK(json::parse(read_file(out + "/config.json")) == c.to_json());
}

// ------------------------------------------------------------------------------------------------
// 4. Learning

TEST_CASE("the tiny unipool model learns GPL-3 bytes: training and validation loss fall",
          "[train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  Config c = small_config(FfnKind::unipool, corpus, tmp / "run");
  c.train.steps = 80;
  c.optim.lr = 1e-2;
  c.optim.min_lr = 1e-3;
  c.train.eval_every = 20;
  c.train.eval_batches = 4;
  run_train(c, {});
  const auto lines = train_lines(c.train.out_dir);
  REQUIRE(lines.size() == 80);
  const double first = lines.at(1).at("loss").get<double>();
  double last10 = 0;
  for (int s = 71; s <= 80; ++s) last10 += lines.at(s).at("loss").get<double>() / 10;
  const auto val = val_losses(c.train.out_dir);
  REQUIRE(val.size() == 4);
  std::printf(
      "[train] learning: first loss %.4f, mean of the last 10 %.4f (drop %.4f nats); val loss %.4f "
      "-> %.4f\n",
      first, last10, first - last10, val.begin()->second, val.rbegin()->second);
  CHECK(std::fabs(first - std::log(320.0)) < 0.1);  // a near-uniform start over Vp = 320 columns
  CHECK(first - last10 >= 1.5);
  CHECK(val.rbegin()->second < val.begin()->second);
}

// ------------------------------------------------------------------------------------------------
// 5. Non-finite loss

TEST_CASE("a non-finite loss stops the run and leaves the last good checkpoint untouched",
          "[train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);

  SECTION("an exploding learning rate after a resume") {
    Config c = small_config(FfnKind::moe, corpus, tmp / "run");
    c.train.steps = 4;
    c.train.ckpt_every = 2;
    run_train(c, {});
    REQUIRE(checkpoint_dirs(c.train.out_dir) == std::vector<std::string>{"ckpt-2", "ckpt-4"});
    std::map<std::string, std::string> before;
    for (const char* f : kCkptFiles) before[f] = read_file(tmp / "run/ckpt-4/" + f);

    Config r = c;
    r.train.steps = 8;
    r.optim.lr = 1e30;  // optim may change on resume (the checkpoint's decay had ended: the
    r.optim.min_lr = 1e30;  // extension continues at min_lr)
    TrainOptions opt;
    opt.resume = true;  // newest in out_dir: ckpt-4
    const std::string msg = error_of([&] { run_train(r, opt); });
    INFO(msg);
    CHECK(contains(msg, "not finite"));
    CHECK((contains(msg, "loss") || contains(msg, "gradient")));
    CHECK(contains(msg, tmp / "run/ckpt-4"));
    for (const char* f : kCkptFiles) {
      INFO(f);
      CHECK(read_file(tmp / "run/ckpt-4/" + f) == before[f]);
    }
    CHECK(checkpoint_dirs(c.train.out_dir) == std::vector<std::string>{"ckpt-2", "ckpt-4"});
    CHECK(leftovers(c.train.out_dir).empty());
  }

  SECTION("--init-from weights holding a NaN stops at step 1") {
    Config c = small_config(FfnKind::dense, corpus, tmp / "nan");
    c.train.ckpt_every = 1;
    Trainer t(c);
    t.model.params()[t.layout[t.layout.output].offset + 5] =
        std::numeric_limits<float>::quiet_NaN();
    const std::string weights = tmp / "nan.safetensors";
    write_safetensors(weights, arena_refs(t.layout, t.model.params()));
    TrainOptions opt;
    opt.init_from = weights;
    const std::string msg = error_of([&] { run_train(c, opt); });
    INFO(msg);
    CHECK(contains(msg, "step 1"));
    CHECK(contains(msg, "not finite"));
    CHECK(contains(msg, "none written yet"));
    CHECK(checkpoint_dirs(c.train.out_dir).empty());
    CHECK(
        !path_exists(c.train.out_dir + "/metrics.jsonl"));  // nothing is written before a good step
  }
}

// ------------------------------------------------------------------------------------------------
// 6. --init-from

TEST_CASE("train: --init-from starts from exactly the given weights, bad files are named",
          "[train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const uint64_t kSourceSeed = 7, kRunSeed = 99;

  // Weights of a fresh model with seed 7.
  Config src = small_config(FfnKind::moe, corpus, tmp / "unused");
  src.train.seed = kSourceSeed;
  Trainer source(src);
  const std::string weights = tmp / "seed7.safetensors";
  write_safetensors(weights, arena_refs(source.layout, source.model.params()));

  SECTION("first-step loss and (at lr 0) the weights equal the source's") {
    Config c = small_config(FfnKind::moe, corpus, tmp / "run");
    c.train.seed = kRunSeed;  // data order of seed 99, weights of seed 7
    c.train.steps = 1;
    c.train.ckpt_every = 1;
    c.optim.lr = 0;
    c.optim.min_lr = 0;
    TrainOptions opt;
    opt.init_from = weights;
    run_train(c, opt);
    const double logged = train_lines(c.train.out_dir).at(1).at("loss").get<double>();

    // The loss of seed-7 weights (and, for contrast, seed-99 weights) on the run's first
    // micro-batch.
    data::LoaderSpec spec;
    spec.blend = c.data.train;
    spec.format = data::ShardFormat::megatron;
    spec.split = c.data.split;
    spec.seq_len = c.model.seq_len;
    spec.vocab_size = c.model.vocab_size;
    spec.seed = kRunSeed;
    data::Loader loader(spec, data::Split::train);
    std::vector<int32_t> in(c.train.micro_batch * c.model.seq_len), tg(in.size());
    loader.next_batch(c.train.micro_batch, in.data(), tg.data());
    const double expected = source.model.forward(in.data(), tg.data(), /*train=*/false).lm;
    Trainer own(c);  // seed 99 init
    const double other = own.model.forward(in.data(), tg.data(), /*train=*/false).lm;
    INFO("logged " << g9(logged) << ", seed-7 weights " << g9(expected) << ", seed-99 weights "
                   << g9(other));
    CHECK(g9(logged) == g9(expected));
    CHECK(g9(logged) != g9(other));

    const SafetensorsFile after = read_safetensors(tmp / "run/ckpt-1/model.safetensors");
    const SafetensorsFile given = read_safetensors(weights);
    REQUIRE(after.tensors.size() == given.tensors.size());
    for (const auto& [name, t] : given.tensors) {
      INFO(name);
      CHECK(after.tensors.at(name).data == t.data);
    }
  }

  SECTION(
      "a missing, extra or mis-shaped tensor, or a missing file, is an Error naming the file and "
      "tensor") {
    const SafetensorsFile good = read_safetensors(weights);
    Config c = small_config(FfnKind::moe, corpus, tmp / "run");
    auto init_error = [&](const std::string& path) {
      TrainOptions opt;
      opt.init_from = path;
      return error_of([&] { run_train(c, opt); });
    };
    {
      std::vector<TensorRef> refs;
      for (const TensorRef& r : file_refs(good))
        if (r.name != "layers.1.experts.w2") refs.push_back(r);
      const std::string path = tmp / "missing_tensor.safetensors";
      write_safetensors(path, refs);
      const std::string msg = init_error(path);
      INFO(msg);
      CHECK(contains(msg, path));
      CHECK(contains(msg, "layers.1.experts.w2"));
      CHECK(contains(msg, "missing"));
    }
    {
      std::vector<TensorRef> refs = file_refs(good);
      const float extra[3] = {1, 2, 3};
      refs.push_back({"layers.2.attn_norm.weight", {3}, extra});
      const std::string path = tmp / "extra_tensor.safetensors";
      write_safetensors(path, refs);
      const std::string msg = init_error(path);
      INFO(msg);
      CHECK(contains(msg, path));
      CHECK(contains(msg, "layers.2.attn_norm.weight"));
    }
    {
      std::vector<TensorRef> refs = file_refs(good);
      for (TensorRef& r : refs)
        if (r.name == "output.weight") r.shape = {32, 320};  // same element count, transposed shape
      const std::string path = tmp / "bad_shape.safetensors";
      write_safetensors(path, refs);
      const std::string msg = init_error(path);
      INFO(msg);
      CHECK(contains(msg, path));
      CHECK(contains(msg, "output.weight"));
      CHECK(contains(msg, "[32, 320]"));
    }
    {
      const std::string path = tmp / "no_such_file.safetensors";
      const std::string msg = init_error(path);
      INFO(msg);
      CHECK(contains(msg, path));
    }
    CHECK(!path_exists(tmp / "run/metrics.jsonl"));
  }
}

// ------------------------------------------------------------------------------------------------
// 7. Bad input through the binary

namespace {}  // namespace

TEST_CASE("unipool train: bad input fails naming the key or file, and writes over nothing",
          "[train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);

  SECTION("train --help") {
    const Outcome o = run_binary("train --help", tmp.path);
    INFO(o.out << o.err);
    CHECK(o.status == 0);
    for (const char* flag : {"--config", "--set", "--resume", "--init-from"})
      CHECK(contains(o.out, flag));
  }

  // Bad shards.
  const std::string bad_magic = tmp / "bad_magic";
  data::write_megatron(bad_magic, {data::encode_bytes(std::string(400, 'a')),
                                   data::encode_bytes(std::string(400, 'b'))});
  {
    std::string idx = read_file(bad_magic + ".idx");
    idx[0] = 'X';
    write_file_atomic(bad_magic + ".idx", idx);
  }
  const std::string bad_tokens = tmp / "bad_tokens";
  {
    std::vector<std::vector<int32_t>> docs;
    for (int d = 0; d < 20; ++d)
      docs.push_back(std::vector<int32_t>(200, 300));  // 300 >= vocab 257
    data::write_megatron(bad_tokens, docs);
  }

  struct BadCase {
    const char* name;
    std::string sets;     // --set arguments
    json data_train;      // replaces data.train in the config file (null: the good corpus)
    std::string expect;   // in stderr
    std::string expect2;  // also in stderr ("" = none)
  };
  const std::vector<BadCase> cases = {
      {"unknown key", "--set model.n_layers=4", nullptr, "model.n_layers", "unknown"},
      {"n_layer % pool_group", "--set model.pool_group=3", nullptr, "model.pool_group", ""},
      {"top_k > experts", "--set model.top_k=9", nullptr, "model.top_k", ""},
      {"negative lr", "--set optim.lr=-0.001", nullptr, "optim.lr", ""},
      {"missing data file", "", json::array({json::array({1.0, tmp / "nowhere"})}), tmp / "nowhere",
       ""},
      {"bad magic", "", json::array({json::array({1.0, bad_magic})}), bad_magic + ".idx", "magic"},
      {"token id >= vocab_size", "", json::array({json::array({1.0, bad_tokens})}), bad_tokens,
       "vocab_size"},
  };
  for (const BadCase& bc : cases) {
    DYNAMIC_SECTION(bc.name) {
      const std::string out_dir = tmp / "out";
      make_dirs(out_dir);
      const std::string sentinel = "{\"step\": 1, \"loss\": 1.25, \"note\": \"an earlier run\"}\n";
      write_file_atomic(out_dir + "/metrics.jsonl", sentinel);
      Config c = small_config(FfnKind::unipool, corpus, out_dir);
      json cfg = c.to_json();
      if (!bc.data_train.is_null()) cfg["data"]["train"] = bc.data_train;
      const std::string cfg_path = tmp / "config.json";
      write_file_atomic(cfg_path, cfg.dump(2));
      // --overwrite: the earlier run would be moved aside only at a first good step.
      const Outcome o =
          run_binary("train --config '" + cfg_path + "' --overwrite " + bc.sets, tmp.path);
      INFO(bc.name << "\nstdout: " << o.out << "\nstderr: " << o.err);
      CHECK(o.status != 0);
      CHECK(contains(o.err, bc.expect));
      if (!bc.expect2.empty()) CHECK(contains(o.err, bc.expect2));
      CHECK(read_file(out_dir + "/metrics.jsonl") == sentinel);
      CHECK(checkpoint_dirs(out_dir).empty());
    }
  }

  SECTION("the same config with good data runs (the cases above fail for their own reason only)") {
    const std::string out_dir = tmp / "good";
    Config c = small_config(FfnKind::unipool, corpus, out_dir);
    c.train.steps = 2;
    const std::string cfg_path = tmp / "good.json";
    write_file_atomic(cfg_path, c.to_json().dump(2));
    const Outcome o =
        run_binary("train --config '" + cfg_path + "' --set train.ckpt_every=2", tmp.path);
    INFO("stdout: " << o.out << "\nstderr: " << o.err);
    CHECK(o.status == 0);
    CHECK(train_lines(out_dir).size() == 2);
    CHECK(checkpoint_dirs(out_dir) == std::vector<std::string>{"ckpt-2"});
  }
}

// ------------------------------------------------------------------------------------------------
// 8. Gradient accumulation

TEST_CASE("gradient accumulation is the mean over micro-batches", "[train]") {
  Config big = small_config(FfnKind::dense, "unused", "unused");  // micro_batch 4 × grad_accum 1
  big.model.init_std = 0.2;  // gradients well above rounding noise everywhere
  big.train.steps = 10;
  big.train.seed = 5;
  validate_config(big, false);
  Config small = big;  // micro_batch 2 × grad_accum 2
  small.train.micro_batch = 2;
  small.train.grad_accum = 2;

  const int T = big.model.seq_len;
  std::vector<int32_t> tokens(4 * (T + 1));
  std::mt19937 gen(11);
  for (auto& t : tokens) t = static_cast<int32_t>(gen() % 256);
  auto fill = [&](int first_seq, int count, int32_t* in, int32_t* tg) {
    for (int s = 0; s < count; ++s)
      for (int i = 0; i < T; ++i) {
        in[s * T + i] = tokens[(first_seq + s) * (T + 1) + i];
        tg[s * T + i] = tokens[(first_seq + s) * (T + 1) + i + 1];
      }
  };

  Trainer one(big), two(small);
  REQUIRE(std::equal(one.model.params(), one.model.params() + one.layout.arena_size,
                     two.model.params()));
  int calls_one = 0, calls_two = 0;
  const StepResult r1 =
      one.train_step([&](int32_t* in, int32_t* tg) { fill(0, 4, in, tg), ++calls_one; });
  const StepResult r2 = two.train_step(
      [&](int32_t* in, int32_t* tg) { fill(2 * calls_two, 2, in, tg), ++calls_two; });
  REQUIRE(calls_one == 1);
  REQUIRE(calls_two == 2);
  CHECK(r2.loss == Approx(r1.loss).epsilon(1e-6));
  CHECK(r2.grad_norm == Approx(r1.grad_norm).epsilon(1e-5));
  CHECK(r1.grad_norm > 0);

  int bad = 0;
  for (const ParamTensor& t : one.layout.tensors) {
    const float* g1 = one.model.grads() + t.offset;
    const float* g2 = two.model.grads() + t.offset;
    double scale = 0;
    for (int64_t i = 0; i < t.numel; ++i) scale = std::max(scale, std::fabs(double(g1[i])));
    CHECK(scale > 0);
    for (int64_t i = 0; i < t.numel; ++i) {
      const double a = g1[i], b = g2[i];
      if (std::fabs(a - b) > 1e-5 * std::max(std::fabs(a), std::fabs(b)) + 1e-6 * scale) {
        if (bad < 5) UNSCOPED_INFO(t.name << "[" << i << "]: mb4×1 " << a << ", mb2×2 " << b);
        ++bad;
      }
    }
  }
  CHECK(bad == 0);
  // The same step with the second micro-batch repeated differs: the comparison sees the data.
  Trainer three(small);
  int calls_three = 0;
  three.train_step([&](int32_t* in, int32_t* tg) { fill(0, 2, in, tg), ++calls_three; });
  CHECK(std::fabs(three.model.grads()[one.layout[one.layout.output].offset] -
                  one.model.grads()[one.layout[one.layout.output].offset]) > 0);
}

// ------------------------------------------------------------------------------------------------
// 9. Aux-free balancing (model.router = sigmoid, model.expert_bias)

TEST_CASE(
    "aux-free balancing: the bias moves by rate * sign(mean load - load), is saved and resumed",
    "[train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  Config c = small_config(FfnKind::moe, corpus, tmp / "full");
  c.model.router = RouterKind::sigmoid;
  c.model.top_k = 2;
  c.model.router_share = 2;  // one router for both layers: its load sums the two layers
  c.model.expert_bias = true;
  c.loss.aux_coeff = 0;
  c.loss.bias_update_rate = 0.01;
  c.train.grad_accum = 2;
  c.train.ckpt_every = 3;
  validate_config(c, false);

  SECTION("one step: the loads of every micro-batch and layer, then the sign update") {
    Trainer trainer(c);
    data::Loader loader(loader_spec(c), data::Split::train);
    std::vector<double> loads;  // the step's loads, read before the update clears them
    const Layout& layout = trainer.layout;
    REQUIRE(layout.layers[0].expert_bias == layout.layers[1].expert_bias);
    const ParamTensor& bias = layout[layout.layers[0].expert_bias];
    CHECK(bias.name == "routers.0.expert_bias");
    CHECK(!bias.trained);
    const std::vector<float> before(trainer.model.params() + bias.offset,
                                    trainer.model.params() + bias.offset + bias.numel);
    CHECK(std::all_of(before.begin(), before.end(), [](float b) { return b == 0.0f; }));
    int micro = 0;
    trainer.train_step([&](int32_t* in, int32_t* tg) {
      if (micro++ == 1) loads = trainer.model.router_loads();  // after micro-batch 0
      loader.next_batch(c.train.micro_batch, in, tg);
    });
    REQUIRE(loads.size() == 4);
    // After one micro-batch: 2 layers × N tokens × k slots routed through router 0.
    CHECK(std::accumulate(loads.begin(), loads.end(), 0.0) ==
          2.0 * c.train.micro_batch * c.model.seq_len * 2);
    // The step's loads were twice that; the update used them and cleared the accumulator.
    const std::vector<double> after_loads = trainer.model.router_loads();
    CHECK(std::all_of(after_loads.begin(), after_loads.end(), [](double x) { return x == 0; }));
    const float* b = trainer.model.params() + bias.offset;
    int moved = 0;
    for (int64_t i = 0; i < bias.numel; ++i) {
      CHECK((b[i] == 0.01f || b[i] == -0.01f || b[i] == 0.0f));
      moved += b[i] != 0.0f;
    }
    CHECK(moved > 0);
    // update_expert_bias itself: b += rate · sign(mean − load); at the mean, no move.
    const std::vector<float> was(b, b + 4);
    trainer.model.update_expert_bias({10, 30, 20, 20}, 0.5);  // mean 20
    CHECK(b[0] == was[0] + 0.5f);
    CHECK(b[1] == was[1] - 0.5f);
    CHECK(b[2] == was[2]);
    CHECK(b[3] == was[3]);
    CHECK_THROWS_AS(trainer.model.update_expert_bias({1, 2}, 0.5), Error);
  }

  SECTION("saved as routers.0.expert_bias, a resumed run is bit-exact, AdamW does not touch it") {
    run_train(c, {});
    const SafetensorsFile f = read_safetensors(tmp / "full/ckpt-6/model.safetensors");
    REQUIRE(f.tensors.count("routers.0.expert_bias") == 1);
    const std::vector<float>& b = f.tensors.at("routers.0.expert_bias").data;
    REQUIRE(b.size() == 4);
    for (float x : b) {
      const double steps = double(x) / 0.01;  // a sum of six ±0.01 or 0 steps
      CHECK(std::fabs(steps - std::round(steps)) < 1e-3);
      CHECK(std::fabs(x) <= 0.0601f);
    }
    CHECK(std::any_of(b.begin(), b.end(), [](float x) { return x != 0.0f; }));
    // AdamW's moments of the bias stay 0 (it is not in the optimizer's table).
    const SafetensorsFile o = read_safetensors(tmp / "full/ckpt-6/optimizer.safetensors");
    for (const auto& [name, t] : o.tensors)
      if (name.find("expert_bias") != std::string::npos)
        for (float x : t.data) CHECK(x == 0.0f);

    resume_into(c, tmp / "resumed", tmp / "full/ckpt-3");
    CHECK(read_file(tmp / "resumed/ckpt-6/model.safetensors") ==
          read_file(tmp / "full/ckpt-6/model.safetensors"));
    CHECK(read_file(tmp / "resumed/ckpt-6/optimizer.safetensors") ==
          read_file(tmp / "full/ckpt-6/optimizer.safetensors"));
    // The bias matters: without it (rate 0) the run differs.
    Config frozen = c;
    frozen.loss.bias_update_rate = 0;
    frozen.train.out_dir = tmp / "frozen";
    run_train(frozen, {});
    CHECK(read_file(tmp / "frozen/ckpt-6/model.safetensors") !=
          read_file(tmp / "full/ckpt-6/model.safetensors"));
  }
}

// ------------------------------------------------------------------------------------------------
// 10. Activation recompute (train.recompute)

TEST_CASE("recompute moe and full give bitwise the run without recompute, with less memory",
          "[train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  for (const char* variant : {"unipool", "moe-sigmoid-bias", "dense"}) {
    DYNAMIC_SECTION(variant) {
      const std::string name = variant;
      const FfnKind ffn = name == "unipool" ? FfnKind::unipool
                          : name == "dense" ? FfnKind::dense
                                            : FfnKind::moe;
      Config c = small_config(ffn, corpus, tmp / (name + "-none"));
      if (name == "moe-sigmoid-bias") {
        c.model.router = RouterKind::sigmoid;
        c.model.top_k = 2;
        c.model.expert_bias = true;
        c.loss.aux_coeff = 0.01;  // the balancing terms are taken once, in the forward
        c.loss.bias_update_rate = 0.01;
      }
      c.train.eval_every = 3;
      c.train.ckpt_every = 6;
      validate_config(c, false);
      run_train(c, {});
      const Layout layout = make_layout(c.model);
      size_t bytes_before = Model<CpuBackend<float>>::planned_activation_bytes(
          layout, c.loss, c.train.micro_batch, c.model.seq_len);
      for (Recompute r : {Recompute::moe, Recompute::full}) {
        INFO(name << ", recompute " << name_of(r));
        Config rc = c;
        rc.train.recompute = r;
        rc.train.out_dir = tmp / (name + "-" + name_of(r));
        run_train(rc, {});
        const auto a = train_lines(c.train.out_dir), b = train_lines(rc.train.out_dir);
        REQUIRE(b.size() == a.size());
        for (const auto& [step, j] : a)
          for (const char* key : {"loss", "aux_loss", "grad_norm"})
            CHECK(b.at(step).at(key) == j.at(key));
        CHECK(val_losses(rc.train.out_dir) == val_losses(c.train.out_dir));
        for (const char* f : {"model.safetensors", "optimizer.safetensors"})
          CHECK(read_file(rc.train.out_dir + "/ckpt-6/" + f) ==
                read_file(c.train.out_dir + "/ckpt-6/" + f));
        const json sa = json::parse(read_file(c.train.out_dir + "/ckpt-6/state.json"));
        const json sb = json::parse(read_file(rc.train.out_dir + "/ckpt-6/state.json"));
        CHECK(sb.value("pool_loss", json()) == sa.value("pool_loss", json()));
        // Less memory: every layer but the first shares the recomputed buffers.
        const size_t bytes = Model<CpuBackend<float>>::planned_activation_bytes(
            layout, c.loss, c.train.micro_batch, c.model.seq_len, 0, r);
        if (ffn != FfnKind::dense || r == Recompute::full) CHECK(bytes < bytes_before);
        if (ffn == FfnKind::dense && r == Recompute::moe) CHECK(bytes == bytes_before);
        bytes_before = bytes;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// 11. Routing health on the evaluation lines

TEST_CASE("evaluation lines carry the routing health of every MoE layer", "[train]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  for (FfnKind ffn : kVariantNames) {
    const std::string variant = name_of(ffn);
    DYNAMIC_SECTION(variant) {
      Config c = small_config(ffn, corpus, tmp / variant);
      c.train.eval_every = 3;
      c.train.eval_batches = 1;  // one forward: the routed experts below are the whole evaluation
      c.train.ckpt_every = 6;
      run_train(c, {});
      std::vector<json> evals;
      for (const json& j : read_jsonl(tmp / (variant + "/metrics.jsonl")))
        if (j.contains("val_loss")) evals.push_back(j);
      REQUIRE(evals.size() == 2);
      if (ffn == FfnKind::dense) {
        CHECK_FALSE(evals[0].contains("routing"));
        continue;
      }
      const json& routing = evals[1].at("routing");
      const int R = c.model.router_width();
      REQUIRE(routing.at("layers").size() == size_t(c.model.n_layer));
      for (const json& layer : routing.at("layers")) {
        const double zero_gate = layer.at("zero_gate");
        CHECK((zero_gate >= 0 && zero_gate <= 1));
        CHECK(layer.at("experts_used").get<int>() <= R);
        CHECK(layer.at("imbalance").get<double>() >= 1.0);
        CHECK(layer.at("entropy_bits").get<double>() <= std::log2(double(R)) + 1e-12);
      }
      // The slot statistics against the routing of the same forward, recomputed here: the final
      // weights, the first validation micro-batch.
      Trainer trainer(c);
      const double val =
          evaluate_weights(trainer, c, tmp / (variant + "/ckpt-6/model.safetensors"), 1);
      CHECK(val == Approx(evals[1].at("val_loss").get<double>()).epsilon(1e-6));
      const json again = trainer.routing_health();
      CHECK(again == routing);
      int dead = 0;
      std::vector<int> pool_hits(size_t(R), 0);
      for (int l = 0; l < c.model.n_layer; ++l) {
        std::vector<int> hits(size_t(R), 0);
        for (int32_t e : trainer.model.routed_experts(l)) ++hits[size_t(e)];
        double most = 0, total = 0, entropy = 0;
        for (int h : hits) most = std::max(most, double(h)), total += h;
        for (int h : hits)
          if (h > 0) entropy -= h / total * std::log2(h / total);
        const json& layer = routing["layers"][size_t(l)];
        CHECK(layer.at("imbalance").get<double>() == Approx(most / (total / R)));
        CHECK(layer.at("entropy_bits").get<double>() == Approx(entropy));
        for (int e = 0; e < R; ++e) {
          if (ffn == FfnKind::moe) dead += hits[size_t(e)] == 0;
          pool_hits[size_t(e)] += hits[size_t(e)];
        }
      }
      if (ffn == FfnKind::unipool)
        for (int h : pool_hits) dead += h == 0;
      CHECK(routing.at("dead_experts").get<int>() == dead);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// 7. The same loop on the GPU (skipped without a device)

#ifdef UNIPOOL_HAVE_CUDA
TEST_CASE("cuda train: bitwise reproducible runs, bit-exact resume, checkpoints move to the CPU",
          "[cuda][train]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  TempDir tmp;
  // The repository's own architecture notes as a byte corpus (present on every machine).
  const std::string corpus = tmp / "docs";
  REQUIRE(write_gpl_corpus(corpus, UNIPOOL_SOURCE_DIR "/docs/backward.md"));
  auto gpu_config = [&](const std::string& out) {
    Config c =
        small_config(FfnKind::unipool, corpus, out);  // grad_accum 2: ĝ crosses micro-batches
    c.model.d_model = 64;  // head size 32: one the GPU attention supports
    c.model.ffn_hidden = 64;
    c.train.backend = BackendKind::cuda;
    c.train.eval_every = 3;
    c.train.ckpt_every = 3;
    validate_config(c, /*check_data=*/false);
    return c;
  };
  const Config a = gpu_config(tmp / "a"), b = gpu_config(tmp / "b");
  run_train(a, {});
  run_train(b, {});
  const auto la = train_lines(a.train.out_dir), lb = train_lines(b.train.out_dir);
  REQUIRE(la.size() == 6);
  for (const auto& [step, j] : la) {
    INFO("step " << step);
    CHECK(lb.at(step).at("loss").get<double>() == j.at("loss").get<double>());
    CHECK(lb.at(step).at("grad_norm").get<double>() == j.at("grad_norm").get<double>());
  }
  CHECK(val_losses(b.train.out_dir) == val_losses(a.train.out_dir));
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    INFO(f);
    CHECK(read_file(tmp / "b/ckpt-6/" + f) == read_file(tmp / "a/ckpt-6/" + f));
  }

  // Resume from ckpt-3 into another directory: steps 4..6 and ckpt-6 equal the uninterrupted run.
  Config r = gpu_config(tmp / "resumed");
  TrainOptions opt;
  opt.resume = true;
  opt.resume_dir = tmp / "a/ckpt-3";
  run_train(r, opt);
  const auto lr = train_lines(r.train.out_dir);
  REQUIRE(lr.size() == 3);
  for (int step = 4; step <= 6; ++step) {
    INFO("resumed, step " << step);
    CHECK(lr.at(step).at("loss").get<double>() == la.at(step).at("loss").get<double>());
    CHECK(lr.at(step).at("aux_loss").get<double>() == la.at(step).at("aux_loss").get<double>());
  }
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    INFO("resumed " << f);
    CHECK(read_file(tmp / "resumed/ckpt-6/" + f) == read_file(tmp / "a/ckpt-6/" + f));
  }
  CHECK(json::parse(read_file(tmp / "resumed/ckpt-6/state.json")).at("pool_loss") ==
        json::parse(read_file(tmp / "a/ckpt-6/state.json")).at("pool_loss"));

  // A GPU checkpoint resumes on the CPU (same tensors and names; the numbers then follow the CPU).
  Config cpu = gpu_config(tmp / "on-cpu");
  cpu.train.backend = BackendKind::cpu;
  opt.resume_dir = tmp / "a/ckpt-3";
  run_train(cpu, opt);
  const auto lc = train_lines(cpu.train.out_dir);
  REQUIRE(lc.size() == 3);
  CHECK(std::fabs(lc.at(4).at("loss").get<double>() - la.at(4).at("loss").get<double>()) <
        0.03 * la.at(4).at("loss").get<double>());
}
#endif
