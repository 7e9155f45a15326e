// `unipool tokenize` as a stream (data/tokenize.h): every input kind (.jsonl.zst, .jsonl.gz,
// standard input, plain text, another JSON key) gives the bytes of the plain JSONL; binary input is
// refused naming the file; long documents are read in segments and encode exactly; the peak memory
// of a 200 MB input stays under a fixed bound (measured on the child process); and
// scripts/prepare_pile.sh interrupted and rerun gives the outputs of one uninterrupted run.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <zlib.h>
#include <zstd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/fsutil.h"
#include "data/shards.h"
#include "data/tokenize.h"
#include "tests/catch.h"
#include "tests/errors.h"
#include "tests/tempdir.h"
#include "tests/train_fixtures.h"

#if __has_include("data/gpt2_tokenizer.h")
#include "data/gpt2_tokenizer.h"
#define UNIPOOL_HAVE_GPT2 1
#endif

using namespace unipool;
using namespace unipool::data;
using unipool::test::error_of;
using unipool::test::read_bytes;
using unipool::test::TempDir;
using namespace std::string_literals;

namespace {

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

// zstd-compressed bytes: `frames` frames, the text cut evenly between them.
std::string zstd_compress(const std::string& text, int frames = 1) {
  std::string out;
  const size_t step = text.size() / static_cast<size_t>(frames) + 1;
  for (size_t at = 0; at < text.size() || out.empty(); at += step) {
    const size_t n = std::min(step, text.size() - std::min(at, text.size()));
    std::string frame(ZSTD_compressBound(n), '\0');
    const size_t r = ZSTD_compress(frame.data(), frame.size(), text.data() + at, n, 3);
    REQUIRE_FALSE(ZSTD_isError(r));
    out.append(frame.data(), r);
  }
  return out;
}

// gzip-compressed bytes: `members` gzip members one after the other (as `cat a.gz b.gz`).
std::string gzip_compress(const std::string& text, int members = 1) {
  std::string out;
  const size_t step = text.size() / static_cast<size_t>(members) + 1;
  for (size_t at = 0; at < text.size() || out.empty(); at += step) {
    const size_t n = std::min(step, text.size() - std::min(at, text.size()));
    z_stream z{};
    REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    std::string member(deflateBound(&z, static_cast<uLong>(n)) + 32, '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data() + at));
    z.avail_in = static_cast<uInt>(n);
    z.next_out = reinterpret_cast<Bytef*>(member.data());
    z.avail_out = static_cast<uInt>(member.size());
    REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
    out.append(member.data(), member.size() - z.avail_out);
    deflateEnd(&z);
  }
  return out;
}

// A JSON string literal of text (quotes, backslashes and control characters escaped).
std::string json_string(const std::string& text) {
  return nlohmann::json(text).dump();
}

// Documents of mixed text, each ending with '\n' (so the same texts can be plain files and the
// parts of a --doc-separator file), none of them a "%" line.
std::vector<std::string> sample_documents() {
  std::vector<std::string> docs;
  const char* lines[] = {
      "The quick brown fox jumps over the lazy dog.",
      "  indented(code); // \"quoted\" \\ back\tslash",
      "\xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 <|endoftext|>",
      "",
      "x = 42 + y**2",
      "\xef\xbb\xbf"
      "BOM inside a line"};
  for (int d = 0; d < 40; ++d) {
    std::string text;
    for (int i = 0; i < 1 + (d * 7) % 23; ++i) {
      text += lines[(d + i * 5) % 6];
      text += (i % 4 == 3) ? "\r\n" : "\n";
    }
    docs.push_back(text);
  }
  return docs;
}

std::string jsonl_of(const std::vector<std::string>& docs, const std::string& key = "text") {
  std::string s;
  for (const std::string& d : docs) s += "{\"id\": 7, \"" + key + "\": " + json_string(d) + "}\n";
  return s;
}

TokenizeOptions bytes_options(const std::vector<std::string>& inputs, const std::string& out) {
  TokenizeOptions o;
  o.inputs = inputs;
  o.out_prefix = out;
  o.tokenizer = "bytes";
  o.quiet = true;
  return o;
}

// The Megatron files of a prefix, .bin then .idx.
std::vector<uint8_t> megatron_bytes(const std::string& prefix) {
  std::vector<uint8_t> bytes = read_bytes(prefix + ".bin");
  const std::vector<uint8_t> idx = read_bytes(prefix + ".idx");
  bytes.insert(bytes.end(), idx.begin(), idx.end());
  return bytes;
}

bool gpt2_files() {
#ifdef UNIPOOL_HAVE_GPT2
  const std::string dir = Gpt2Tokenizer::default_dir();
  if (path_exists(dir + "/encoder.json") && path_exists(dir + "/vocab.bpe")) return true;
#endif
  if (std::getenv("CI") != nullptr) FAIL("GPT-2 tokenizer files missing under CI");
  WARN("skipped: GPT-2 tokenizer not available; run scripts/fetch_tokenizer.sh");
  return false;
}

}  // namespace

TEST_CASE("tokenize stream: zst, gz, stdin, plain text and another JSON key give the JSONL's bytes",
          "[tokenize]") {
  TempDir dir;
  const std::vector<std::string> docs = sample_documents();
  const std::string jsonl = jsonl_of(docs);
  write_file(dir / "docs.jsonl", jsonl);
  write_file(dir / "docs.jsonl.zst", zstd_compress(jsonl, 3));
  write_file(dir / "docs.jsonl.gz", gzip_compress(jsonl, 2));
  write_file(dir / "content.jsonl", jsonl_of(docs, "content"));
  make_dirs(dir / "plain");
  for (size_t i = 0; i < docs.size(); ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "plain/%03zu.txt", i);
    write_file(dir / name, docs[i]);
  }
  std::string fortunes;
  for (const std::string& d : docs) fortunes += d + "%\n";
  write_file(dir / "fortunes", fortunes);
  write_file(dir / "fortunes.zst", zstd_compress(fortunes));

