// Tests for the checkpoint file layer: safetensors read/write (engine/safetensors.h) and the
// atomic file/directory helpers (base/fsutil.h). Every test works in its own mkdtemp directory.
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/fsutil.h"
#include "engine/safetensors.h"
#include "tests/catch.h"
#include "tests/tempdir.h"

using unipool::test::TempDir;

using namespace unipool;

namespace {

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; i++) s[i] = char((v >> (8 * i)) & 0xff);
  return s;
}

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// Plain (non-atomic, no fsync) write for fixtures: keeps the many small corrupt files fast.
void put_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(f.good());
}

// A raw safetensors file: length, header text exactly as given (no padding added), data.
void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  put_file(path, le64(header.size()) + header + data);
}

// Runs fn, requires it to throw unipool::Error whose message contains every one of `needles`.
template <class Fn>
void require_error(Fn fn, const std::vector<std::string>& needles) {
  bool threw = false;
  try {
    fn();
  } catch (const Error& e) {
    threw = true;
    std::string msg = e.what();
    INFO("message: " << msg);
    for (const auto& n : needles) {
      INFO("expected to contain: " << n);
      CHECK(msg.find(n) != std::string::npos);
    }
  }
  CHECK(threw);
}

void require_read_error(const std::string& path, const std::string& keyword) {
  require_error([&] { read_safetensors(path); }, {path, keyword});
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// safetensors: writing and reading back

TEST_CASE("safetensors: bytes of a tiny file are exactly the format", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "tiny.safetensors";
  const float a[2] = {1.0f, 2.0f};
  write_safetensors(path, {{"a", {2}, a}});

  // header: 54 bytes of JSON + 2 spaces = 56, so 8 + 56 = 64 is a multiple of 8
  const std::string json = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  REQUIRE(json.size() == 54);
  const unsigned char expect[] = {
      56, 0, 0, 0, 0, 0, 0, 0,  // u64 little-endian header length
  };
  std::string expected(reinterpret_cast<const char*>(expect), sizeof(expect));
  expected += json + "  ";
  const unsigned char data[] = {0x00, 0x00, 0x80, 0x3f,   // 1.0f little-endian
                                0x00, 0x00, 0x00, 0x40};  // 2.0f
  expected += std::string(reinterpret_cast<const char*>(data), sizeof(data));
  REQUIRE(expected.size() == 72);
  CHECK(read_file(path) == expected);
  CHECK(list_directory(dir.path) == std::vector<std::string>{"tiny.safetensors"});  // no temp left
}

TEST_CASE("safetensors: round trip with scalar, 3-D, empty tensor and metadata", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "ckpt.safetensors";

  const std::vector<float> scalar = {3.5f};
  std::vector<float> vec = {-0.0f, 1e-38f, std::numeric_limits<float>::infinity(), -7.25f,
                            std::numeric_limits<float>::quiet_NaN()};
  std::vector<float> cube(2 * 3 * 4);
  for (size_t i = 0; i < cube.size(); i++) cube[i] = 0.5f * float(i) - 3.0f;
  const std::map<std::string, std::string> meta = {
      {"step", "1200"}, {"format", "pt"}, {"note", "é ✓ \"q\""}};

  // deliberately not alphabetical: the order must survive
  write_safetensors(path,
                    {{"zeta.scalar", {}, scalar.data()},
                     {"blocks.0.w", {2, 3, 4}, cube.data()},
                     {"empty", {0, 3}, nullptr},
                     {"alpha.vec", {5}, vec.data()}},
                    meta);

  SafetensorsFile f = read_safetensors(path);
  CHECK(f.order == std::vector<std::string>{"zeta.scalar", "blocks.0.w", "empty", "alpha.vec"});
  CHECK(f.metadata == meta);
  REQUIRE(f.tensors.size() == 4);
  CHECK(f.tensors.at("zeta.scalar").shape.empty());
  CHECK(same_bits(f.tensors.at("zeta.scalar").data, scalar));
  CHECK(f.tensors.at("blocks.0.w").shape == std::vector<int64_t>{2, 3, 4});
  CHECK(same_bits(f.tensors.at("blocks.0.w").data, cube));
  CHECK(f.tensors.at("empty").shape == std::vector<int64_t>{0, 3});
  CHECK(f.tensors.at("empty").data.empty());
  CHECK(f.tensors.at("alpha.vec").shape == std::vector<int64_t>{5});
  CHECK(same_bits(f.tensors.at("alpha.vec").data, vec));  // -0, denormal-ish, inf, NaN bit-exact

  // layout: header length keeps the data buffer 8-aligned, header padded with spaces only
  std::string raw = read_file(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= uint64_t((unsigned char)raw[i]) << (8 * i);
  CHECK((8 + n) % 8 == 0);
  CHECK(raw.size() == 8 + n + 4 * (1 + 24 + 0 + 5));
  CHECK(raw[8] == '{');
  size_t close = raw.rfind('}', 8 + n - 1);
  for (size_t i = close + 1; i < 8 + n; i++) CHECK(raw[i] == ' ');

  // a file with no tensors and no metadata is valid too
  write_safetensors(dir / "empty.safetensors", {});
  SafetensorsFile e = read_safetensors(dir / "empty.safetensors");
  CHECK(e.tensors.empty());
  CHECK(e.metadata.empty());
  CHECK(read_file(dir / "empty.safetensors") == le64(8) + "{}      ");
}

TEST_CASE("safetensors: rewriting replaces the file", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "w.safetensors";
  const float one[1] = {1.0f}, two[2] = {2.0f, 3.0f};
  write_safetensors(path, {{"x", {1}, one}});
  write_safetensors(path, {{"y", {2}, two}}, {{"k", "v"}});
  SafetensorsFile f = read_safetensors(path);
  CHECK(f.order == std::vector<std::string>{"y"});
  CHECK(f.tensors.at("y").data == std::vector<float>{2.0f, 3.0f});
  CHECK(f.metadata.at("k") == "v");
  CHECK(list_directory(dir.path) == std::vector<std::string>{"w.safetensors"});
}

TEST_CASE("safetensors: writer rejects bad input and writes nothing", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "bad.safetensors";
  const float v[2] = {1, 2};
  require_error(
      [&] {
        write_safetensors(path, {{"a", {2}, v}, {"a", {2}, v}});
      },
      {path, "duplicate"});
  require_error([&] { write_safetensors(path, {{"a", {-2}, v}}); }, {path, "invalid shape"});
  require_error([&] { write_safetensors(path, {{"", {2}, v}}); }, {path, "empty name"});
  require_error([&] { write_safetensors(path, {{"__metadata__", {2}, v}}); }, {path, "reserved"});
  require_error([&] { write_safetensors(path, {{"a", {2}, nullptr}}); }, {path, "null data"});
  require_error(
      [&] {
        write_safetensors(dir / "no/such/dir/x.safetensors", {{"a", {2}, v}});
      },
      {"no/such/dir/x.safetensors", "No such file"});
  CHECK(list_directory(dir.path).empty());
}

// ---------------------------------------------------------------------------------------------
// safetensors: the reader on corrupt files

TEST_CASE("safetensors: corrupt files give Error naming file and problem", "[safetensors]") {
  TempDir dir;
  const std::string p = dir / "corrupt.safetensors";
  const std::string d8 = f32_bytes({1.0f, 2.0f});

  SECTION("missing file") {
    require_read_error(dir / "nope.safetensors", "cannot open");
  }
  SECTION("shorter than 8 bytes") {
    put_file(p, "abcde");
    require_read_error(p, "shorter than the 8-byte header length");
  }
  SECTION("empty file") {
    put_file(p, "");
    require_read_error(p, "shorter than");
  }
  SECTION("header length larger than the file") {
    put_file(p, le64(1000) + "{}");
    require_read_error(p, "larger than the file");
  }
  SECTION("header length astronomically large") {
    put_file(p, le64(~uint64_t(0)) + "{}");
    require_read_error(p, "larger than the file");
  }
  SECTION("header not JSON") {
    write_raw(p, R"({"a": {"dtype": "F32", )", d8);
    require_read_error(p, "not valid JSON");
  }
  SECTION("header not an object") {
    write_raw(p, "[1, 2]", "");
    require_read_error(p, "not a JSON object");
  }
  SECTION("entry not an object") {
    write_raw(p, R"({"a": 5})", "");
    require_read_error(p, "entry is not a JSON object");
  }
  SECTION("missing dtype") {
    write_raw(p, R"({"a": {"shape": [2], "data_offsets": [0, 8]}})", d8);
    require_read_error(p, "tensor 'a' is missing dtype");
  }
  SECTION("missing shape") {
    write_raw(p, R"({"a": {"dtype": "F32", "data_offsets": [0, 8]}})", d8);
    require_read_error(p, "tensor 'a' is missing shape");
  }
  SECTION("missing data_offsets") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [2]}})", d8);
    require_read_error(p, "tensor 'a' is missing data_offsets");
  }
  SECTION("dtype other than F32") {
    write_raw(p, R"({"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}})", d8);
    require_read_error(p, "tensor 'x' has dtype BF16; only F32 is supported");
  }
  SECTION("dtype not a string") {
    write_raw(p, R"({"x": {"dtype": 32, "shape": [2], "data_offsets": [0, 8]}})", d8);
    require_read_error(p, "dtype is not a string");
  }
  SECTION("negative dim") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", d8);
    require_read_error(p, "negative dim -2");
  }
  SECTION("non-integer dim") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}})", d8);
    require_read_error(p, "non-integer");
  }
  SECTION("shape not an array") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})", d8);
    require_read_error(p, "shape is not an array");
  }
  SECTION("shape whose size overflows") {
    write_raw(
        p, R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})",
        d8);
    require_read_error(p, "too large");
  }
  SECTION("offsets disagree with the shape") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", d8);
    require_read_error(p, "needs 12 bytes");
  }
  SECTION("offsets with begin > end") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", d8);
    require_read_error(p, "begin > end");
  }
  SECTION("offsets malformed") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, -8]}})", d8);
    require_read_error(p, "data_offsets must be [begin, end]");
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", d8);
    require_read_error(p, "data_offsets must be [begin, end]");
  }
  SECTION("offsets out of the data buffer") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", d8);
    require_read_error(p, "out of bounds of the data buffer");
  }
  SECTION("overlapping tensors") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
              d8);
    require_read_error(p, "overlaps");
  }
  SECTION("gap between tensors") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                     "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
              f32_bytes({1, 2, 3}));
    require_read_error(p, "gap of 4 bytes before tensor 'b'");
  }
  SECTION("gap at the start") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", d8);
    require_read_error(p, "gap");
  }
  SECTION("duplicate names") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                     "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
              d8);
    require_read_error(p, "duplicate key 'a'");
  }
  SECTION("trailing bytes") {
    write_raw(p, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", d8 + "xyz");
    require_read_error(p, "3 trailing bytes");
  }
  SECTION("data without tensors") {
    write_raw(p, "{}", d8);
    require_read_error(p, "trailing bytes");
  }
  SECTION("metadata not strings") {
    write_raw(p, R"({"__metadata__": {"step": 12}})", "");
    require_read_error(p, "metadata 'step' is not a string");
    write_raw(p, R"({"__metadata__": ["x"]})", "");
    require_read_error(p, "__metadata__ is not a JSON object");
  }
}

