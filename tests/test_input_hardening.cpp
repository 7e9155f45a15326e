// Hostile and careless inputs (docs/failure.md §Inputs): JSON nested deeply enough to overflow a
// recursive parser (base/json_depth.h) in every file unipool reads, state.json fields out of type or
// range (engine/checkpoint.cpp, data/loader.cpp, base/json_fields.h), and bytes that are not UTF-8
// in --set values. Every case must end in a clear error (exit 1, naming the file and the field) or
// work, never in a crash or a silently wrong run.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/fsutil.h"
#include "base/json_depth.h"
#include "base/json_fields.h"
#include "engine/config.h"
#include "model/model.h"
#include "tests/catch.h"
#include "tests/small_config.h"
#include "tests/tempdir.h"
#include "tests/train_fixtures.h"

using namespace unipool;
using namespace unipool::test;

namespace {

std::string nested_objects(int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += "{\"a\":";
  s += "1";
  for (int i = 0; i < depth; ++i) s += "}";
  return s;
}

}  // namespace

TEST_CASE("json_nesting_depth counts brackets outside strings and comments", "[inputs]") {
  CHECK(json_nesting_depth("1") == 0);
  CHECK(json_nesting_depth("{\"a\": [1, {\"b\": []}]}") == 4);
  CHECK(json_nesting_depth("[\"[[[[\", \"\\\"[[[\"]") == 1);       // brackets in strings
  CHECK(json_nesting_depth("// [[[[\n{\"a\": 1 /* {{{ */}") == 1);  // and in comments
  CHECK(json_nesting_depth(nested_objects(100000)) == kMaxJsonDepth + 1);  // stops early
  CHECK(json_nesting_depth(nested_objects(kMaxJsonDepth)) == kMaxJsonDepth);
  CHECK_NOTHROW(check_json_depth(nested_objects(kMaxJsonDepth), "x"));
  CHECK(contains(error_of([] { check_json_depth(nested_objects(kMaxJsonDepth + 1), "file.json"); }),
                 "file.json: JSON nested more than 512 levels deep"));
}

TEST_CASE("json_fields: range-checked integers, errors naming the field", "[inputs]") {
  const nlohmann::json j = nlohmann::json::parse(
      R"({"a": 5, "big": 4294967300, "huge": 18446744073709551615, "f": 1e300, "two": 2.0,
          "neg": -5, "s": "x", "b": true})",
      nullptr, false, false);
  CHECK(json_int(j, "a", 0, 10, "f.json") == 5);
  CHECK(contains(error_of([&] { json_int(j, "big", 0, INT32_MAX, "f.json"); }),
                 "f.json: \"big\" must be an integer in [0, 2147483647], got 4294967300"));
  CHECK(contains(error_of([&] { json_int(j, "huge", 0, INT64_MAX, "f.json"); }),
                 "got 18446744073709551615"));
  CHECK(json_uint64(j, "huge", "f.json") == UINT64_MAX);
  CHECK(contains(error_of([&] { json_int(j, "f", 0, 10, "f.json"); }), "\"f\" must be an integer"));
  CHECK(contains(error_of([&] { json_int(j, "two", 0, 10, "f.json"); }), "must be an integer"));
  CHECK(contains(error_of([&] { json_int(j, "neg", 0, 10, "f.json"); }), "got -5"));
  CHECK(contains(error_of([&] { json_int(j, "missing", 0, 10, "f.json"); }),
                 "f.json: missing \"missing\""));
  CHECK(contains(error_of([&] { json_bool(j, "s", "f.json"); }), "\"s\" must be true or false"));
  CHECK(json_string(j, "s", "f.json") == "x");
  CHECK(contains(error_of([&] { json_at(j["a"], "x", "f.json"); }), "f.json: not a JSON object"));
  CHECK(describe_json(std::string("caf\xe9")) == "\"caf\xef\xbf\xbd\"");  // never throws
}