  for (const bool shuffle : {true, false}) {  // the spool and the straight-out paths
    INFO("shuffle " << shuffle);
    const std::string tag = shuffle ? "s" : "n";
    auto run = [&](const std::vector<std::string>& inputs, const std::string& name,
                   const std::function<void(TokenizeOptions&)>& edit = {}) {
      TokenizeOptions o = bytes_options(inputs, dir / (tag + name));
      o.shuffle = shuffle;
      if (edit) edit(o);
      const TokenizeStats s = run_tokenize(o);
      CHECK(s.documents == static_cast<int64_t>(docs.size()));
      CHECK(s.spool_bytes == (shuffle ? 2 * s.tokens : 0));
      CHECK(s.peak_rss_bytes > 0);
      return megatron_bytes(o.out_prefix);
    };
    const std::vector<uint8_t> want = run({dir / "docs.jsonl"}, "jsonl");
    CHECK(run({dir / "docs.jsonl.zst"}, "zst") == want);
    CHECK(run({dir / "docs.jsonl.gz"}, "gz") == want);
    CHECK(run({dir / "content.jsonl"}, "key", [](TokenizeOptions& o) { o.json_key = "content"; }) ==
          want);
    CHECK(run({dir / "plain"}, "plain") == want);
    CHECK(run({dir / "fortunes"}, "sep", [](TokenizeOptions& o) { o.doc_separator = "%"; }) ==
          want);
    CHECK(run({dir / "fortunes.zst"}, "sepzst",
              [](TokenizeOptions& o) { o.doc_separator = "%"; }) == want);

    // standard input, through the binary: "-" and /dev/stdin, plain and compressed
    const std::string flags =
        " --tokenizer bytes --quiet" + std::string(shuffle ? "" : " --no-shuffle") + " --out ";
    const std::string bin = "'" + std::string(UNIPOOL_BINARY) + "'";
    auto out = [&](const std::string& name) { return " '" + dir / (tag + name) + "'"; };
    const std::vector<std::pair<std::string, std::string>> pipes = {
        {"stdin",
         "cat '" + dir / "docs.jsonl" + "' | " + bin + " tokenize -" + flags + out("stdin")},
        {"devstdin", bin + " tokenize /dev/stdin" + flags + out("devstdin") + " < '" +
                         dir / "docs.jsonl" + "'"},
        {"stdinzst",
         "cat '" + dir / "docs.jsonl.zst" + "' | " + bin + " tokenize -" + flags + out("stdinzst")},
        {"stdingz",
         "cat '" + dir / "docs.jsonl.gz" + "' | " + bin + " tokenize -" + flags + out("stdingz")},
        {"stdintext", "cat '" + dir / "fortunes" + "' | " + bin +
                          " tokenize - --stdin-format text --doc-separator %" + flags +
                          out("stdintext")}};
    for (const auto& [name, cmd] : pipes) {
      INFO(name);
      const test::Outcome r = test::run_shell(cmd, dir / ("shell_" + tag + name));
      INFO(r.out << r.err);
      REQUIRE(r.status == 0);
      CHECK(megatron_bytes(dir / (tag + name)) == want);
    }
  }
}