TEST_CASE("safetensors: truncated or bit-flipped files never crash", "[safetensors]") {
  TempDir dir;
  const std::string good = dir / "good.safetensors", bad = dir / "bad.safetensors";
  const float s[1] = {4.0f}, v[3] = {1, 2, 3};
  write_safetensors(good, {{"s", {}, s}, {"v", {3}, v}}, {{"k", "v"}});
  const std::string bytes = read_file(good);

  // every truncation is an Error (the file's length is part of the format)
  for (size_t len = 0; len < bytes.size(); len++) {
    put_file(bad, bytes.substr(0, len));
    CHECK_THROWS_AS(read_safetensors(bad), Error);
  }
  // flipped bytes: either a valid file or an Error, never anything else
  int ok = 0, err = 0;
  for (size_t i = 0; i < bytes.size(); i++) {
    for (unsigned char x : {0x01, 0x20, 0x80, 0xff}) {
      std::string b = bytes;
      b[i] = char((unsigned char)b[i] ^ x);
      put_file(bad, b);
      try {
        read_safetensors(bad);
        ok++;
      } catch (const Error&) {
        err++;
      }
    }
  }
  CHECK(err > 0);
  CHECK(ok > 0);  // flips inside the data buffer (and some in names) still parse
}

// ---------------------------------------------------------------------------------------------
// fsutil

