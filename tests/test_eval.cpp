// The `eval` and `sample` commands (engine/eval.h, engine/eval.cpp, engine/sample.h,
// engine/sample.cpp) end to end on a small trained UniPool model: `eval` on a checkpoint equals the
// val_loss the training loop logged, a run directory means its newest checkpoint, other splits and
// micro-batches work; `sample` is reproducible, slides its window past seq_len; bad input is an
// Error. The generator underneath: tests/test_generator.cpp.
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/fsutil.h"
#include "data/shards.h"
#include "data/tokenize.h"
#include "engine/config.h"
#include "engine/eval.h"
#include "engine/sample.h"
#include "engine/train.h"
#include "tests/catch.h"
#include "tests/small_config.h"
#include "tests/tempdir.h"

using unipool::test::small_config;
using unipool::test::TempDir;

using namespace unipool;

TEST_CASE("eval equals the training loop's val_loss, sample runs end to end", "[eval]") {
  TempDir tmp;
  // A small byte corpus: 240 documents of generated sentences.
  const char* words[] = {"the", "pool",  "of",    "experts", "routes", "each", "token", "to",
                         "one", "layer", "model", "learns",  "shared", "tiny", "and",   "a"};
  std::mt19937 rng(42);
  std::vector<std::vector<int32_t>> docs;
  for (int d = 0; d < 240; ++d) {
    std::string text;
    const int n = 8 + static_cast<int>(rng() % 12);
    for (int w = 0; w < n; ++w) text += std::string(w ? " " : "") + words[rng() % 16];
    text += ".\n";
    docs.push_back(data::encode_bytes(text));
  }
  const std::string prefix = tmp / "corpus";
  data::write_megatron(prefix, docs);

  Config c = small_config(FfnKind::unipool, prefix, tmp / "run");
  c.train.grad_accum = 1;
  c.train.steps = 4;
  c.train.eval_every = 2;
  c.train.eval_batches = 3;
  c.train.ckpt_every = 2;
  c.data.split = "90,9,1";
  validate_config(c, /*check_data=*/true);
  run_train(c, TrainOptions{});

  std::map<int, double> logged;  // step → val_loss of metrics.jsonl
  {
    std::istringstream in(read_file(c.train.out_dir + "/metrics.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("val_loss")) logged[j["step"].get<int>()] = j["val_loss"].get<double>();
    }
  }
  REQUIRE(logged.count(2) == 1);
  REQUIRE(logged.count(4) == 1);

  EvalOptions eo;
  eo.checkpoint = c.train.out_dir + "/ckpt-2";
  const EvalResult r2 = run_eval(eo);
  CHECK(std::isfinite(r2.loss));
  CHECK(r2.loss == Approx(logged[2]).epsilon(1e-7));
  CHECK(r2.tokens == 3LL * 4 * 32);
  eo.checkpoint = c.train.out_dir;  // a run directory: its newest checkpoint
  const EvalResult r4 = run_eval(eo);
  CHECK(r4.checkpoint == c.train.out_dir + "/ckpt-4");
  CHECK(r4.loss == Approx(logged[4]).epsilon(1e-7));
  eo.batches = 1;
  eo.split = "test";
  eo.overrides = {"train.micro_batch=2"};
  const EvalResult rt = run_eval(eo);
  CHECK(std::isfinite(rt.loss));
  CHECK(rt.tokens == 2LL * 32);
  eo.split = "nonsense";
  CHECK_THROWS_AS(run_eval(eo), Error);
  eo.split = "valid";
  eo.checkpoint = tmp / "no-such-dir";
  CHECK_THROWS_AS(run_eval(eo), Error);
  eo.checkpoint = tmp.path;  // exists, but neither a checkpoint nor a run directory
  CHECK_THROWS_AS(run_eval(eo), Error);

  SampleOptions so;
  so.checkpoint = c.train.out_dir;
  so.prompt = "the pool";
  so.tokens = 40;  // 8 + 40 > seq_len 32: the window slides
  so.samples = 2;
  const std::vector<std::string> a = run_sample(so);
  REQUIRE(a.size() == 2);
  for (const std::string& text : a) CHECK(text.rfind("the pool", 0) == 0);
  CHECK(run_sample(so) == a);  // same seed, same checkpoint: same text
  so.samples = 1;
  so.prompt = "";  // starts from the end-of-document token
  so.temperature = 0;
  CHECK(run_sample(so).size() == 1);
  so.prompt = std::string(33, 'x');  // 33 byte tokens > seq_len 32
  CHECK_THROWS_AS(run_sample(so), Error);
  so.prompt = "ok";
  so.tokenizer = "gpt2";  // the model's vocabulary is 257
  CHECK_THROWS_AS(run_sample(so), Error);
  so.tokenizer = "auto";
  so.checkpoint = tmp / "missing";
  CHECK_THROWS_AS(run_sample(so), Error);
}
