// The fuzzers' inputs, made by the project's own writers.
//
//   make_seeds OUT            OUT/seeds/<target>/   valid inputs (data::write_megatron, write_llmc,
//                                                   write_safetensors, the presets of configs/,
//                                                   make_checkpoint_state, texts): the fuzzing
//                                                   starts from them
//                             OUT/regress/<target>/ the large known-bad inputs (JSON nested 100,000
//                                                   levels, ~600 KB each): replayed, not fuzzed
//                                                   from, not checked in
//                             OUT/json.dict         a libFuzzer dictionary: JSON syntax, every config
//                                                   key, the keys of state.json and of a
//                                                   safetensors header
//   make_seeds --corpus DIR   DIR/<target>/         the small known-bad inputs of the checked-in
//                                                   regression corpus (fuzz/corpus/), one per class
//
// scripts/fuzz.sh runs the first form on every run; the second wrote fuzz/corpus/ once (a finding's
// reproducer is added there by hand, see README.md §Fuzzing).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/fsutil.h"
#include "base/json_fields.h"
#include "data/loader.h"
#include "data/shards.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/safetensors.h"
#include "fuzz/fuzz_util.h"
#include "model/layout.h"
#include "model/model.h"

using namespace unipool;
using namespace unipool::fuzz;
namespace fs = std::filesystem;

namespace {

std::string g_root;  // OUT/seeds, OUT/regress or the corpus directory
int g_files = 0;

void put(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = g_root + "/" + target;
  make_dirs(dir);
  write_bytes(dir + "/" + name, bytes);
  ++g_files;
}

std::string slurp(const std::string& path) { return read_file(path); }

std::string u32le(uint32_t v) {
  std::string s(4, '\0');
  std::memcpy(&s[0], &v, 4);
  return s;
}
std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  std::memcpy(&s[0], &v, 8);
  return s;
}
std::string i32le(int32_t v) { return u32le(static_cast<uint32_t>(v)); }
void poke(std::string& s, size_t at, const std::string& bytes) { s.replace(at, bytes.size(), bytes); }

std::string nested_objects(int depth) {
  std::string s;
  s.reserve(size_t(depth) * 6 + 1);
  for (int i = 0; i < depth; ++i) s += "{\"a\":";
  s += "1";
  s.append(size_t(depth), '}');
  return s;
}

// ---- shards ----------------------------------------------------------------------------------

// A Megatron shard written by the project's writer: (.idx, .bin) bytes.
std::pair<std::string, std::string> megatron(const std::vector<std::vector<int32_t>>& docs) {
  const std::string prefix = scratch("w_megatron");
  data::write_megatron(prefix, docs);
  return {slurp(prefix + ".idx"), slurp(prefix + ".bin")};
}
std::string llmc(const std::vector<int32_t>& tokens) {
  const std::string path = scratch("w_llmc.bin");
  data::write_llmc(path, tokens);
  return slurp(path);
}
// fuzz_shards inputs: [mode][params][payload]
std::string shard_mode0(uint8_t params, const std::string& idx) {
  return std::string{char(0), char(params)} + idx;
}
std::string shard_mode1(uint8_t params, const std::string& idx, const std::string& bin) {
  return std::string{char(1), char(params)} + u32le(uint32_t(idx.size())) + idx + bin;
}
std::string shard_mode2(uint8_t params, const std::string& bin) {
  return std::string{char(2), char(params)} + bin;
}

std::vector<int32_t> llmc_tokens() {  // llm.c: EOT before each document
  std::vector<int32_t> t;
  for (const auto& doc : fixed_documents()) {
    t.push_back(data::kGpt2Eot);
    t.insert(t.end(), doc.begin(), doc.end() - 1);  // without the Megatron EOD
  }
  return t;
}