TEST_CASE("deeply nested JSON in any input is an error, not a crash", "[inputs]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const std::string deep = nested_objects(100000);

  SECTION("a config file") {
    write_file_atomic(tmp / "deep.json", deep);
    const Outcome o = run_binary("train --config '" + tmp / "deep.json" + "'", tmp.path);
    CHECK(o.status == 1);
    CHECK(contains(o.err, "deep.json': JSON nested more than 512 levels deep"));
  }
  SECTION("a --set value") {
    // (600 levels: a command line holds that much, not 100,000)
    const Outcome o = run_binary(
        "train --config tiny --set 'model.d_model=" + nested_objects(600) + "'", tmp.path);
    CHECK(o.status == 1);
    CHECK(contains(o.err, "--set model.d_model: JSON nested more than 512 levels deep"));
  }
  SECTION("a JSONL document") {
    write_file_atomic(tmp / "docs.jsonl", "{\"text\": \"fine\"}\n" + deep + "\n");
    const Outcome o = run_binary("tokenize --tokenizer bytes --quiet --out '" + tmp / "tok" + "' '" +
                                     tmp / "docs.jsonl" + "'",
                                 tmp.path);
    CHECK(o.status == 1);
    CHECK(contains(o.err, "docs.jsonl:2: JSON nested more than 512 levels deep"));
  }
  SECTION("a checkpoint's state.json, and a safetensors header") {
    write_config(tmp, corpus, tmp / "run", 2, 2, "c.json");
    REQUIRE(run_binary("train --config '" + tmp / "c.json" + "'", tmp.path).status == 0);
    const std::string ckpt = tmp / "run/ckpt-2";
    const std::string state = read_file(ckpt + "/state.json");
    write_file_atomic(ckpt + "/state.json", deep);
    for (const std::string& cmd :
         {"train --config '" + tmp / "c.json" + "' --set train.steps=3 --resume",
          "eval --checkpoint '" + ckpt + "' --batches 1", "sample --checkpoint '" + ckpt + "'"}) {
      const Outcome o = run_binary(cmd, tmp.path);
      INFO(cmd << "\n" << o.err);
      CHECK(o.status == 1);
      CHECK(contains(o.err, ckpt + "/state.json: JSON nested more than 512 levels deep"));
    }
    write_file_atomic(ckpt + "/state.json", state);
    // A safetensors file: 8-byte little-endian header length, then the header.
    std::string st(8, '\0');
    for (int i = 0; i < 8; ++i) st[i] = char((uint64_t(deep.size()) >> (8 * i)) & 0xff);
    write_file_atomic(tmp / "deep.safetensors", st + deep);
    const Outcome o = run_binary("train --config '" + tmp / "c.json" + "' --set train.out_dir='" +
                                     tmp / "run2" + "' --init-from '" + tmp / "deep.safetensors" +
                                     "'",
                                 tmp.path);
    CHECK(o.status == 1);
    CHECK(contains(o.err, "header nests more than 512 levels deep"));
  }
}

TEST_CASE("state.json is checked field by field before anything is used", "[inputs]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  write_config(tmp, corpus, tmp / "run", 2, 2, "c.json");
  REQUIRE(run_binary("train --config '" + tmp / "c.json" + "'", tmp.path).status == 0);
  const std::string ckpt = tmp / "run/ckpt-2", file = ckpt + "/state.json";
  const nlohmann::json good = nlohmann::json::parse(read_file(file));
  const std::string metrics = read_file(tmp / "run/metrics.jsonl");

  struct Bad {
    const char* pointer;  // JSON pointer of the field to change
    nlohmann::json value;
    std::string expect;
  };
  const std::vector<Bad> cases = {
      {"/step", -5, "\"step\" must be an integer in [0, 2147483647], got -5"},
      {"/step", 4294967300LL, "got 4294967300"},
      {"/step", 1, "step 1 does not match the directory name (step 2)"},
      {"/format_version", 1e300, "\"format_version\" must be an integer"},
      {"/format_version", "1", "\"format_version\" must be an integer"},
      {"/tokens", -1, "\"tokens\" must be an integer"},
      {"/config", "x", "\"config\" must be an object"},
      {"/data", nullptr, "\"data\" must be an object"},
      {"/data/train/datasets/0/epoch", 9.2e18, "\"epoch\" must be an integer"},
      {"/data/train/datasets/0/epoch", 4611686018427387904LL, "\"epoch\" must be an integer in"},
      {"/data/train/datasets/0/position", -1, "\"position\" must be an integer"},
      {"/data/train/seed", "x", "\"seed\" must be a non-negative integer"},
      {"/data/train/version", 1e300, "\"version\" must be an integer"},
  };
  for (const Bad& bad : cases) {
    DYNAMIC_SECTION(bad.pointer << " = " << bad.value.dump()) {
      nlohmann::json state = good;
      state[nlohmann::json::json_pointer(bad.pointer)] = bad.value;
      write_file_atomic(file, state.dump(1));
      const Outcome o =
          run_binary("train --config '" + tmp / "c.json" + "' --set train.steps=4 --resume",
                     tmp.path);
      INFO(o.err);
      CHECK(o.status == 1);
      CHECK(contains(o.err, bad.expect));
      CHECK(read_file(tmp / "run/metrics.jsonl") == metrics);  // nothing rewritten
      CHECK(checkpoint_dirs(tmp / "run") == std::vector<std::string>{"ckpt-2"});
    }
  }
  write_file_atomic(file, good.dump(1));
  CHECK(run_binary("train --config '" + tmp / "c.json" + "' --set train.steps=3 --resume", tmp.path)
            .status == 0);
}

