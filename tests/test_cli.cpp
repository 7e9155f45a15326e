// What the command line tells its user (issue 19 item 5): every option's default in --help,
// --version with the commit, the list of presets, a start-up that says what it does and fills
// the weights in parallel (the same bits whatever the thread count), and a variant's balancing
// loss that follows a --set model.ffn.
#include <cstring>
#include <regex>
#include <string>
#include <vector>

#include <omp.h>

#include "engine/config.h"
#include "engine/presets.h"
#include "engine/sample.h"
#include "engine/trainer.h"
#include "model/init.h"
#include "model/layout.h"
#include "tests/catch.h"
#include "tests/errors.h"
#include "tests/tempdir.h"
#include "tests/train_fixtures.h"

using namespace unipool;
using namespace unipool::test;

namespace {

// The option's line of a --help text ("" when absent).
std::string help_line(const std::string& help, const std::string& option) {
  const size_t at = help.find("  " + option + " ");
  if (at == std::string::npos) return "";
  return help.substr(at, help.find('\n', at) - at);
}

}  // namespace

TEST_CASE("--help shows every option's default", "[cli]") {
  TempDir tmp;
  const Outcome sample = run_binary("sample --help", tmp.path);
  REQUIRE(sample.status == 0);
  const SampleOptions defaults;  // the numbers --help must show are the struct's
  CHECK(defaults.tokens == 200);
  CHECK(defaults.temperature == 0.8);
  CHECK(defaults.top_k == 40);
  CHECK(contains(help_line(sample.out, "--tokens"), "=200"));
  CHECK(contains(help_line(sample.out, "--temperature"), "=0.8"));
  CHECK(contains(help_line(sample.out, "--top-k"), "=40"));
  CHECK(contains(help_line(sample.out, "--seed"), "=1234"));
  CHECK(contains(help_line(sample.out, "--tokenizer"), "=auto"));
  CHECK_FALSE(contains(sample.out, "=[]"));  // an empty list shows no default

  const Outcome bench = run_binary("bench --help", tmp.path);
  REQUIRE(bench.status == 0);
  CHECK(contains(help_line(bench.out, "--steps"), "=5"));
  CHECK(contains(help_line(bench.out, "--warmup"), "=1"));

  const Outcome train = run_binary("train --help", tmp.path);
  REQUIRE(train.status == 0);
  CHECK(contains(train.out, "--resume TEXT "));  // its internal "given alone" mark is not shown
  CHECK_FALSE(contains(train.out, "\x01"));

  const Outcome tokenize = run_binary("tokenize --help", tmp.path);
  CHECK(contains(help_line(tokenize.out, "--split"), "=969,30,1"));
  CHECK(contains(help_line(tokenize.out, "--tokenizer"), "=gpt2"));
}

TEST_CASE("unipool --version names the version and the commit", "[cli]") {
  TempDir tmp;
  const Outcome v = run_binary("--version", tmp.path);
  REQUIRE(v.status == 0);
  INFO(v.out);
  CHECK(std::regex_search(
      v.out,
      std::regex(R"(^unipool \d+\.\d+\.\d+ \(commit ([0-9a-f]{7,40}(-dirty)?|unknown)\)\n$)")));
}

TEST_CASE("unipool presets lists configs/ with each model", "[cli]") {
  CHECK(first_sentence("A tiny model. More text.") == "A tiny model.");
  CHECK(first_sentence("LR 5e-4 -> 5e-5, e.g. this. Then") == "LR 5e-4 -> 5e-5, e.g. this.");
  CHECK(first_sentence("no full stop") == "no full stop");
  CHECK(first_sentence("ends here.") == "ends here.");

  const std::vector<PresetInfo> presets = list_presets();
  const auto find = [&](const std::string& name) -> const PresetInfo* {
    for (const PresetInfo& p : presets)
      if (p.name == name) return &p;
    return nullptr;
  };
  const PresetInfo* tiny = find("tiny");
  const PresetInfo* big = find("unipool-182m");
  REQUIRE(tiny != nullptr);
  REQUIRE(big != nullptr);
  CHECK(tiny->error.empty());
  CHECK(tiny->ffn == "unipool");
  CHECK(tiny->n_layer == 4);
  CHECK(big->ffn == "unipool");
  CHECK(big->active == 182471424);  // docs/model.md's 182M count
  CHECK(contains(big->summary, "UniPool 182M"));
  for (const PresetInfo& p : presets) CHECK(p.error == "");  // every preset loads

  TempDir tmp;
  const Outcome listed = run_binary("presets", tmp.path);
  REQUIRE(listed.status == 0);
  CHECK(std::regex_search(listed.out, std::regex(R"(\ntiny +unipool +L4 d128 )")));
  CHECK(std::regex_search(listed.out,
                          std::regex(R"(\nunipool-182m +unipool +L12 d768 +777\.9M +182\.5M )")));
}