void shard_seeds() {
  const std::string idx0 = megatron(fixed_documents()).first;
  // params: bits 0-1 seq_len {1,2,3,8}, bit 2 prefetch, bits 3-4 split string, bits 5-6 split,
  // bit 7 blend with itself
  const uint8_t params[] = {0x00, 0x05, 0x03, 0x0B, 0x82, 0x30, 0x56, 0xFF};
  for (const uint8_t p : params) {
    char name[32];
    std::snprintf(name, sizeof(name), "megatron_fixed_bin_p%02x", p);
    put("fuzz_shards", name, shard_mode0(p, idx0));
  }
  const auto [idx1, bin1] = megatron({{1, 2, 3}, {4}, {5, 6, 7, 8, 9, 10, 50256}});
  put("fuzz_shards", "megatron_3docs", shard_mode1(0x01, idx1, bin1));
  const auto [idx2, bin2] = megatron({{100, 200, 300, 400, 500, 600, 700, 800, 900, 50256}});
  put("fuzz_shards", "megatron_1doc", shard_mode1(0x05, idx2, bin2));
  std::vector<std::vector<int32_t>> many;
  for (int d = 0; d < 40; ++d) many.push_back({d, d + 1, d + 2, 50256});
  const auto [idx3, bin3] = megatron(many);
  put("fuzz_shards", "megatron_40docs", shard_mode1(0x0A, idx3, bin3));
  const std::string l = llmc(llmc_tokens());
  put("fuzz_shards", "llmc", shard_mode2(0x00, l));
  put("fuzz_shards", "llmc_prefetch_seq8", shard_mode2(0x07, l));
  put("fuzz_shards", "llmc_valid_split", shard_mode2(0x29, l));
}

void shard_corpus() {
  const std::string idx = megatron(fixed_documents()).first;
  const std::string T = "fuzz_shards";
  put(T, "idx_truncated_header", shard_mode0(0, idx.substr(0, 20)));
  put(T, "idx_truncated_33", shard_mode0(0, idx.substr(0, 33)));
  put(T, "idx_truncated_last_byte", shard_mode0(0, idx.substr(0, idx.size() - 1)));
  put(T, "idx_trailing_byte", shard_mode0(0, idx + "x"));
  std::string s = idx;
  s[0] = 'X';
  put(T, "idx_bad_magic", shard_mode0(0, s));
  s = idx;
  poke(s, 9, u64le(2));
  put(T, "idx_bad_version", shard_mode0(0, s));
  s = idx;
  s[17] = 3;
  put(T, "idx_bad_dtype", shard_mode0(0, s));
  s = idx;
  s[17] = 4;  // int32 tokens: the .bin's size no longer matches
  put(T, "idx_dtype_int32", shard_mode0(0, s));
  s = idx;
  poke(s, 18, u64le(uint64_t(1) << 61));  // 34 + 12N overflows
  put(T, "idx_sequences_overflow", shard_mode0(0, s));
  s = idx;
  poke(s, 26, u64le(0));  // D = 0
  put(T, "idx_no_document_index", shard_mode0(0, s));
  s = idx;
  poke(s, 26, u64le(~uint64_t(0)));
  put(T, "idx_documents_max", shard_mode0(0, s));
  const size_t N = fixed_documents().size();
  s = idx;
  poke(s, 34, i32le(-1));  // a negative length
  put(T, "idx_negative_length", shard_mode0(0, s));
  s = idx;
  poke(s, 34 + 4 * N + 8, u64le(uint64_t(1) << 40));  // the second pointer far past the .bin
  put(T, "idx_pointer_past_bin", shard_mode0(0, s));
  s = idx;
  poke(s, 34 + 4 * N + 8, u64le(~uint64_t(0) - 3));  // a negative pointer
  put(T, "idx_pointer_negative", shard_mode0(0, s));
  s = idx;
  poke(s, 34 + 12 * N + 8, u64le(4));  // document_indices not increasing
  put(T, "idx_document_index_decreasing", shard_mode0(0, s));
  s = idx;
  poke(s, 34 + 12 * N, u64le(1));  // the first document does not start at sequence 0
  put(T, "idx_document_index_first_not_zero", shard_mode0(0, s));
  const auto [idx1, bin1] = megatron({{1, 2, 3, 60000, 5, 6, 7, 8, 9}});
  put(T, "token_out_of_vocab", shard_mode1(0, idx1, bin1));
  put(T, "megatron_idx_len_past_end", shard_mode1(0, idx1, bin1).substr(0, 6 + idx1.size() / 2));
  put(T, "megatron_bin_truncated", shard_mode1(0, idx1, bin1.substr(0, bin1.size() - 1)));
  put(T, "megatron_empty_files", shard_mode1(0, "", ""));
  put(T, "mode_only", std::string(1, '\0'));

  const std::string l = llmc(llmc_tokens());
  s = l;
  poke(s, 0, u32le(12345));
  put(T, "llmc_bad_magic", shard_mode2(0, s));
  s = l;
  poke(s, 4, u32le(7));  // version 7 with the GPT-2 magic
  put(T, "llmc_bad_version", shard_mode2(0, s));
  s = l;
  poke(s, 8, u32le(3));  // fewer tokens announced than present
  put(T, "llmc_count_mismatch", shard_mode2(0, s));
  s = l;
  poke(s, 8, u32le(0x7fffffff));
  put(T, "llmc_count_huge", shard_mode2(0, s));
  s = l;
  poke(s, 8, u32le(0xffffffff));  // a negative count
  put(T, "llmc_count_negative", shard_mode2(0, s));
  put(T, "llmc_header_only", shard_mode2(0, l.substr(0, 1024)));
  put(T, "llmc_truncated_header", shard_mode2(0, l.substr(0, 1000)));
  s = l.substr(0, 1024);  // LLaMA-3 uint32 tokens, one of them >= 2^31
  poke(s, 0, u32le(data::kLlmcMagicLlama3));
  poke(s, 4, u32le(7));
  poke(s, 8, u32le(3));
  s += u32le(128000) + u32le(0x80000000u) + u32le(5);
  put(T, "llmc_uint32_token_2p31", shard_mode2(0, s));
  s = l;
  poke(s, 1024 + 4, std::string("\xff\xff", 2));  // token 65535 >= vocab 50257
  put(T, "llmc_token_out_of_vocab", shard_mode2(0, s));
}