TEST_CASE("fsutil: write_file_atomic creates, replaces, leaves no temp", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "f.bin";
  write_file_atomic(path, "first");
  CHECK(read_file(path) == "first");
  write_file_atomic(path, std::string("sec\0nd", 6));
  CHECK(read_file(path) == std::string("sec\0nd", 6));
  write_file_atomic(path, "");
  CHECK(read_file(path).empty());
  CHECK(list_directory(dir.path) == std::vector<std::string>{"f.bin"});
}

TEST_CASE("fsutil: AppendFile creates, appends whole lines, and names the path on failure",
          "[safetensors]") {
  TempDir tmp;
  const std::string path = tmp / "log.jsonl";
  {
    AppendFile f(path);
    f.append("one\n");
    f.append(std::string(100000, 'x') + "\n");  // larger than any stdio buffer
  }
  {
    AppendFile f(path);  // reopening appends, never truncates
    f.append("three\n");
  }
  CHECK(read_file(path) == "one\n" + std::string(100000, 'x') + "\nthree\n");
  make_dirs(tmp / "dir");
  REQUIRE_THROWS_WITH(AppendFile(tmp / "dir"), HasSubstring(tmp / "dir"));
}

TEST_CASE("fsutil: failed writes throw and leave the old state", "[safetensors]") {
  TempDir dir;
  const std::string path = dir / "f.bin";
  write_file_atomic(path, "original");

  // the directory does not exist: the temp cannot be created
  require_error([&] { write_file_atomic(dir / "missing/f.bin", "x"); },
                {"missing/f.bin", "No such file"});

  // the rename fails (a non-empty directory is in the way): the temp is removed
  make_dirs(dir / "adir/inner");
  require_error([&] { write_file_atomic(dir / "adir", "x"); }, {"rename", "adir"});
  CHECK(std::filesystem::is_directory(dir / "adir/inner"));

  // a streamed write abandoned before commit (an exception mid-checkpoint): old file untouched
  {
    AtomicFile f(path);
    f.write("partial new contents", 20);
    CHECK(path_exists(f.temp_path()));
  }
  CHECK(read_file(path) == "original");
  CHECK(list_directory(dir.path) == std::vector<std::string>{"adir", "f.bin"});

  require_error([&] { read_file(dir / "none.bin"); },
                {"cannot open " + (dir / "none.bin"), "No such file"});
}