TEST_CASE("bytes that are not UTF-8 in --set values and paths work", "[inputs]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  write_config(tmp, corpus, tmp / "unused", 2, 2, "c.json");
  const std::string latin1 = tmp / "r\xe9sultats";  // "résultats" in Latin-1
  const Outcome o = run_binary(
      "train --config '" + tmp / "c.json" + "' --set 'train.out_dir=" + latin1 + "'", tmp.path);
  INFO(o.out << o.err);
  CHECK(o.status == 0);
  CHECK(checkpoint_dirs(latin1) == std::vector<std::string>{"ckpt-2"});
  CHECK(contains(read_file(latin1 + "/config.json"), "r\xef\xbf\xbdsultats"));  // U+FFFD there
  const Outcome resumed = run_binary("train --config '" + tmp / "c.json" + "' --set 'train.out_dir=" +
                                         latin1 + "' --set train.steps=3 --resume",
                                     tmp.path);
  INFO(resumed.out << resumed.err);
  CHECK(resumed.status == 0);
  // An unknown key with bad bytes is named, not a raw library message.
  const Outcome bad = run_binary("train --config '" + tmp / "c.json" + "' --set 'model.\xff=1'",
                                 tmp.path);
  CHECK(bad.status == 1);
  CHECK(contains(bad.err, "unknown config key"));
}

TEST_CASE("a run that cannot fit in memory is refused before allocating, with the numbers",
          "[inputs]") {
  TempDir tmp;
  // 100,000 sequences of 256 tokens: about 1.5 TiB of activations for the tiny preset.
  const Outcome o = run_binary(
      "bench --config tiny --set train.backend=cpu --set train.micro_batch=100000", tmp.path);
  INFO(o.out << o.err);
  CHECK(o.status == 1);
  CHECK(contains(o.err, "unipool bench needs about"));
  CHECK(contains(o.err, "GiB of host memory"));
  CHECK(contains(o.err, "train.micro_batch 100000 × model.seq_len 256"));
  CHECK(contains(o.err, "is available"));
}

TEST_CASE("pool-loss counts a float cannot hold are refused (found by fuzz_checkpoint_state)",
          "[inputs]") {
  PoolLossState state;
  const nlohmann::json good = {{"valid", true}, {"ghat", {{1.0, 2.0}}}, {"running", {{0.0, 0.0}}}};
  CHECK_NOTHROW(state.from_json(good, 1, 2));
  nlohmann::json bad = good;
  bad["ghat"][0][0] = 1e300;  // finite in double, +inf in the float state
  CHECK(contains(error_of([&] { state.from_json(bad, 1, 2); }),
                 "pool_loss.ghat[0][0] must be a count in [0, 2^31 - 1], got 1e+300"));
  bad = good;
  bad["running"][0][1] = -1;
  CHECK(contains(error_of([&] { state.from_json(bad, 1, 2); }), "pool_loss.running[0][1]"));
  bad = good;
  bad["ghat"] = "x";
  CHECK(contains(error_of([&] { state.from_json(bad, 1, 2); }), "pool_loss.ghat must hold 1"));
}