// ---- safetensors -----------------------------------------------------------------------------

std::string safetensors(const std::vector<TensorRef>& tensors,
                        const std::map<std::string, std::string>& metadata = {}) {
  const std::string path = scratch("w.safetensors");
  write_safetensors(path, tensors, metadata);
  return slurp(path);
}
// A file with this header text (no padding) and `data` after it.
std::string raw_safetensors(const std::string& header, const std::string& data) {
  return u64le(header.size()) + header + data;
}

void safetensors_seeds() {
  const float a[6] = {1, 2, 3, 4, 5, 6}, b[2] = {-1.5f, 0.25f}, c[1] = {42};
  const std::string T = "fuzz_safetensors";
  put(T, "three_tensors_metadata",
      safetensors({{"tok_embeddings.weight", {2, 3}, a}, {"norm.weight", {2}, b}, {"scale", {}, c}},
                  {{"format", "pt"}, {"unipool", "fuzz seed"}}));
  put(T, "one_tensor", safetensors({{"w", {6}, a}}));
  put(T, "empty_tensors", safetensors({{"e", {0, 3}, nullptr}, {"w", {2}, b}, {"z", {0}, nullptr}}));
  put(T, "no_tensors", safetensors({}));
  put(T, "metadata_only", safetensors({}, {{"k", "v"}}));
}