TEST_CASE("init_parameters: the same bits with 1 and 2 threads, and as the sequential fill",
          "[cli][init]") {
  // A layout with normal, ones and zeros tensors, padding between them and a tensor of several
  // blocks (the embedding: 2 × kInitBlock elements and more).
  ModelConfig m;
  m.vocab_size = 3000;
  m.vocab_multiple = 64;
  m.seq_len = 16;
  m.n_layer = 2;
  m.d_model = 48;
  m.n_head = 2;
  m.n_kv_head = 1;
  m.ffn_hidden = 40;
  m.ffn = FfnKind::unipool;
  m.pool_size = 6;
  m.router = RouterKind::norm;
  m.expert_bias = false;
  const Layout layout = make_layout(m);
  REQUIRE(layout.tensors[0].numel > 2 * kInitBlock);
  bool ones = false, padded = false;
  for (const ParamTensor& t : layout.tensors) {
    ones = ones || t.init == InitKind::ones;
    padded = padded || t.numel % kArenaAlign != 0;
  }
  CHECK(ones);
  CHECK(padded);

  // The fill before the blocks: zero everything, then each tensor in order.
  std::vector<float> sequential(size_t(layout.arena_size), 0.0f);
  for (const ParamTensor& t : layout.tensors) {
    float* p = sequential.data() + t.offset;
    if (t.init == InitKind::ones) std::fill(p, p + t.numel, 1.0f);
    if (t.init != InitKind::normal) continue;
    const uint64_t key = splitmix64(77 ^ fnv1a(t.name));
    for (int64_t i = 0; i < t.numel; ++i)
      p[i] = static_cast<float>(t.init_std * counter_normal(key, static_cast<uint64_t>(i)));
  }
  const int threads = omp_get_max_threads();
  std::vector<float> one(size_t(layout.arena_size), -1.0f), two(one);
  omp_set_num_threads(1);
  init_parameters(layout, one.data(), 77);
  omp_set_num_threads(2);
  init_parameters(layout, two.data(), 77);
  omp_set_num_threads(threads);
  CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(one.data(), sequential.data(), one.size() * sizeof(float)) == 0);
}

TEST_CASE("a variant's balancing loss follows --set model.ffn", "[cli][config]") {
  const nlohmann::json tiny = read_config_file("tiny");
  const Config as_is = load_config(tiny, {}, false);
  CHECK(as_is.loss.pool_aux_coeff == 0.001);  // the preset's own choice for its variant
  CHECK(as_is.loss.aux_coeff == 0);

  // moe: the pool loss is dropped (no pool), the Switch loss takes moe's default.
  const Config moe = load_config(tiny, {"model.ffn=moe"}, false);
  CHECK(moe.model.ffn == FfnKind::moe);
  CHECK(moe.loss.aux_coeff == 0.01);
  CHECK(moe.loss.pool_aux_coeff == 0);
  const Config dense = load_config(tiny, {"model.ffn=dense"}, false);
  CHECK(dense.loss.aux_coeff == 0);
  CHECK(dense.loss.pool_aux_coeff == 0);
  // An explicit --set is respected, before or after the model.ffn one.
  CHECK(load_config(tiny, {"model.ffn=moe", "loss.aux_coeff=0"}, false).loss.aux_coeff == 0);
  CHECK(load_config(tiny, {"loss.aux_coeff=0.02", "model.ffn=moe"}, false).loss.aux_coeff == 0.02);
  // Setting the file's own variant changes nothing.
  CHECK(load_config(tiny, {"model.ffn=unipool"}, false).loss.pool_aux_coeff == 0.001);
  // A variant the pool loss still fits keeps nothing of the file's either (the file chose it for
  // unipool): a --set that changes the variant gives both keys their derived defaults.
  const Config back = load_config(read_config_file("moe-182m"), {"model.ffn=unipool"}, false);
  CHECK(back.loss.pool_aux_coeff == 0.01);
  CHECK(back.loss.aux_coeff == 0);

  // And it trains, with the Switch loss on: one step of a shortened tiny + moe.
  Config c = load_config(
      tiny, {"model.ffn=moe", "model.seq_len=32", "train.micro_batch=2", "train.backend=cpu"},
      false);
  Trainer trainer(c);
  uint64_t counter = 0;
  const StepResult r = trainer.train_step([&](int32_t* in, int32_t* tg) {
    for (int i = 0; i < 2 * 32; ++i, ++counter) {
      in[i] = int32_t(splitmix64(counter) % 257);
      tg[i] = int32_t(splitmix64(counter + 1) % 257);
    }
  });
  CHECK(std::isfinite(r.loss));
  CHECK(r.aux_loss > 0);
}

TEST_CASE("OpenMP threads spin briefly unless told, with the same results", "[cli]") {
  TempDir tmp;
  const std::string bench =
      "bench --config tiny --steps 1 --warmup 0 --set model.seq_len=32 --set train.backend=cpu";
  const Outcome by_default =
      run_binary(bench, tmp.path + "/default", "unset OMP_WAIT_POLICY GOMP_SPINCOUNT;");
  const Outcome active = run_binary(bench, tmp.path + "/active", "export OMP_WAIT_POLICY=active;");
  const Outcome spin =
      run_binary(bench, tmp.path + "/spin", "unset OMP_WAIT_POLICY; export GOMP_SPINCOUNT=50;");
  REQUIRE(by_default.status == 0);
  REQUIRE(active.status == 0);
  REQUIRE(spin.status == 0);
  CHECK(contains(by_default.out, "(GOMP_SPINCOUNT 1000)"));
  CHECK(contains(active.out, "(OMP_WAIT_POLICY active)"));
  CHECK(contains(spin.out, "(GOMP_SPINCOUNT 50)"));  // the user's choice stays
  const auto loss = [](const std::string& out) {
    const size_t at = out.find("step 1: loss ");
    return at == std::string::npos ? std::string("none") : out.substr(at, 20);
  };
  CHECK(loss(by_default.out) != "none");
  CHECK(loss(by_default.out) == loss(active.out));
  CHECK(loss(by_default.out) == loss(spin.out));
}
