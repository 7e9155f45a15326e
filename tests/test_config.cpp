// Config loading and validation: every key of docs/config.md exists, --set overrides any key, and every bad
// key or value stops with an Error that names the key.
#include <string>
#include <vector>

#include "engine/config.h"
#include "base/error.h"
#include "tests/catch.h"

using namespace unipool;
using json = nlohmann::json;

namespace {

// The message of the Error that load_config throws for these overrides ("" when none is thrown).
std::string config_error(const std::vector<std::string>& overrides,
                         const json& file = json::object()) {
  try {
    load_config(file, overrides, /*check_data=*/false);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const json kMoe = {{"model", {{"ffn", "moe"}, {"n_layer", 4}}}};
const json kUnipool = {{"model", {{"ffn", "unipool"}, {"n_layer", 4}, {"pool_size", 8}}}};

}  // namespace

TEST_CASE("every documented config key exists under its name", "[config]") {
  const json d = config_defaults();
  for (const char* key :
       {"vocab_size", "vocab_multiple", "seq_len", "n_layer", "d_model", "n_head", "n_kv_head",
        "ffn_hidden", "norm_eps", "rope_base", "init_std", "ffn", "experts_per_layer", "pool_size",
        "pool_group", "top_k", "router", "router_renorm", "router_share"})
    CHECK(d["model"].contains(key));
  for (const char* key : {"aux_coeff", "pool_aux_coeff", "z_loss_coeff"})
    CHECK(d["loss"].contains(key));
  for (const char* key :
       {"lr", "min_lr", "warmup_steps", "weight_decay", "beta1", "beta2", "eps", "grad_clip"})
    CHECK(d["optim"].contains(key));
  for (const char* key : {"steps", "micro_batch", "grad_accum", "seed", "eval_every",
                          "eval_batches", "ckpt_every", "ckpt_keep", "out_dir", "backend"})
    CHECK(d["train"].contains(key));
  for (const char* key : {"train", "format", "split"}) CHECK(d["data"].contains(key));
}

TEST_CASE("config: --set overrides any key, values parse as JSON, else as strings", "[config]") {
  const Config c = load_config(kUnipool,
                               {"model.d_model=64", "model.n_head=4", "optim.lr=0.002",
                                "train.out_dir=runs/x y", "data.train=[[2.0, \"a\"], [1, \"b\"]]",
                                "model.router_renorm=false", "model.router=norm", "train.seed=7"},
                               false);
  CHECK(c.model.d_model == 64);
  CHECK(c.optim.lr == 0.002);
  CHECK(c.train.out_dir == "runs/x y");
  REQUIRE(c.data.train.size() == 2);
  CHECK(c.data.train[0].first == 2.0);
  CHECK(c.data.train[1].second == "b");
  CHECK(c.train.seed == 7);
  // Defaults that depend on other keys: Switch loss on for moe, pool loss on for unipool.
  CHECK(c.loss.pool_aux_coeff == 0.01);
  CHECK(c.loss.aux_coeff == 0);
  const Config m = load_config(kMoe, {}, false);
  CHECK(m.loss.aux_coeff == 0.01);
  CHECK(m.loss.pool_aux_coeff == 0);
  CHECK(m.optim.warmup_steps == m.train.steps / 100);
  // Round trip: to_json then load gives the same config.
  const Config again = load_config(c.to_json(), {}, false);
  CHECK(again.to_json() == c.to_json());
}

TEST_CASE("bad keys and values name the key", "[config]") {
  CHECK_THAT(config_error({"model.nope=3"}), HasSubstring("model.nope"));
  CHECK_THAT(config_error({}, {{"train", {{"stpes", 3}}}}), HasSubstring("train.stpes"));
  CHECK_THAT(config_error({"model.n_layer=abc"}), HasSubstring("model.n_layer"));
  CHECK_THAT(config_error({"model.n_layer=2.5"}), HasSubstring("model.n_layer"));
  CHECK_THAT(config_error({"optim.lr=-1e-3"}), HasSubstring("optim.lr"));
  CHECK_THAT(config_error({"optim.min_lr=1"}), HasSubstring("optim.min_lr"));
  CHECK_THAT(config_error({"model.ffn=sparse"}), HasSubstring("model.ffn"));
  CHECK_THAT(config_error({"model.router=gumbel"}, kMoe), HasSubstring("model.router"));
  CHECK_THAT(config_error({"model.pool_group=3"}, kUnipool), HasSubstring("model.pool_group"));
  CHECK_THAT(config_error({"model.router_share=3"}, kMoe), HasSubstring("model.router_share"));
  CHECK_THAT(config_error({"model.router_share=2"}), HasSubstring("model.router_share"));
  CHECK_THAT(config_error({"model.top_k=9"}, kMoe), HasSubstring("model.top_k"));
  CHECK_THAT(config_error({"model.top_k=9"}, kUnipool), HasSubstring("model.top_k"));
  CHECK_THAT(config_error({"model.router_renorm=true", "model.router=norm"}, kMoe),
             HasSubstring("model.router_renorm"));
  CHECK_THAT(config_error({"loss.pool_aux_coeff=0.01"}, kMoe), HasSubstring("loss.pool_aux_coeff"));
  CHECK_THAT(config_error({"model.n_head=5"}), HasSubstring("model.n_head"));
  CHECK_THAT(config_error({"model.n_kv_head=5"}), HasSubstring("model.n_kv_head"));
  CHECK_THAT(config_error({"train.micro_batch=0"}), HasSubstring("train.micro_batch"));
  CHECK_THAT(config_error({"train.backend=tpu"}), HasSubstring("train.backend"));
  CHECK_THAT(config_error({"optim.beta2=1"}), HasSubstring("optim.beta2"));
  CHECK_THAT(config_error({"data.split=9,x"}), HasSubstring("data.split"));
  CHECK_THAT(config_error({"data.format=csv"}), HasSubstring("data.format"));
  CHECK_THAT(config_error({"data.train=[[1, 2]]"}), HasSubstring("data.train"));
  CHECK_THAT(config_error({"model=3"}), HasSubstring("model"));
  CHECK_THAT(config_error({"novalue"}), HasSubstring("key=value"));
  CHECK(config_error({"model.pool_group=2"}, kUnipool).empty());
  CHECK(config_error({"model.router_share=4"}, kMoe).empty());
}

TEST_CASE("absurd sizes are refused naming the keys, computed in 64 bits", "[config]") {
  CHECK_THAT(config_error({"model.vocab_size=2147483000"}),
             HasSubstring("model.vocab_size: 2147483000 rounded up to a multiple of"));
  // V + multiple − 1 would overflow an int; the padded vocabulary itself fits
  CHECK(config_error({"model.vocab_size=1500000000", "model.vocab_multiple=1500000000"}).empty());
  CHECK(config_error({"model.vocab_size=1", "model.vocab_multiple=2147483647"}).empty());
  CHECK_THAT(config_error({"model.ffn_hidden=2000000000"}), HasSubstring("model.ffn_hidden"));
  // a layer count that would make the layout table itself huge (found by fuzz/fuzz_config)
  CHECK_THAT(config_error({"model.n_layer=40000000"}),
             HasSubstring("model.n_layer: must be in 1..4096, got 40000000"));
  CHECK_THAT(config_error({"train.micro_batch=100000000"}),
             HasSubstring("train.micro_batch: micro_batch × model.seq_len = "));
  CHECK_THAT(config_error({"train.micro_batch=1500000", "model.seq_len=1024", "model.top_k=2"}, kMoe),
             HasSubstring("× model.top_k"));
  CHECK_THAT(config_error({"model.d_model=1048576", "model.n_head=16",
                           "model.ffn_hidden=1000000000", "model.n_layer=200"}),
             HasSubstring("the parameters do not fit in 2^58 elements"));
}

TEST_CASE("data paths must exist when training", "[config]") {
  const json file = {
      {"data", {{"train", json::array({json::array({1.0, "/nonexistent/shard"})})}}}};
  try {
    load_config(file, {}, /*check_data=*/true);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK_THAT(std::string(e.what()),
               HasSubstring("data.train") && HasSubstring("/nonexistent/shard.idx"));
  }
  try {
    load_config(json::object(), {}, /*check_data=*/true);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK_THAT(std::string(e.what()), HasSubstring("data.train"));
  }
  try {
    read_config_file("/nonexistent/config.json");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK_THAT(std::string(e.what()), HasSubstring("/nonexistent/config.json"));
  }
}