void safetensors_corpus() {
  const float a[6] = {1, 2, 3, 4, 5, 6};
  const std::string T = "fuzz_safetensors";
  const std::string good = safetensors({{"w", {2, 3}, a}});
  std::string s = good;
  poke(s, 0, u64le(good.size()));  // header length larger than the file
  put(T, "header_length_past_eof", s);
  poke(s, 0, u64le(~uint64_t(0)));
  put(T, "header_length_max", s);
  put(T, "empty_file", "");
  put(T, "seven_bytes", good.substr(0, 7));
  put(T, "truncated_data", good.substr(0, good.size() - 1));
  const std::string data(24, '\0');
  auto f32 = [](const std::string& shape, int b, int e) {
    return "{\"dtype\":\"F32\",\"shape\":" + shape + ",\"data_offsets\":[" + std::to_string(b) +
           "," + std::to_string(e) + "]}";
  };
  put(T, "overlapping_offsets",
      raw_safetensors("{\"a\":" + f32("[4]", 0, 16) + ",\"b\":" + f32("[4]", 8, 24) + "}", data));
  put(T, "same_offsets",
      raw_safetensors("{\"a\":" + f32("[6]", 0, 24) + ",\"b\":" + f32("[6]", 0, 24) + "}", data));
  put(T, "gap", raw_safetensors("{\"a\":" + f32("[2]", 0, 8) + ",\"b\":" + f32("[2]", 16, 24) + "}",
                                data));
  put(T, "trailing_bytes", raw_safetensors("{\"a\":" + f32("[2]", 0, 8) + "}", data));
  put(T, "offsets_disagree_with_shape", raw_safetensors("{\"a\":" + f32("[5]", 0, 24) + "}", data));
  put(T, "offsets_past_buffer", raw_safetensors("{\"a\":" + f32("[8]", 0, 32) + "}", data));
  put(T, "begin_after_end", raw_safetensors("{\"a\":" + f32("[6]", 24, 0) + "}", data));
  put(T, "negative_dim", raw_safetensors("{\"a\":" + f32("[-6]", 0, 24) + "}", data));
  put(T, "dims_overflow",
      raw_safetensors("{\"a\":" + f32("[4611686018427387904,4611686018427387904,4]", 0, 24) + "}",
                      data));
  put(T, "dim_uint64_max", raw_safetensors("{\"a\":" + f32("[18446744073709551615]", 0, 24) + "}",
                                           data));
  put(T, "dtype_f16",
      raw_safetensors("{\"a\":{\"dtype\":\"F16\",\"shape\":[12],\"data_offsets\":[0,24]}}", data));
  put(T, "duplicate_key",
      raw_safetensors("{\"a\":" + f32("[6]", 0, 24) + ",\"a\":" + f32("[6]", 0, 24) + "}", data));
  put(T, "metadata_not_string",
      raw_safetensors("{\"__metadata__\":{\"k\":1},\"a\":" + f32("[6]", 0, 24) + "}", data));
  put(T, "metadata_not_object",
      raw_safetensors("{\"__metadata__\":[],\"a\":" + f32("[6]", 0, 24) + "}", data));
  put(T, "header_not_object", raw_safetensors("[1,2,3]", ""));
  put(T, "header_not_json", raw_safetensors("{\"a\":", data));
  put(T, "header_invalid_utf8", raw_safetensors("{\"\xff\":" + f32("[6]", 0, 24) + "}", data));
  put(T, "offsets_not_integers",
      raw_safetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0.5,24]}}", data));
  put(T, "empty_name", raw_safetensors("{\"\":" + f32("[6]", 0, 24) + "}", data));
  put(T, "nested_600", raw_safetensors(nested_objects(600), ""));
}

// ---- config ----------------------------------------------------------------------------------

// fuzz_config's input: the file, then each --set assignment after a NUL.
std::string with_sets(const std::string& file, const std::vector<std::string>& sets) {
  std::string s = file;
  for (const std::string& a : sets) s += std::string(1, '\0') + a;
  return s;
}

void config_seeds() {
  const std::string T = "fuzz_config";
  std::vector<fs::path> presets;
  for (const auto& e : fs::directory_iterator(UNIPOOL_CONFIG_DIR))
    if (e.path().extension() == ".json") presets.push_back(e.path());
  std::sort(presets.begin(), presets.end());
  for (const fs::path& p : presets) put(T, "preset_" + p.stem().string(), slurp(p.string()));
  const std::string tiny = slurp(std::string(UNIPOOL_CONFIG_DIR) + "/tiny.json");
  put(T, "tiny_with_sets",
      with_sets(tiny, {"model.top_k=1", "train.steps=5", "optim.lr=0.001"}));
  put(T, "base_tiny",
      with_sets("{\"base\": \"tiny\", \"model\": {\"d_model\": 64, \"n_head\": 2}, // a comment\n"
                " \"train\": {\"steps\": 3}}",
                {"data.train=[[1.0, \"data_cache/x\"], [0.5, \"y\"]]"}));
  put(T, "defaults", dump_json(config_defaults(), 2));
  put(T, "resolved_default", dump_json(Config().to_json(), 2));
  put(T, "empty_object_sets",
      with_sets("{}", {"model.ffn=moe", "model.experts_per_layer=4", "model.top_k=2"}));
}

