// A held-out validation set (data.valid, docs/data.md §Validation data): the training loop's
// evaluation, `unipool eval` and `unipool probe` read data.valid's files whole and in order
// instead of a split of data.train; `unipool eval --data PREFIX` evaluates any token file.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/fsutil.h"
#include "data/loader.h"
#include "data/shards.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/train.h"
#include "engine/trainer.h"
#include "tests/catch.h"
#include "tests/small_config.h"
#include "tests/tempdir.h"
#include "tests/train_fixtures.h"

using namespace unipool;
using namespace unipool::test;
using json = nlohmann::json;

namespace {

// The first `batches` micro-batches of a token file read in order, made here from its tokens:
// sample i is tokens [i·T, i·T + T] of the whole file.
std::vector<std::vector<int32_t>> in_order_batches(const std::string& prefix, int batches, int B,
                                                   int T, bool inputs) {
  const data::TokenFile file = data::TokenFile::open(prefix, data::ShardFormat::megatron);
  std::vector<std::vector<int32_t>> out;
  std::vector<int32_t> sample(size_t(T) + 1);
  for (int b = 0; b < batches; ++b) {
    std::vector<int32_t> batch;
    for (int s = 0; s < B; ++s) {
      file.read_tokens(int64_t(b * B + s) * T, T + 1, sample.data());
      batch.insert(batch.end(), sample.begin() + (inputs ? 0 : 1),
                   sample.begin() + (inputs ? T : T + 1));
    }
    out.push_back(batch);
  }
  return out;
}

}  // namespace

TEST_CASE("a whole-files loader reads every document of its files in order", "[valid-data]") {
  TempDir tmp;
  const std::string valid = tmp / "apache";
  REQUIRE_CORPUS(tmp / "gpl");
  REQUIRE(write_gpl_corpus(valid, "/usr/share/common-licenses/Apache-2.0"));
  data::LoaderSpec spec;
  spec.blend = {{1.0, valid}};
  spec.format = data::ShardFormat::megatron;
  spec.seq_len = 16;
  spec.vocab_size = 257;
  spec.split = "1,0,0";  // not used: the whole file is read
  spec.whole_files = true;
  data::Loader loader(spec, data::Split::valid);
  const data::TokenFile file = data::TokenFile::open(valid, data::ShardFormat::megatron);
  CHECK(loader.num_samples() == (file.num_tokens() - 1) / 16);
  const auto inputs = in_order_batches(valid, 3, 4, 16, true);
  const auto targets = in_order_batches(valid, 3, 4, 16, false);
  std::vector<int32_t> in(64), tg(64);
  for (int b = 0; b < 3; ++b) {
    loader.next_batch(4, in.data(), tg.data());
    CHECK(in == inputs[size_t(b)]);
    CHECK(tg == targets[size_t(b)]);
  }
  loader.reset();
  loader.next_batch(4, in.data(), tg.data());
  CHECK(in == inputs[0]);
}

TEST_CASE("data.valid: training evaluates exactly the held-out documents, eval --data any file",
          "[valid-data]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl", valid = tmp / "apache";
  REQUIRE_CORPUS(corpus);
  REQUIRE(write_gpl_corpus(valid, "/usr/share/common-licenses/Apache-2.0"));
  Config c = small_config(FfnKind::unipool, corpus, tmp / "run");
  c.data.valid = {{1.0, valid}};
  c.train.steps = 3;
  c.train.eval_every = 3;
  c.train.eval_batches = 2;
  c.train.ckpt_every = 3;
  run_train(c, {});
  double logged = -1;
  for (const json& j : read_jsonl(tmp / "run/metrics.jsonl"))
    if (j.contains("val_loss")) logged = j["val_loss"];
  REQUIRE(logged > 0);

  // From a split of data.train the final weights give another number (so that the comparison
  // below can fail) ...
  Trainer trainer(c);
  Config split = c;
  split.data.valid.clear();
  const double from_split =
      evaluate_weights(trainer, split, tmp / "run/ckpt-3/model.safetensors", 2);
  // ... and from the file's first two batches, made by hand, the logged one.
  const int B = c.train.micro_batch, T = c.model.seq_len;
  const auto inputs = in_order_batches(valid, 2, B, T, true);
  const auto targets = in_order_batches(valid, 2, B, T, false);
  int next = 0;
  const double expected = trainer.evaluate(
      [&](int32_t* in, int32_t* tg) {
        std::copy(inputs[size_t(next)].begin(), inputs[size_t(next)].end(), in);
        std::copy(targets[size_t(next)].begin(), targets[size_t(next)].end(), tg);
        ++next;
      },
      2);
  CHECK(logged == Approx(expected).epsilon(1e-8));  // (logged with 9 significant digits)
  CHECK(from_split != expected);
  CHECK(evaluate_weights(trainer, c, tmp / "run/ckpt-3/model.safetensors", 2) == expected);

  // unipool eval reads data.valid from the checkpoint's config; --data PREFIX reads any file.
  const Outcome eval = run_binary("eval --checkpoint '" + tmp / "run" + "' --batches 2", tmp.path);
  INFO(eval.out << eval.err);
  REQUIRE(eval.status == 0);
  CHECK(contains(eval.out, "data.valid"));
  char loss[32];
  std::snprintf(loss, sizeof loss, "val loss %.4f", logged);
  CHECK(contains(eval.out, loss));
  const Outcome any = run_binary(
      "eval --checkpoint '" + tmp / "run" + "' --batches 2 --data '" + valid + "'", tmp.path);
  INFO(any.out << any.err);
  REQUIRE(any.status == 0);
  CHECK(contains(any.out, loss));
  const Outcome other = run_binary(
      "eval --checkpoint '" + tmp / "run" + "' --batches 2 --data '" + corpus + "'", tmp.path);
  REQUIRE(other.status == 0);
  CHECK_FALSE(contains(other.out, loss));
  const Outcome both = run_binary(
      "eval --checkpoint '" + tmp / "run" + "' --data '" + valid + "' --split test", tmp.path);
  CHECK(both.status != 0);
  CHECK(contains(both.err, "--split"));
  const Outcome missing = run_binary(
      "eval --checkpoint '" + tmp / "run" + "' --data '" + tmp / "nothing" + "'", tmp.path);
  CHECK(missing.status != 0);
  CHECK(contains(missing.err, "--data: '" + tmp / "nothing" + "' is not a token file"));

  // A missing data.valid file is named by its key before anything runs.
  Config broken = c;
  broken.data.valid = {{1.0, tmp / "absent"}};
  broken.train.out_dir = tmp / "broken";
  const std::string msg = error_of([&] { validate_config(broken, true); });
  CHECK(contains(msg, "data.valid: missing file"));
}