TEST_CASE("fsutil: publish_dir, make_dirs, remove_tree, fsync_path", "[safetensors]") {
  TempDir dir;
  const std::string tmp = dir / "ckpt_000100.tmp", final_dir = dir / "ckpt_000100";
  make_dirs(tmp);
  write_file_atomic(tmp + "/model.safetensors", "m");
  fsync_path(tmp + "/model.safetensors");
  fsync_path(tmp);

  publish_dir(tmp, final_dir);
  CHECK_FALSE(path_exists(tmp));
  CHECK(read_file(final_dir + "/model.safetensors") == "m");

  // refuses an existing final_dir, non-empty or empty, and leaves both alone
  make_dirs(tmp);
  write_file_atomic(tmp + "/model.safetensors", "new");
  require_error([&] { publish_dir(tmp, final_dir); }, {final_dir, "already exists"});
  CHECK(read_file(final_dir + "/model.safetensors") == "m");
  CHECK(read_file(tmp + "/model.safetensors") == "new");
  make_dirs(dir / "empty_final");
  require_error([&] { publish_dir(tmp, dir / "empty_final"); }, {"empty_final", "already exists"});
  CHECK(path_exists(tmp));
  require_error([&] { publish_dir(dir / "no_such_tmp", dir / "x"); }, {"no_such_tmp"});

  // make_dirs is mkdir -p and idempotent; fails when a file is in the way
  make_dirs(dir / "a/b/c");
  make_dirs(dir / "a/b/c");
  CHECK(std::filesystem::is_directory(dir / "a/b/c"));
  require_error([&] { make_dirs(final_dir + "/model.safetensors/sub"); },
                {"model.safetensors/sub"});

  // remove_tree is rm -rf; a missing path is fine
  write_file_atomic(dir / "a/b/c/f", "x");
  remove_tree(dir / "a");
  CHECK_FALSE(path_exists(dir / "a"));
  remove_tree(dir / "a");
  remove_tree(tmp);
  CHECK_FALSE(path_exists(tmp));

  CHECK(parent_dir("a/b/c.bin") == "a/b");
  CHECK(parent_dir("c.bin") == ".");
  CHECK(parent_dir("/c.bin") == "/");
  require_error([&] { fsync_path(dir / "nope"); }, {"nope"});
  CHECK(list_directory(dir.path) == std::vector<std::string>{"ckpt_000100", "empty_final"});
}