void config_corpus() {
  const std::string T = "fuzz_config";
  put(T, "nested_600", nested_objects(600));
  put(T, "set_nested_600", with_sets("{}", {"model.d_model=" + nested_objects(600)}));
  put(T, "set_invalid_utf8_value", with_sets("{}", {"train.out_dir=r\xe9sultats"}));
  put(T, "set_invalid_utf8_key", with_sets("{}", {"model.\xff=1"}));
  put(T, "set_invalid_utf8_data_train",
      with_sets("{}", {"data.train=[[1.0, \"r\xe9sultats\"]]", "data.split=\xff\xfe"}));
  put(T, "set_no_equals", with_sets("{}", {"model.d_model"}));
  put(T, "set_empty", with_sets("{}", {""}));
  put(T, "set_section", with_sets("{}", {"model=1"}));
  put(T, "set_unknown_key", with_sets("{}", {"model.nope=1"}));
  put(T, "set_empty_key_part", with_sets("{}", {"model..d_model=1"}));
  put(T, "file_invalid_utf8", "{\"train\": {\"out_dir\": \"r\xe9sultats\"}}");
  put(T, "unknown_key", "{\"model\": {\"d_modle\": 64}}");
  put(T, "wrong_type", "{\"model\": {\"d_model\": \"64\"}}");
  put(T, "int_1e300", "{\"model\": {\"n_layer\": 1e300}}");
  put(T, "int_negative", "{\"model\": {\"n_layer\": -5}}");
  put(T, "int_4294967300", "{\"train\": {\"steps\": 4294967300}}");
  put(T, "int_fraction", "{\"train\": {\"steps\": 2.5}}");
  put(T, "seed_negative", "{\"train\": {\"seed\": -1}}");
  put(T, "huge_model", "{\"model\": {\"vocab_size\": 2147483647, \"d_model\": 2147483646, "
                       "\"n_head\": 1, \"n_kv_head\": 1, \"ffn_hidden\": 2147483647}}");
  put(T, "section_not_object", "{\"model\": 5}");
  put(T, "top_level_array", "[1, 2]");
  put(T, "not_json", "{\"model\": ");
  put(T, "empty_file", "");
  put(T, "base_missing", "{\"base\": \"no-such-preset\"}");
  put(T, "base_not_string", "{\"base\": 5}");
  put(T, "base_empty", "{\"base\": \"\"}");
  put(T, "base_directory", "{\"base\": \"/\"}");
  put(T, "data_train_bad", "{\"data\": {\"train\": [[\"x\", 1.0]]}}");
  put(T, "data_train_weight_zero", "{\"data\": {\"train\": [[0, \"x\"]]}}");
  put(T, "split_bad", "{\"data\": {\"split\": \"1,,x\"}}");
}

// ---- checkpoint state ------------------------------------------------------------------------

struct StateMaker {
  std::string shard = scratch("shard");
  Config config;
  Layout layout;
  std::unique_ptr<Model<CpuBackend<float>>> model;

