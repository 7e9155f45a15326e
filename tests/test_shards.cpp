// Token files (data/shards.h, data/shards.cpp): byte-exact writers against the worked examples of
// docs/data.md §Token files, Megatron and llm.c round trips, one error per corrupt input (naming
// the file and the problem), random corruption that never crashes the readers, and the uint16
// limit of the writers. The loader on top of them: tests/test_loader.cpp.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "base/sha256.h"
#include "data/shards.h"
#include "tests/catch.h"
#include "tests/data_fixtures.h"
#include "tests/tempdir.h"

using unipool::test::contains;
using unipool::test::error_of;
using unipool::test::hex;
using unipool::test::kExampleDocs;
using unipool::test::read_bytes;
using unipool::test::TempDir;

using namespace unipool::data;

namespace {

// ---- fixtures ---------------------------------------------------------------------------------

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

template <typename T>
void poke(std::vector<uint8_t>& bytes, size_t offset, T value) {
  REQUIRE(offset + sizeof(T) <= bytes.size());
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

// SHA-256 of a whole byte vector (base/sha256.h), to pin files to the hashes in docs/data.md.
std::string sha256(const std::vector<uint8_t>& msg) {
  return unipool::sha256_hex(msg.data(), msg.size());
}

// The same documents in llm.c's convention: EOT before each document.
std::vector<int32_t> example_llmc_tokens() {
  std::vector<int32_t> t;
  for (const auto& doc : kExampleDocs) {
    t.push_back(50256);
    t.insert(t.end(), doc.begin(), doc.end() - 1);
  }
  return t;
}

}  // namespace

// ---- writers: byte-exact -----------------------------------------------------------------------

TEST_CASE("data: Megatron writer matches docs/data.md §Token files (Megatron) byte for byte",
          "[data][shards]") {
  TempDir dir;
  const std::string prefix = dir.file("example_text_document");
  write_megatron(prefix, kExampleDocs);
  const auto idx = read_bytes(prefix + ".idx");
  const auto bin = read_bytes(prefix + ".bin");
  REQUIRE(idx.size() == 102);  // 34 + 12*3 + 8*4
  REQUIRE(bin.size() == 38);   // 19 tokens * 2
  CHECK(hex(idx, 46) ==
        "4d4d494449445800000100000000000000"  // magic, version 1
        "08"                                  // dtype uint16
        "0300000000000000"                    // N = 3
        "0400000000000000"                    // D = 4
        "040000000600000009000000");          // lengths 4 6 9
  CHECK(hex(bin, 8) == "883ce303000050c4");
  const std::string idx_sha = sha256(idx), bin_sha = sha256(bin);
  CHECK(idx_sha.substr(0, 8) == "4b580d7e");
  CHECK(idx_sha.substr(58) == "12b354");
  CHECK(bin_sha.substr(0, 8) == "b9052f66");
  CHECK(bin_sha.substr(58) == "403914");
}

TEST_CASE("data: llm.c writer matches docs/data.md §Token files (llm.c) byte for byte",
          "[data][shards]") {
  TempDir dir;
  const std::string path = dir.file("example.bin");
  const auto tokens = example_llmc_tokens();
  REQUIRE(tokens.size() == 19);
  write_llmc(path, tokens);
  const auto bytes = read_bytes(path);
  REQUIRE(bytes.size() == 1062);
  CHECK(hex(bytes, 12) == "88d834010100000013000000");
  for (size_t i = 12; i < 1024; ++i) REQUIRE(bytes[i] == 0);
  CHECK(hex(std::vector<uint8_t>(bytes.begin() + 1024, bytes.end()), 8) == "50c4883ce3030000");
  const std::string sha = sha256(bytes);
  CHECK(sha.substr(0, 8) == "0d1ad7a6");
  CHECK(sha.substr(56) == "b144cc09");
}

// ---- round trips -------------------------------------------------------------------------------

TEST_CASE("data: Megatron round trip", "[data][shards]") {
  TempDir dir;
  const std::string prefix = dir.file("rt");
  write_megatron(prefix, kExampleDocs);
  TokenFile f = TokenFile::open(prefix, ShardFormat::megatron);
  CHECK(f.name() == prefix);
  CHECK(f.token_path() == prefix + ".bin");
  REQUIRE(f.num_documents() == 3);
  REQUIRE(f.num_tokens() == 19);
  int64_t pos = 0;
  for (int64_t d = 0; d < 3; ++d) {
    const auto& doc = kExampleDocs[static_cast<size_t>(d)];
    CHECK(f.document_begin(d) == pos);
    CHECK(f.document_end(d) == pos + static_cast<int64_t>(doc.size()));
    std::vector<int32_t> got(doc.size());
    f.read_tokens(f.document_begin(d), static_cast<int64_t>(doc.size()), got.data());
    CHECK(got == doc);
    for (size_t i = 0; i < doc.size(); ++i) CHECK(f.token(pos + static_cast<int64_t>(i)) == doc[i]);
    pos += static_cast<int64_t>(doc.size());
  }
  // bounds are checked, not read past
  std::vector<int32_t> buf(40);
  CHECK(contains(error_of([&] { f.read_tokens(10, 10, buf.data()); }), "out of range"));
  CHECK(contains(error_of([&] { f.read_tokens(-1, 1, buf.data()); }), "out of range"));
  CHECK(contains(error_of([&] { f.token(19); }), "out of range"));
  CHECK(contains(error_of([&] { f.document_begin(3); }), "out of range"));

  // move-only: a moved-to file still reads
  TokenFile g = std::move(f);
  CHECK(g.token(18) == 50256);

  // empty documents are kept as empty ranges
  write_megatron(prefix, {{1, 2}, {}, {3}});
  TokenFile h = TokenFile::open(prefix, ShardFormat::megatron);
  REQUIRE(h.num_documents() == 3);
  CHECK(h.document_begin(1) == 2);
  CHECK(h.document_end(1) == 2);
  CHECK(h.document_begin(2) == 2);
  CHECK(h.token(2) == 3);
}

TEST_CASE("data: llm.c round trip and documents from EOT", "[data][shards]") {
  TempDir dir;
  const std::string path = dir.file("rt.bin");
  const auto tokens = example_llmc_tokens();
  write_llmc(path, tokens);
  TokenFile f = TokenFile::open(path, ShardFormat::llmc);
  REQUIRE(f.num_tokens() == 19);
  std::vector<int32_t> got(19);
  f.read_tokens(0, 19, got.data());
  CHECK(got == tokens);
  REQUIRE(f.num_documents() == 3);  // EOT before each document: starts at 0, 4, 10
  CHECK(f.document_begin(0) == 0);
  CHECK(f.document_begin(1) == 4);
  CHECK(f.document_begin(2) == 10);
  CHECK(f.document_end(2) == 19);

  // a file that does not start with EOT still has a document at token 0
  write_llmc(path, {7, 8, 50256, 9, 50256, 50256, 10});
  TokenFile g = TokenFile::open(path, ShardFormat::llmc);
  REQUIRE(g.num_documents() == 4);
  CHECK(g.document_begin(1) == 2);
  CHECK(g.document_begin(2) == 4);
  CHECK(g.document_begin(3) == 5);
  CHECK(g.document_end(3) == 7);
}

// ---- corrupt inputs ----------------------------------------------------------------------------

TEST_CASE("data: every corrupt Megatron file gets its own error", "[data][shards]") {
  TempDir dir;
  const std::string prefix = dir.file("bad");
  write_megatron(prefix, kExampleDocs);
  const auto idx = read_bytes(prefix + ".idx");
  const auto bin = read_bytes(prefix + ".bin");
  auto open_error = [&] {
    return error_of([&] { TokenFile::open(prefix, ShardFormat::megatron); });
  };
  // each case: corrupt, check the message names the file and the problem, restore
  auto expect = [&](const std::vector<uint8_t>& new_idx, const std::vector<uint8_t>& new_bin,
                    const std::string& file, const std::string& keyword) {
    write_bytes(prefix + ".idx", new_idx);
    write_bytes(prefix + ".bin", new_bin);
    const std::string msg = open_error();
    INFO(keyword << ": " << msg);
    CHECK(contains(msg, file));
    CHECK(contains(msg, keyword));
    write_bytes(prefix + ".idx", idx);
    write_bytes(prefix + ".bin", bin);
  };
  CHECK(open_error() == "<no error>");

  auto b = idx;
  b[0] = 'X';
  expect(b, bin, "bad.idx", "bad magic (expected MMIDIDX)");
  b = idx;
  std::memcpy(b.data(), "TNTIDX\0\0", 8);
  expect(b, bin, "bad.idx", "legacy");
  b = idx;
  poke<uint64_t>(b, 9, 2);
  expect(b, bin, "bad.idx", "unsupported version 2");
  b = idx;
  b[17] = 6;
  expect(b, bin, "bad.idx", "unsupported dtype code 6");
  b = idx;
  b[17] = 1;
  expect(b, bin, "bad.idx", "unsupported dtype code 1");
  expect(std::vector<uint8_t>(idx.begin(), idx.begin() + 20), bin, "bad.idx", "truncated");
  expect(std::vector<uint8_t>(idx.begin(), idx.begin() + 60), bin, "bad.idx", "truncated");
  expect(std::vector<uint8_t>(idx.begin(), idx.end() - 1), bin, "bad.idx", "truncated");
  b = idx;
  b.push_back(0);
  expect(b, bin, "bad.idx", "size mismatch");
  b = idx;
  poke<uint64_t>(b, 18, uint64_t(1) << 62);  // a huge N must not overflow the size check
  expect(b, bin, "bad.idx", "truncated");
  b = idx;
  poke<uint64_t>(b, 26, 0);
  expect(b, bin, "bad.idx", "document count D is 0");
  b = idx;
  poke<int64_t>(b, 34 + 12 + 8, 10);  // pointer of sequence 1 should be 8
  expect(b, bin, "bad.idx", "pointer");
  b = idx;
  poke<int32_t>(b, 34 + 4, -6);  // negative length
  expect(b, bin, "bad.idx", "negative length");
  b = idx;
  poke<int64_t>(b, 34 + 36 + 24, 2);  // document_indices [0,1,2,2]: must end at N = 3
  expect(b, bin, "bad.idx", "document_indices must end");
  b = idx;
  poke<int64_t>(b, 34 + 36, 1);  // document_indices must start at 0
  expect(b, bin, "bad.idx", "document_indices must start at 0");
  b = idx;
  poke<int64_t>(b, 34 + 36 + 16, 0);  // [0,1,0,3]: decreasing
  expect(b, bin, "bad.idx", "decrease");
  expect(idx, std::vector<uint8_t>(bin.begin(), bin.end() - 2), "bad.bin",
         "truncated: index says 38 bytes, file has 36");
  auto longer = bin;
  longer.push_back(0);
  expect(idx, longer, "bad.bin", "size mismatch");

  // missing files
  std::filesystem::remove(prefix + ".bin");
  std::string msg = open_error();
  CHECK(msg == "cannot open " + prefix + ".bin: No such file or directory");
  msg = error_of([&] { TokenFile::open(dir.file("nothing"), ShardFormat::megatron); });
  CHECK(msg == "cannot open " + dir.file("nothing") + ".idx: No such file or directory");

  // empty shards
  write_megatron(prefix, {});
  msg = open_error();
  INFO(msg);
  CHECK(contains(msg, "bad"));
  CHECK(contains(msg, "empty"));
  write_megatron(prefix, {{}, {}});
  CHECK(contains(open_error(), "empty"));
}

TEST_CASE("data: every corrupt llm.c file gets its own error", "[data][shards]") {
  TempDir dir;
  const std::string path = dir.file("shard.bin");
  write_llmc(path, example_llmc_tokens());
  const auto good = read_bytes(path);
  auto expect = [&](const std::vector<uint8_t>& bytes, const std::string& keyword) {
    write_bytes(path, bytes);
    const std::string msg = error_of([&] { TokenFile::open(path, ShardFormat::llmc); });
    INFO(msg);
    CHECK(contains(msg, "shard.bin"));
    CHECK(contains(msg, keyword));
  };
  auto b = good;
  poke<uint32_t>(b, 0, 12345);
  expect(b, "bad magic 12345");
  b = good;
  poke<int32_t>(b, 4, 2);
  expect(b, "unsupported version 2");
  b = good;
  poke<uint32_t>(b, 0, kLlmcMagicLlama3);  // LLaMA-3 magic wants version 7
  expect(b, "unsupported version 1");
  expect(std::vector<uint8_t>(good.begin(), good.end() - 2), "size mismatch");
  b = good;
  b.push_back(0);
  expect(b, "size mismatch");
  b = good;
  poke<int32_t>(b, 8, -5);
  expect(b, "negative token count");
  expect(std::vector<uint8_t>(good.begin(), good.begin() + 500), "truncated");
  expect(std::vector<uint8_t>(good.begin(), good.begin() + 2), "bad magic");
  expect({}, "bad magic");
  write_llmc(path, {});
  const std::string msg = error_of([&] { TokenFile::open(path, ShardFormat::llmc); });
  CHECK(msg == path + ": shard is empty (0 tokens)");
  CHECK(error_of([&] { TokenFile::open(dir.file("missing.bin"), ShardFormat::llmc); }) ==
        "cannot open " + dir.file("missing.bin") + ": No such file or directory");

  // a valid LLaMA-3 (uint32) shard reads, with documents at BOS 128000
  b = std::vector<uint8_t>(1024 + 4 * 4, 0);
  poke<uint32_t>(b, 0, kLlmcMagicLlama3);
  poke<int32_t>(b, 4, 7);
  poke<int32_t>(b, 8, 4);
  const uint32_t t32[4] = {128000, 100000, 128000, 5};
  std::memcpy(b.data() + 1024, t32, sizeof(t32));
  write_bytes(path, b);
  TokenFile f = TokenFile::open(path, ShardFormat::llmc);
  CHECK(f.itemsize() == 4);
  CHECK(f.token(1) == 100000);
  CHECK(f.num_documents() == 2);
  CHECK(f.document_begin(1) == 2);
}

TEST_CASE("data: writers reject tokens that do not fit uint16", "[data][shards]") {
  TempDir dir;
  CHECK(contains(error_of([&] {
                   write_megatron(dir.file("w"), {{1, 70000}});
                 }),
                 "token id 70000 at token 1"));
  CHECK(contains(error_of([&] { write_llmc(dir.file("w.bin"), {-1}); }), "token id -1 at token 0"));
  CHECK(parse_shard_format("llmc") == ShardFormat::llmc);
  CHECK(parse_shard_format("megatron") == ShardFormat::megatron);
  CHECK(contains(error_of([] { parse_shard_format("parquet"); }),
                 "unknown shard format \"parquet\""));
}

TEST_CASE("data: random corruption never crashes the readers", "[data][shards]") {
  TempDir dir;
  const std::string prefix = dir.file("fuzz");
  write_megatron(prefix, kExampleDocs);
  write_llmc(prefix + ".llmc", example_llmc_tokens());
  const auto idx = read_bytes(prefix + ".idx"), bin = read_bytes(prefix + ".bin");
  const auto llmc = read_bytes(prefix + ".llmc");
  std::mt19937 gen(7);
  auto walk = [](const TokenFile& f) {  // touch everything an opened file claims to have
    int64_t sum = 0;
    for (int64_t d = 0; d < f.num_documents(); ++d) sum += f.document_end(d) - f.document_begin(d);
    REQUIRE(sum == f.num_tokens());
    std::vector<int32_t> all(static_cast<size_t>(f.num_tokens()));
    f.read_tokens(0, f.num_tokens(), all.data());
  };
  int opened = 0;
  for (int trial = 0; trial < 120; ++trial) {
    auto i = idx, l = llmc;
    const int flips = 1 + trial % 3;
    for (int k = 0; k < flips; ++k) {
      i[gen() % i.size()] = uint8_t(gen());
      l[gen() % 40] = uint8_t(gen());  // the header and first tokens
    }
    if (trial % 10 == 0) i.resize(gen() % i.size());
    write_bytes(prefix + ".idx", i);
    write_bytes(prefix + ".llmc", l);
    for (int fmt = 0; fmt < 2; ++fmt) {
      try {
        TokenFile f = fmt == 0 ? TokenFile::open(prefix, ShardFormat::megatron)
                               : TokenFile::open(prefix + ".llmc", ShardFormat::llmc);
        walk(f);
        ++opened;
      } catch (const unipool::Error&) {
      }
    }
  }
  CHECK(opened > 0);  // some mutations (e.g. in token ids) are valid files
  (void)bin;
}