TEST_CASE("tokenize stream: input that is not UTF-8 text is refused naming the file",
          "[tokenize]") {
  TempDir dir;
  auto error = [&](const std::string& file, const std::string& bytes) {
    write_file(dir / file, bytes);
    return error_of([&] { run_tokenize(bytes_options({dir / file}, dir / "out")); });
  };
  std::string e = error("nul.txt", "line one\nline two\0 with a NUL\n"s);
  CHECK_THAT(e, HasSubstring(dir / "nul.txt:2: not UTF-8 text: a NUL byte"));
  CHECK_THAT(e, HasSubstring("--allow-binary"));
  e = error("latin1.txt", "ok\ncaf\xe9 au lait\n");
  CHECK_THAT(e, HasSubstring(dir / "latin1.txt:2: not UTF-8 text: an invalid UTF-8 sequence"));
  CHECK_THAT(error("overlong.txt", "a\xc0\xaf"), HasSubstring("overlong.txt:1"));
  CHECK_THAT(error("surrogate.txt", "a\xed\xa0\x80"), HasSubstring("invalid UTF-8"));
  CHECK_THAT(error("cut.txt", "euro \xe2\x82"), HasSubstring("cut off at the end"));
  CHECK_THAT(error("zstd.jsonl", zstd_compress("{\"text\": \"x\"}\n")),
             HasSubstring(dir / "zstd.jsonl: a zstd-compressed stream, not text (name it .zst"));
  CHECK_THAT(error("gzip.txt", gzip_compress("hello\n")),
             HasSubstring("gzip.txt: a gzip-compressed stream"));
  CHECK_THAT(error("a.out",
                   "\x7f"
                   "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0"s),
             HasSubstring("a.out: an ELF executable"));
  CHECK_THAT(error("plain.jsonl.zst", "{\"text\": \"not compressed\"}\n"),
             HasSubstring("plain.jsonl.zst: not a valid zstd stream"));
  const std::string zst = zstd_compress(jsonl_of(sample_documents()));
  CHECK_THAT(error("cut.jsonl.zst", zst.substr(0, zst.size() / 2)),
             HasSubstring("cut.jsonl.zst: the zstd stream is truncated"));
  const std::string gz = gzip_compress(jsonl_of(sample_documents()));
  CHECK_THAT(error("cut.jsonl.gz", gz.substr(0, gz.size() / 2)),
             HasSubstring("cut.jsonl.gz: the gzip stream is truncated"));

  // a binary file in a directory is named; --allow-binary encodes its bytes
  make_dirs(dir / "tree/sub");
  write_file(dir / "tree/a.txt", "text\n");
  write_file(dir / "tree/sub/blob", "\x01\x02\0\xff"s);
  TokenizeOptions o = bytes_options({dir / "tree"}, dir / "tree_out");
  CHECK_THAT(error_of([&] { run_tokenize(o); }), HasSubstring(dir / "tree/sub/blob:1"));
  o.allow_binary = true;
  const TokenizeStats s = run_tokenize(o);
  CHECK(s.documents == 2);
  CHECK(s.tokens == 5 + 4);
  // a missing input, and standard input named twice
  o.inputs = {dir / "missing.txt"};
  CHECK_THAT(error_of([&] { run_tokenize(o); }), HasSubstring("missing.txt' does not exist"));
  o.inputs = {"-", "/dev/stdin"};
  CHECK_THAT(error_of([&] { run_tokenize(o); }), HasSubstring("named twice"));
}