  StateMaker() {
    data::write_megatron(shard, fixed_documents());
    config = load_config(read_config_file("tiny"), fixed_config_overrides(), false);
    config.data.train = {{1.0, shard}};
    layout = make_layout(config.model);
    model = std::make_unique<Model<CpuBackend<float>>>(layout, config.loss, 1,
                                                       config.model.seq_len);
  }
  // state.json at step 7 (fuzz_checkpoint_state's directory is ckpt-7) after `batches` batches.
  nlohmann::json state(int batches, bool pool_valid = false) {
    data::Loader loader(fixed_loader_spec(shard), data::Split::train);
    std::vector<int32_t> in(size_t(loader.seq_len())), tg(in.size());
    for (int i = 0; i < batches; ++i) loader.next_batch(1, in.data(), tg.data());
    if (pool_valid) {
      PoolLossState p = model->pool_state();
      for (auto& row : p.ghat)
        for (size_t i = 0; i < row.size(); ++i) row[i] = double(i % 3) * 0.5;
      for (auto& row : p.running)
        for (size_t i = 0; i < row.size(); ++i) row[i] = double(i % 2);
      p.valid = true;
      model->set_pool_state(p);
    }
    return make_checkpoint_state(7, int64_t(batches) * 4, config, loader.state(),
                                 model->export_state());
  }
};

void state_seeds() {
  StateMaker m;
  const std::string T = "fuzz_checkpoint_state";
  put(T, "start", dump_json(m.state(0), 1) + "\n");
  put(T, "after_3_batches", dump_json(m.state(3), 1) + "\n");
  put(T, "second_epoch_pool_valid", dump_json(m.state(12, true), 1) + "\n");
  nlohmann::json dense = m.state(1);
  dense["config"]["model"]["ffn"] = "dense";
  dense["config"]["loss"]["pool_aux_coeff"] = 0;
  dense.erase("pool_loss");
  put(T, "dense_model", dump_json(dense, 1) + "\n");
}

void state_corpus() {
  StateMaker m;
  const std::string T = "fuzz_checkpoint_state";
  const nlohmann::json good = m.state(3, true);
  auto bad = [&](const std::string& name, const char* pointer, const nlohmann::json& value) {
    nlohmann::json s = good;
    s[nlohmann::json::json_pointer(pointer)] = value;
    put(T, name, dump_json(s, 1) + "\n");
  };
  auto without = [&](const std::string& name, const char* pointer, const char* key) {
    nlohmann::json s = good;
    s[nlohmann::json::json_pointer(pointer)].erase(key);
    put(T, name, dump_json(s, 1) + "\n");
  };
  bad("step_negative", "/step", -5);
  bad("step_4294967300", "/step", 4294967300LL);
  bad("step_not_directory_name", "/step", 1);
  bad("step_float", "/step", 7.0);
  bad("format_version_1e300", "/format_version", 1e300);
  bad("format_version_string", "/format_version", "1");
  bad("format_version_2", "/format_version", 2);
  bad("tokens_negative", "/tokens", -1);
  bad("tokens_uint64_max", "/tokens", UINT64_MAX);
  bad("config_string", "/config", "x");
  bad("config_bad_value", "/config/model/d_model", -1);
  bad("config_unknown_key", "/config/model/nope", 1);
  bad("data_null", "/data", nullptr);
  bad("data_train_null", "/data/train", nullptr);
  without("data_missing", "", "data");
  without("data_train_missing", "/data", "train");
  without("step_missing", "", "step");
  without("config_missing", "", "config");
  bad("epoch_9p2e18", "/data/train/datasets/0/epoch", 9.2e18);
  bad("epoch_2p62", "/data/train/datasets/0/epoch", 4611686018427387904LL);
  bad("epoch_int64_max", "/data/train/datasets/0/epoch", INT64_MAX);
  bad("epoch_huge_with_drawn", "/data/train/datasets/0/epoch", 1000000000000000000LL);
  bad("position_negative", "/data/train/datasets/0/position", -1);
  bad("position_past_samples", "/data/train/datasets/0/position", 1000);
  bad("seed_string", "/data/train/seed", "x");
  bad("loader_version_1e300", "/data/train/version", 1e300);
  bad("loader_kind_wrong", "/data/train/kind", "other");
  bad("samples_drawn_mismatch", "/data/train/samples_drawn", 1);
  bad("datasets_empty", "/data/train/datasets", nlohmann::json::array());
  bad("datasets_not_array", "/data/train/datasets", 5);
  bad("dataset_not_object", "/data/train/datasets/0", "x");
  bad("documents_wrong", "/data/train/datasets/0/documents", nlohmann::json::array({0, 1}));
  bad("fingerprint_wrong", "/data/train/datasets/0/fingerprint", "0000000000000000");
  bad("weight_nan_like", "/data/train/datasets/0/weight", "NaN");
  bad("seq_len_zero", "/data/train/seq_len", 0);
  without("pool_loss_missing", "", "pool_loss");
  bad("pool_loss_groups_wrong", "/pool_loss/ghat", nlohmann::json::array());
  bad("pool_loss_row_short", "/pool_loss/ghat/0", nlohmann::json::array({1.0}));
  bad("pool_loss_negative", "/pool_loss/ghat/0/0", -1.0);
  bad("pool_loss_string", "/pool_loss/running/0/1", "1");
  bad("pool_loss_valid_number", "/pool_loss/valid", 1);
  put(T, "nested_600", nested_objects(600));
  put(T, "top_level_array", "[]");
  put(T, "not_json", "{\"step\": 7,");
  put(T, "empty_file", "");
}

// ---- tokenizer ---------------------------------------------------------------------------------

void tokenizer_seeds() {
  const std::string T = "fuzz_tokenizer";
  put(T, "english", "Hello world! The quick brown fox jumps over the lazy dog.\n");
  put(T, "contractions", "I'm sure they'll say we've done what you'd've DON'T it's x!'s 'tis");
  put(T, "unicode",
      "na\xc3\xafve caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x99\x82 "
      "e\xcc\x81 \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xe2\x80\xa8\xc2\xa0\xc2\x85x");
  put(T, "whitespace", "a  b\t\tc\n\n  d   \r\n e \xe3\x80\x80 f      ");
  put(T, "numbers", "12345 3.14159 1e10 -42 \xd9\xa3\xd9\xa4 \xe2\x85\xab 2024-05-20");
  put(T, "endoftext", "before<|endoftext|>after <|endoftext|>");
  put(T, "code",
      "int main() {\n  return printf(\"%d\\n\", x[i] >> 2);\n}\n// comment\n#include <x>\n");
  put(T, "split_points", "ab\ncd\nef\ngh\nij\nkl\nmn\nop\nqr\nst\nuv\nwx\nyz\n");
  put(T, "jsonl",
      "{\"text\": \"first document\"}\n{\"text\": \"second\\nline \\u00e9\"}\n\n"
      "{\"text\": \"\"}\n{\"text\": \"third\", \"meta\": {\"pile_set_name\": \"x\"}}\n");
  put(T, "jsonl_one", "{\"text\": \"The quick brown fox.\"}");
}

void tokenizer_corpus() {
  const std::string T = "fuzz_tokenizer";
  put(T, "bom_text", "\xEF\xBB\xBFHello, BOM");
  put(T, "bom_only", "\xEF\xBB\xBF");
  put(T, "bom_jsonl", "\xEF\xBB\xBF{\"text\": \"after a BOM\"}\n");
  put(T, "jsonl_bom_in_text", "{\"text\": \"\\ufeffdocument\"}\n");
  put(T, "empty_file", "");
  put(T, "jsonl_empty_document", "{\"text\": \"\"}\n");
  put(T, "jsonl_blank_lines", "\n \n\t\n");
  put(T, "jsonl_not_object", "[1, 2]\n");
  put(T, "jsonl_text_not_string", "{\"text\": 5}\n");
  put(T, "jsonl_not_json", "{\"text\": \n");
  put(T, "jsonl_invalid_utf8", "{\"text\": \"caf\xe9\"}\n");
  put(T, "jsonl_nested_600", nested_objects(600) + "\n");
  put(T, "jsonl_endoftext", "{\"text\": \"<|endoftext|>\"}\n");
  put(T, "invalid_utf8_lone_continuation", "a\x80z");
  put(T, "invalid_utf8_overlong", "a\xc0\xaf\xe0\x80\xafz");
  put(T, "invalid_utf8_surrogate", "a\xed\xa0\x80z");
  put(T, "invalid_utf8_above_10ffff", "a\xf4\x90\x80\x80\xf5z");
  put(T, "invalid_utf8_truncated", "a\xe2\x82 \xf0\x9f\x99");
  put(T, "nul_bytes", std::string("a\0b\0\0c", 6));
  put(T, "apostrophe_runs", "''''s 's't're've'm'll'd 'S");
  put(T, "long_word", std::string(3000, 'a'));
  put(T, "long_spaces", std::string(3000, ' ') + "x");
}