TEST_CASE("tokenize stream: long documents are read in segments and encode exactly", "[tokenize]") {
  TempDir dir;
  // a 9 MB plain document (several 4 MB segments), then separated documents of which one is long,
  // with the edge cases of split_documents: separators first and twice, a last line without '\n'
  std::string big;
  for (int i = 0; big.size() < (size_t(9) << 20); ++i) {
    big += "Line " + std::to_string(i) + ": \xc3\xa9t\xc3\xa9 and (code) {x = y;}";
    big += i % 5 == 0 ? "\r\n" : "\n";
  }
  write_file(dir / "big.txt", big);
  const std::string separated = "%\n%\nfirst\n%\n" + big + "%\nlast line without newline";
  write_file(dir / "sep.txt", separated);
  TokenizeOptions o = bytes_options({dir / "sep.txt"}, dir / "b");
  o.shuffle = false;
  o.doc_separator = "%";
  const TokenizeStats s = run_tokenize(o);
  const std::vector<std::string> want = split_documents(separated, "%");
  REQUIRE(s.documents == static_cast<int64_t>(want.size()));
  const TokenFile f = TokenFile::open(o.out_prefix, ShardFormat::megatron);
  for (int64_t d = 0; d < f.num_documents(); ++d) {
    const std::string& w = want[static_cast<size_t>(d)];
    REQUIRE(f.document_end(d) - f.document_begin(d) == static_cast<int64_t>(w.size()) + 1);
    std::vector<int32_t> t(w.size());
    f.read_tokens(f.document_begin(d), static_cast<int64_t>(t.size()), t.data());
    CHECK(std::string(t.begin(), t.end()) == w);
  }
  if (!gpt2_files()) return;
#ifdef UNIPOOL_HAVE_GPT2
  // GPT-2: the segments of the 9 MB document encode to the whole document's ids
  TokenizeOptions g = o;
  g.tokenizer = "gpt2";
  g.doc_separator = "";
  g.inputs = {dir / "big.txt"};
  g.out_prefix = dir / "g";
  run_tokenize(g);
  const std::vector<int32_t> whole = Gpt2Tokenizer::load(Gpt2Tokenizer::default_dir()).encode(big);
  const TokenFile gf = TokenFile::open(g.out_prefix, ShardFormat::megatron);
  REQUIRE(gf.num_tokens() == static_cast<int64_t>(whole.size()) + 1);
  std::vector<int32_t> got(whole.size());
  gf.read_tokens(0, static_cast<int64_t>(got.size()), got.data());
  CHECK(got == whole);
#endif
}

TEST_CASE("tokenize stream: the peak memory of a 200 MB JSONL stays under a fixed bound",
          "[tokenize][memory]") {
  TempDir dir;
  const std::string jsonl = dir / "big.jsonl";
  int64_t text_bytes = 0;
  {
    // 200 MB of documents of 200 bytes to 40 KB (the byte tokenizer: 2 bytes of tokens a byte)
    std::ofstream f(jsonl, std::ios::binary);
    std::string text;
    for (int d = 0; f.tellp() < (int64_t(200) << 20); ++d) {
      text.clear();
      const int lines = 4 + (d * 37) % 1000;
      for (int i = 0; i < lines; ++i)
        text +=
            "document " + std::to_string(d) + " line " + std::to_string(i) + " \xc3\xa9t\xc3\xa9\n";
      text_bytes += static_cast<int64_t>(text.size());
      const std::string line = "{\"text\": " + json_string(text) + "}\n";
      f.write(line.data(), static_cast<std::streamsize>(line.size()));
    }
    REQUIRE(f.good());
  }
  // The peak RSS of `unipool ARGS`, run as a child (exit 0 required).
  auto peak_rss = [&](const std::vector<std::string>& args) {
    const pid_t pid = test::spawn_binary(args, dir / "stdout.txt", dir / "stderr.txt");
    int status = 0;
    struct rusage usage {};
    REQUIRE(::wait4(pid, &status, 0, &usage) == pid);
    INFO(read_file(dir / "stdout.txt") << read_file(dir / "stderr.txt"));
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    return static_cast<int64_t>(usage.ru_maxrss) * 1024;
  };
  // The process's own footprint, counted out: the pages of its shared libraries that loading
  // touches (about 10 MB, or about 220 MB in a build that links the CUDA libraries).
  const int64_t baseline = peak_rss({"tokenize", "--help"});
  // The bound over it: the fixed window (16 MB of text, its tokens, I/O buffers); the whole corpus
  // would be 2 x 200 MB of tokens.
  constexpr int64_t kBoundBytes = int64_t(128) << 20;
  for (const bool shuffle : {true, false}) {
    INFO("shuffle " << shuffle);
    std::vector<std::string> args = {"tokenize", "--tokenizer", "bytes",     "--threads",
                                     "2",        "--out",       dir / "out", jsonl};
    if (!shuffle) args.push_back("--no-shuffle");
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t peak = peak_rss(args);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string out = read_file(dir / "stdout.txt");
    WARN("tokenize of " << text_bytes / 1000000 << " MB of text (bytes tokenizer, "
                        << (shuffle ? "shuffled" : "not shuffled") << "): peak RSS "
                        << peak / 1000000 << " MB (" << baseline / 1000000
                        << " MB of it the process before any work), " << seconds << " s");
    CHECK(peak - baseline < kBoundBytes);
    CHECK_THAT(out, HasSubstring("tokenize: peak memory"));
    const TokenFile f = TokenFile::open(dir / "out", ShardFormat::megatron);
    CHECK(f.num_tokens() == text_bytes + f.num_documents());
  }
}