// ---- the dictionary ----------------------------------------------------------------------------

std::string dict_entry(const std::string& s) {
  std::string out = "\"";
  for (const unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c >= 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02X", c);
      out += hex;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

void write_dict(const std::string& path) {
  std::set<std::string> words = {"{", "}", "[", "]", ":", ",", "\"", "true", "false", "null",
                                 "1e300", "-1", "0", "4294967300", "9223372036854775807",
                                 "18446744073709551615", "2.5", "\\u00e9", "\\ud800", "//", "/*",
                                 "*/", "=", "\"base\"", "\"tiny\"", "\"megatron\"", "\"llmc\"",
                                 "\"dense\"", "\"moe\"", "\"unipool\"", "\"norm\"", "\"softmax\"",
                                 "\"auto\"", "\"cpu\"", "\"cuda\"", "\"969,30,1\"", "\"F32\"",
                                 "\"unipool.data.Loader\"", "\"train\"", "\"valid\"", "\"test\""};
  for (const char* k :
       {"format_version", "step", "tokens", "config", "data", "train", "rng", "note", "kind",
        "version", "split", "split_spec", "format", "seed", "seq_len", "samples_drawn",
        "datasets", "name", "weight", "num_tokens", "num_documents", "documents", "num_samples",
        "fingerprint", "epoch", "position", "pool_loss", "ghat", "running", "valid", "dtype",
        "shape", "data_offsets", "__metadata__", "text"})
    words.insert("\"" + std::string(k) + "\"");
  for (const std::string& key : config_keys()) {
    words.insert(key + "=");
    size_t start = 0;
    while (true) {
      const size_t dot = key.find('.', start);
      words.insert("\"" + key.substr(start, dot == std::string::npos ? dot : dot - start) + "\"");
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
  }
  std::string text = "# libFuzzer dictionary written by fuzz/make_seeds.cpp\n";
  for (const std::string& w : words) text += dict_entry(w) + "\n";
  write_bytes(path, text);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 3 && std::string(argv[1]) == "--corpus") {
      g_root = argv[2];
      shard_corpus();
      safetensors_corpus();
      config_corpus();
      state_corpus();
      tokenizer_corpus();
      std::printf("make_seeds: %d regression inputs in %s\n", g_files, argv[2]);
      return 0;
    }
    if (argc != 2) {
      std::fprintf(stderr, "usage: make_seeds OUT | make_seeds --corpus DIR\n");
      return 2;
    }
    const std::string out = argv[1];
    remove_tree(out + "/seeds");
    remove_tree(out + "/regress");
    g_root = out + "/seeds";
    shard_seeds();
    safetensors_seeds();
    config_seeds();
    state_seeds();
    tokenizer_seeds();
    const int seeds = g_files;
    // The known-bad inputs too large to check in: JSON nested 100,000 levels deep.
    g_root = out + "/regress";
    const std::string deep = nested_objects(100000);
    put("fuzz_config", "nested_100000", deep);
    put("fuzz_config", "set_nested_100000", with_sets("{}", {"model.d_model=" + deep}));
    put("fuzz_checkpoint_state", "nested_100000", deep);
    put("fuzz_safetensors", "header_nested_100000", raw_safetensors(deep, ""));
    put("fuzz_tokenizer", "jsonl_nested_100000", "{\"text\": \"ok\"}\n" + deep + "\n");
    write_dict(out + "/json.dict");
    std::printf("make_seeds: %d seeds in %s/seeds, %d large regression inputs in %s/regress\n",
                seeds, out.c_str(), g_files - seeds, out.c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
  }
}