TEST_CASE("tokenize stream: prepare_pile.sh interrupted and rerun gives one run's outputs",
          "[tokenize][pile]") {
  if (!gpt2_files()) return;
  TempDir dir;
  make_dirs(dir / "shards");
  for (int s = 0; s < 3; ++s) {
    std::vector<std::string> docs = sample_documents();
    for (std::string& d : docs) d = "shard " + std::to_string(s) + ": " + d;
    char name[32];
    std::snprintf(name, sizeof(name), "shards/%02d.jsonl.zst", s);
    write_file(dir / name, zstd_compress(jsonl_of(docs)));
  }
  write_file(dir / "shards/val.jsonl.zst", zstd_compress(jsonl_of({"not a shard\n"})));
  const std::string script = std::string(UNIPOOL_SOURCE_DIR) + "/scripts/prepare_pile.sh";
  const std::string env = "UNIPOOL='" + std::string(UNIPOOL_BINARY) + "' ";
  auto prepare = [&](const std::string& out, const std::string& binary_env,
                     const std::string& flags = "--threads 2") {
    return test::run_shell(
        binary_env + "bash '" + script + "' " + flags + " '" + dir / "shards" + "' '" + out + "'",
        dir / "shell");
  };
  // one uninterrupted run (two shards at a time)
  test::Outcome full = prepare(dir / "full", env, "--jobs 2 --threads 1");
  INFO(full.out << full.err);
  REQUIRE(full.status == 0);
  CHECK_THAT(full.out,
             HasSubstring("--set 'data.train=[[1.0,\"" + dir / "full/00_text_document\"]"));
  const char* prefixes[3] = {"00_text_document", "01_text_document", "02_text_document"};
  for (const char* p : prefixes) {
    const TokenFile f = TokenFile::open(dir / "full/" + p, ShardFormat::megatron);
    CHECK(f.num_documents() == 40);
    CHECK(f.token(f.num_tokens() - 1) == kGpt2Eot);
  }
  CHECK_FALSE(path_exists(dir / "full/val_text_document.bin"));

  // interrupted while tokenizing shard 01: a wrapper dies there, leaving what a killed run leaves
  // (a partial .bin of an older writer and a temporary file), then the real binary reruns it
  const std::string wrapper = dir / "dying_unipool.sh";
  write_file(wrapper,
             "#!/bin/sh\n"
             "case \"$*\" in *01.jsonl.zst*)\n"
             "  echo partial > '" +
                 dir / "resumed/01_text_document.bin" +
                 "'\n"
                 "  echo partial > '" +
                 dir / "resumed/01_text_document.bin.tmp.999999" +
                 "'\n"
                 "  exit 137 ;;\n"
                 "esac\n"
                 "exec '" +
                 std::string(UNIPOOL_BINARY) + "' \"$@\"\n");
  REQUIRE(::chmod(wrapper.c_str(), 0755) == 0);
  const test::Outcome died = prepare(dir / "resumed", "UNIPOOL='" + wrapper + "' ");
  CHECK(died.status != 0);
  CHECK(path_exists(dir / "resumed/00_text_document.done"));
  CHECK_FALSE(path_exists(dir / "resumed/01_text_document.done"));
  CHECK_FALSE(path_exists(dir / "resumed/02_text_document.bin"));
  const test::Outcome rerun = prepare(dir / "resumed", env);
  INFO(rerun.out << rerun.err);
  REQUIRE(rerun.status == 0);
  CHECK_THAT(rerun.out, HasSubstring("00: finished already, skipped"));
  CHECK_THAT(rerun.out, HasSubstring("01: tokenizing"));
  CHECK_FALSE(path_exists(dir / "resumed/01_text_document.bin.tmp.999999"));
  for (const char* p : prefixes) {
    INFO(p);
    CHECK(megatron_bytes(dir / "resumed/" + p) == megatron_bytes(dir / "full/" + p));
  }
  // a finished shard whose file changed since (truncated) is redone; a third run skips everything
  write_file(dir / "resumed/02_text_document.bin", "xx");
  const test::Outcome third = prepare(dir / "resumed", env);
  REQUIRE(third.status == 0);
  CHECK_THAT(third.out, HasSubstring("02: tokenizing"));
  CHECK(megatron_bytes(dir / "resumed/02_text_document") ==
        megatron_bytes(dir / "full/02_text_document"));
  const test::Outcome fourth = prepare(dir / "resumed", env);
  REQUIRE(fourth.status == 0);
  CHECK(fourth.out.find("tokenizing") == std::string::npos);
}
