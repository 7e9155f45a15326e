// `unipool tokenize` and `unipool inspect` (data/tokenize.h, data/inspect.h): the byte-exact worked
// example of docs/data.md §Token files produced from text, thread-count independence, JSONL input,
// BOM removal, literal <|endoftext|>, the train/valid/test parts of both formats against the
// loader's split, and inspect's summary and one error per corrupt file.
// GPT-2 cases need the vocabulary files (scripts/fetch_tokenizer.sh): without them they are skipped
// with a warning, or fail when the environment variable CI is set.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "data/inspect.h"
#include "data/loader.h"
#include "data/shards.h"
#include "data/tokenize.h"
#include "base/error.h"
#include "base/sha256.h"
#include "tests/catch.h"
#include "tests/data_fixtures.h"

#if __has_include("data/gpt2_tokenizer.h")
#include "data/gpt2_tokenizer.h"
#include "tests/tempdir.h"

using unipool::test::error_of;  // tests/errors.h
using unipool::test::hex;
using unipool::test::read_bytes;
using unipool::test::TempDir;
#define UNIPOOL_HAVE_GPT2 1
#endif

using namespace unipool::data;

namespace {

// ---- fixtures ---------------------------------------------------------------------------------

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  REQUIRE(f.good());
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_text(path, std::string(bytes.begin(), bytes.end()));
}

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

// Every token of a token file.
std::vector<int32_t> all_tokens(const TokenFile& f) {
  std::vector<int32_t> t(static_cast<size_t>(f.num_tokens()));
  f.read_tokens(0, f.num_tokens(), t.data());
  return t;
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

// Whether the GPT-2 tokenizer and its files are there (a cheap look; a damaged file fails the
// test that loads it). Missing: a warning (the test returns), or a failure when $CI is set (CI
// installs the files).
bool gpt2_available() {
  std::string why = "this build has no data/gpt2_tokenizer.h";
#ifdef UNIPOOL_HAVE_GPT2
  const std::string dir = Gpt2Tokenizer::default_dir();
  if (file_exists(dir + "/encoder.json") && file_exists(dir + "/vocab.bpe")) return true;
  why = "no encoder.json and vocab.bpe in " + dir;
#endif
  if (std::getenv("CI") != nullptr) FAIL("GPT-2 tokenizer files missing under CI: " << why);
  WARN("skipped: GPT-2 tokenizer not available (" << why << "); run scripts/fetch_tokenizer.sh");
  return false;
}

// The three documents of docs/data.md §Token files (Megatron), one file each, and their GPT-2 ids.
const char* const kDocs[3] = {"Hello world!", "The quick brown fox.", "int main() { return 0; }"};
const std::vector<std::vector<int32_t>> kIds = {
    {15496, 995, 0}, {464, 2068, 7586, 21831, 13}, {600, 1388, 3419, 1391, 1441, 657, 26, 1782}};

std::vector<std::string> write_docs(const TempDir& dir) {
  std::vector<std::string> files;
  for (int i = 0; i < 3; ++i) {
    files.push_back(dir.file("doc" + std::to_string(i) + ".txt"));
    write_text(files.back(), kDocs[i]);
  }
  return files;
}

TokenizeOptions options(const std::vector<std::string>& inputs, const std::string& out) {
  TokenizeOptions o;
  o.inputs = inputs;
  o.out_prefix = out;
  o.quiet = true;
  return o;
}

// Expected Megatron bytes for documents with EOD appended (docs/data.md §Token files (Megatron)
// layout). An empty id list is an empty document: no sequence, document_indices repeats.
void expected_megatron(const std::vector<std::vector<int32_t>>& docs, int32_t eod,
                       std::vector<uint8_t>& idx, std::vector<uint8_t>& bin) {
  idx.clear();
  bin.clear();
  std::vector<std::vector<int32_t>> seqs;
  for (const auto& d : docs)
    if (!d.empty()) seqs.push_back(d);
  const char magic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
  idx.insert(idx.end(), magic, magic + 9);
  put<uint64_t>(idx, 1);
  put<uint8_t>(idx, 8);
  put<uint64_t>(idx, seqs.size());
  put<uint64_t>(idx, docs.size() + 1);
  for (const auto& d : seqs) put<int32_t>(idx, static_cast<int32_t>(d.size() + 1));
  int64_t ptr = 0;
  for (const auto& d : seqs) {
    put<int64_t>(idx, ptr);
    ptr += 2 * static_cast<int64_t>(d.size() + 1);
  }
  int64_t first = 0;
  put<int64_t>(idx, 0);
  for (const auto& d : docs) put<int64_t>(idx, first += d.empty() ? 0 : 1);
  for (const auto& d : seqs) {
    for (int32_t t : d) put<uint16_t>(bin, static_cast<uint16_t>(t));
    put<uint16_t>(bin, static_cast<uint16_t>(eod));
  }
}

// A long text with many lines of mixed content, so that it is cut into several pieces.
std::string long_text(size_t bytes, int seed) {
  const char* lines[] = {
      "The quick brown fox jumps over the lazy dog.",
      "    indented(code); // with a comment  ",
      "",
      "x = 42 + y**2;\t# tab",
      "Don't stop: it's 3.14159 or so... \xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac",
      "   ",
      "'quoted' \"strings\" <|endoftext|> and more"};
  std::string s;
  for (int i = 0; s.size() < bytes; ++i) {
    s += lines[(i * 3 + i / 7 + seed) % 7];
    s += (i % 11 == 0) ? "\r\n" : "\n";
  }
  return s;
}

}  // namespace

// ---- tokenize: GPT-2 --------------------------------------------------------------------------

TEST_CASE("tokenize: the docs/data.md §Token files worked example, byte for byte, both formats", "[tokenize]") {
  if (!gpt2_available()) return;
  TempDir dir;
  const std::vector<std::string> files = write_docs(dir);
  for (int threads : {1, 2}) {
    const std::string out = dir.file("t" + std::to_string(threads) + "/example");
    TokenizeOptions o = options(files, out);
    o.shuffle = false;
    o.format = "both";
    o.split = "1";
    o.threads = threads;
    const TokenizeStats stats = run_tokenize(o);
    CHECK(stats.documents == 3);
    CHECK(stats.tokens == 16);
    CHECK(stats.part_documents[0] == 3);

    const std::vector<uint8_t> idx = read_bytes(out + ".idx"), bin = read_bytes(out + ".bin");
    REQUIRE(idx.size() == 102);
    CHECK(hex(idx, 46) ==
          "4d4d494449445800000100000000000000080300000000000000040000000000000004000000060000000900"
          "0000");
    REQUIRE(bin.size() == 38);
    CHECK(hex(bin, 8) == "883ce303000050c4");
    std::vector<uint8_t> want_idx, want_bin;
    expected_megatron(kIds, 50256, want_idx, want_bin);
    CHECK(idx == want_idx);
    CHECK(bin == want_bin);

    const std::vector<uint8_t> llmc = read_bytes(out + "_train.bin");
    REQUIRE(llmc.size() == 1062);
    CHECK(hex(llmc, 12) == "88d834010100000013000000");
    CHECK(std::vector<uint8_t>(llmc.begin() + 12, llmc.begin() + 1024) ==
          std::vector<uint8_t>(1012, 0));
    std::vector<uint8_t> payload;
    for (const auto& d : kIds) {
      put<uint16_t>(payload, 50256);
      for (int32_t t : d) put<uint16_t>(payload, static_cast<uint16_t>(t));
    }
    CHECK(std::vector<uint8_t>(llmc.begin() + 1024, llmc.end()) == payload);
    CHECK_FALSE(file_exists(out + "_val.bin"));
    CHECK_FALSE(file_exists(out + "_test.bin"));
#ifdef UNIPOOL_HAVE_GPT2
    CHECK(unipool::sha256_hex(idx.data(), idx.size()).substr(0, 8) == "4b580d7e");
    CHECK(unipool::sha256_hex(bin.data(), bin.size()).substr(0, 8) == "b9052f66");
    CHECK(unipool::sha256_hex(llmc.data(), llmc.size()).substr(0, 8) == "0d1ad7a6");
#endif
  }
}

TEST_CASE("tokenize: JSONL input, BOMs kept as text, empty documents kept as Megatron does",
          "[tokenize]") {
  if (!gpt2_available()) return;
  const Gpt2Tokenizer tok = Gpt2Tokenizer::load(Gpt2Tokenizer::default_dir());
  const std::vector<int32_t> bom = tok.encode("\xef\xbb\xbf");
  REQUIRE(!bom.empty());
  auto with_bom = [&](const std::vector<int32_t>& ids) {
    std::vector<int32_t> v = bom;
    v.insert(v.end(), ids.begin(), ids.end());
    return v;
  };
  TempDir dir;
  // four documents: three JSONL lines (CRLF line ends, a blank line that is not a document, an
  // empty text that is, an escaped BOM) and a plain file that starts with a BOM
  const std::string jsonl = dir.file("a.jsonl"), txt = dir.file("b.txt");
  write_text(jsonl,
             "{\"text\": \"Hello world!\", \"meta\": {\"pile_set_name\": \"x\"}}\r\n"
             "\n"
             "{\"text\": \"\"}\n"
             "{\"text\": \"\\ufeffThe quick brown fox.\"}");
  write_text(txt, "\xef\xbb\xbfint main() { return 0; }");
  TempDir out;
  TokenizeOptions o = options({dir.path}, out.file("x"));  // a directory: sorted a, b
  o.shuffle = false;
  o.format = "both";
  o.split = "1";
  const TokenizeStats stats = run_tokenize(o);
  CHECK(stats.documents == 4);
  CHECK(stats.text_bytes == 12 + 0 + 23 + 27);
  // tiktoken keeps U+FEFF: its tokens come first, then the text's usual ids
  const std::vector<std::vector<int32_t>> want = {kIds[0], {}, with_bom(kIds[1]), with_bom(kIds[2])};
  std::vector<uint8_t> want_idx, want_bin;
  expected_megatron(want, 50256, want_idx, want_bin);
  CHECK(read_bytes(out.file("x.idx")) == want_idx);
  CHECK(read_bytes(out.file("x.bin")) == want_bin);
  const TokenFile m = TokenFile::open(out.file("x"), ShardFormat::megatron);
  CHECK(m.num_documents() == 4);  // the empty one included
  // llm.c has no index: the empty document leaves nothing, the others start with EOT
  const TokenFile l = TokenFile::open(out.file("x_train.bin"), ShardFormat::llmc);
  CHECK(l.num_documents() == 3);
  CHECK(l.num_tokens() == int64_t(3 + kIds[0].size() + 2 * bom.size() + kIds[1].size() +
                                  kIds[2].size()));

  // only empty documents: an empty dataset and a warning, not an error
  write_text(jsonl, "{\"text\": \"\"}\n");
  write_text(txt, "");
  o.format = "megatron";
  const TokenizeStats empty = run_tokenize(o);
  CHECK(empty.documents == 2);
  CHECK(empty.tokens == 0);
  std::vector<uint8_t> empty_idx, empty_bin;
  expected_megatron({{}, {}}, 50256, empty_idx, empty_bin);
  CHECK(read_bytes(out.file("x.idx")) == empty_idx);
  CHECK(read_bytes(out.file("x.bin")).empty());

  // a malformed line names the file and the line
  write_text(jsonl, "{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n");
  CHECK_THAT(error_of([&] { run_tokenize(o); }), HasSubstring(jsonl + ":2"));
}

TEST_CASE("tokenize: a literal <|endoftext|> is ordinary text", "[tokenize]") {
  if (!gpt2_available()) return;
  TempDir dir;
  write_text(dir.file("a.txt"), "before<|endoftext|>after <|endoftext|>");
  TokenizeOptions o = options({dir.file("a.txt")}, dir.file("x"));
  o.format = "both";
  o.split = "1";
  run_tokenize(o);
  const TokenFile m = TokenFile::open(dir.file("x"), ShardFormat::megatron);
  const std::vector<int32_t> t = all_tokens(m);
  REQUIRE(t.size() > 3);
  CHECK(t.back() == 50256);
  CHECK(std::count(t.begin(), t.end(), 50256) == 1);
  CHECK(m.num_documents() == 1);
  const TokenFile l = TokenFile::open(dir.file("x_train.bin"), ShardFormat::llmc);
  CHECK(l.num_documents() == 1);
  CHECK(l.token(0) == 50256);
}

TEST_CASE("tokenize: long documents cut into pieces encode exactly, whatever the thread count",
          "[tokenize]") {
  if (!gpt2_available()) return;
#ifdef UNIPOOL_HAVE_GPT2
  TempDir dir;
  const std::string big = long_text(700 << 10, 1);  // several 256 KB pieces
  write_text(dir.file("big.txt"), big);
  write_text(dir.file("small.txt"), long_text(3000, 2));
  std::vector<uint8_t> first_bin;
  for (int threads : {1, 2}) {
    TokenizeOptions o = options({dir.file("big.txt"), dir.file("small.txt")},
                                dir.file("t" + std::to_string(threads)));
    o.threads = threads;
    o.shuffle = false;
    run_tokenize(o);
    const std::vector<uint8_t> bin = read_bytes(o.out_prefix + ".bin");
    if (threads == 1) {
      first_bin = bin;
      // piece by piece equals the whole document at once
      const Gpt2Tokenizer tok = Gpt2Tokenizer::load(Gpt2Tokenizer::default_dir());
      const std::vector<int32_t> whole = tok.encode(big);
      const TokenFile f = TokenFile::open(o.out_prefix, ShardFormat::megatron);
      REQUIRE(f.document_end(0) == static_cast<int64_t>(whole.size()) + 1);
      std::vector<int32_t> got(whole.size());
      f.read_tokens(0, static_cast<int64_t>(got.size()), got.data());
      CHECK(got == whole);
    } else {
      CHECK(bin == first_bin);
    }
  }
#endif
}

TEST_CASE("tokenize: train/valid/test parts are disjoint and equal to the loader's split",
          "[tokenize]") {
  if (!gpt2_available()) return;
  TempDir dir;
  std::string lines;
  for (int i = 0; i < 200; ++i) {
    lines += "{\"text\": \"Document " + std::to_string(i) + " says" +
             std::string(static_cast<size_t>(i % 13), '!') + " hello.\"}\n";
  }
  write_text(dir.file("docs.jsonl"), lines);
  TokenizeOptions o = options({dir.file("docs.jsonl")}, dir.file("out/p"));
  o.format = "both";
  o.split = "80,15,5";
  const TokenizeStats stats = run_tokenize(o);
  REQUIRE(stats.documents == 200);

  const TokenFile m = TokenFile::open(o.out_prefix, ShardFormat::megatron);
  const auto bounds = split_indices(parse_split(o.split), m.num_documents());
  CHECK(stats.part_documents[0] == bounds[1] - bounds[0]);
  CHECK(stats.part_documents[1] == bounds[2] - bounds[1]);
  CHECK(stats.part_documents[2] == bounds[3] - bounds[2]);
  const char* names[3] = {"_train.bin", "_val.bin", "_test.bin"};
  std::set<std::vector<int32_t>> seen;
  std::vector<int32_t> order_check;
  for (int p = 0; p < 3; ++p) {
    REQUIRE(bounds[p + 1] > bounds[p]);
    // the Megatron part, re-delimited the llm.c way: EOT before each document instead of after
    std::vector<int32_t> want;
    for (int64_t d = bounds[p]; d < bounds[p + 1]; ++d) {
      std::vector<int32_t> doc(static_cast<size_t>(m.document_end(d) - m.document_begin(d)));
      m.read_tokens(m.document_begin(d), static_cast<int64_t>(doc.size()), doc.data());
      REQUIRE(doc.back() == 50256);
      doc.pop_back();
      CHECK(seen.insert(doc).second);  // disjoint: every document once
      want.push_back(50256);
      want.insert(want.end(), doc.begin(), doc.end());
    }
    const TokenFile l = TokenFile::open(o.out_prefix + names[p], ShardFormat::llmc);
    CHECK(all_tokens(l) == want);
    CHECK(l.num_documents() == bounds[p + 1] - bounds[p]);

    // the Loader takes the same documents: (tokens of the part - 1) / T samples
    LoaderSpec spec;
    spec.blend = {{1.0, o.out_prefix}};
    spec.split = o.split;
    spec.seq_len = 8;
    const Loader loader(spec, static_cast<Split>(p));
    CHECK(loader.num_samples() == (static_cast<int64_t>(want.size()) - 1) / 8);
  }
  CHECK(seen.size() == 200);

  // shuffled: not the input order. A part that becomes empty loses its stale file.
  const std::vector<uint8_t> bin1 = read_bytes(o.out_prefix + ".bin");
  o.shuffle = false;
  o.split = "1";
  run_tokenize(o);
  CHECK(read_bytes(o.out_prefix + ".bin") != bin1);
  CHECK(file_exists(o.out_prefix + "_train.bin"));
  CHECK_FALSE(file_exists(o.out_prefix + "_val.bin"));
  CHECK_FALSE(file_exists(o.out_prefix + "_test.bin"));
}

// ---- tokenize: bytes (no files needed) --------------------------------------------------------

TEST_CASE("tokenize: bytes tokenizer output and thread independence", "[tokenize]") {
  TempDir dir;
  const std::vector<std::string> files = write_docs(dir);
  TokenizeOptions o = options(files, dir.file("b"));
  o.tokenizer = "bytes";
  o.shuffle = false;
  const TokenizeStats stats = run_tokenize(o);
  CHECK(stats.documents == 3);
  CHECK(stats.tokens == 12 + 20 + 24);
  std::vector<std::vector<int32_t>> docs;
  for (const char* d : kDocs) {
    std::vector<int32_t> ids = encode_bytes(d);
    ids.pop_back();
    docs.push_back(ids);
  }
  std::vector<uint8_t> want_idx, want_bin;
  expected_megatron(docs, kBytesEod, want_idx, want_bin);
  CHECK(read_bytes(dir.file("b.idx")) == want_idx);
  CHECK(read_bytes(dir.file("b.bin")) == want_bin);

  // many documents (and one long one cut into pieces), shuffled: 1 thread == 2 threads
  std::string fortunes;
  for (int i = 0; i < 500; ++i) fortunes += "fortune " + std::to_string(i) + "\n%\n";
  write_text(dir.file("fortunes"), fortunes);
  write_text(dir.file("long.txt"), "\xef\xbb\xbf" + long_text(600 << 10, 3));
  std::vector<uint8_t> bins[2], idxs[2];
  for (int threads : {1, 2}) {
    TokenizeOptions p = options({dir.file("fortunes"), dir.file("long.txt")},
                                dir.file("m" + std::to_string(threads)));
    p.tokenizer = "bytes";
    p.doc_separator = "%";
    p.threads = threads;
    const TokenizeStats s = run_tokenize(p);
    CHECK(s.documents == 501);
    CHECK(s.text_bytes == s.tokens);
    bins[threads - 1] = read_bytes(p.out_prefix + ".bin");
    idxs[threads - 1] = read_bytes(p.out_prefix + ".idx");
  }
  CHECK(bins[0] == bins[1]);
  CHECK(idxs[0] == idxs[1]);
  {  // another seed, another order
    TokenizeOptions p = options({dir.file("fortunes"), dir.file("long.txt")}, dir.file("seed"));
    p.tokenizer = "bytes";
    p.doc_separator = "%";
    p.shuffle_seed = 99;
    run_tokenize(p);
    CHECK(read_bytes(p.out_prefix + ".bin") != bins[0]);
    CHECK(read_bytes(p.out_prefix + ".bin").size() == bins[0].size());
  }
  const TokenFile f = TokenFile::open(dir.file("m1"), ShardFormat::megatron);
  CHECK(f.num_documents() == 501);
  CHECK(f.num_tokens() == static_cast<int64_t>(bins[0].size() / 2));

  // the llm.c format needs GPT-2's EOT
  o.format = "both";
  CHECK_THAT(error_of([&] { run_tokenize(o); }), HasSubstring("needs --tokenizer gpt2"));
  o.format = "llmc";
  CHECK_THAT(error_of([&] { run_tokenize(o); }), HasSubstring("needs --tokenizer gpt2"));
  o.format = "megatron";
  o.split = "1,x";
  CHECK_THAT(error_of([&] { run_tokenize(o); }), HasSubstring("1,x"));
}

TEST_CASE("tokenize: safe split points are where GPT-2 always splits", "[tokenize]") {
  const std::string text = long_text(10000, 4);
  const std::vector<size_t> points = safe_split_points(text, 1000);
  REQUIRE(points.size() >= 5);
  size_t prev = 0;
  for (size_t p : points) {
    CHECK(p >= prev + 1000);
    CHECK(text[p - 1] == '\n');
    CHECK(text[p - 2] > ' ');
    CHECK(text[p] > ' ');
    prev = p;
  }
  CHECK(safe_split_points("no newline at all", 2).empty());
}

// ---- inspect ------------------------------------------------------------------------------------

TEST_CASE("inspect: summaries of good files", "[tokenize]") {
  TempDir dir;
  // a byte-level Megatron file
  const std::vector<std::string> files = write_docs(dir);
  TokenizeOptions o = options(files, dir.file("b"));
  o.tokenizer = "bytes";
  o.shuffle = false;
  run_tokenize(o);
  InspectOptions io;
  io.path = dir.file("b");
  io.vocab_size = 257;
  const std::string s = inspect(io);
  CHECK_THAT(s, HasSubstring("megatron"));
  CHECK_THAT(s, HasSubstring("documents   3\n"));
  CHECK_THAT(s, HasSubstring("tokens      59\n"));
  CHECK_THAT(s, HasSubstring("min 13 | mean 19.7 | max 25 tokens"));
  CHECK_THAT(s, HasSubstring("EOD 256   3 tokens; 3 of 3 documents end with one"));
  CHECK_THAT(s, HasSubstring("\"Hello world!<|eod|>The quick"));
  io.path = dir.file("b.bin");  // the .bin of a prefix names the prefix
  CHECK(inspect(io) == s);
  io.path = dir.file("b.idx");
  CHECK(inspect(io) == s);
  io.vocab_size = 0;  // not given: recognised as byte-level
  const std::string guessed = inspect(io);
  CHECK_THAT(guessed, HasSubstring("vocabulary  257 (byte-level"));
  CHECK_THAT(guessed, HasSubstring("\"Hello world!<|eod|>The quick"));

  // an llm.c shard of the worked example
  std::vector<int32_t> tokens;
  for (const auto& d : kIds) {
    tokens.push_back(50256);
    tokens.insert(tokens.end(), d.begin(), d.end());
  }
  write_llmc(dir.file("ex.bin"), tokens);
  InspectOptions il;
  il.path = dir.file("ex.bin");
  il.decode_tokens = 4;
  const std::string l = inspect(il);
  CHECK_THAT(l, HasSubstring("llmc"));
  CHECK_THAT(l, HasSubstring("documents   3\n"));
  CHECK_THAT(l, HasSubstring("tokens      19\n"));
  CHECK_THAT(l, HasSubstring("EOT 50256   3 tokens; 3 of 3 documents start with one"));
  CHECK_THAT(l, HasSubstring("first 4 tokens: 50256 15496 995 0\n"));
  il.tokenizer = "none";
  CHECK_THAT(inspect(il), !HasSubstring("decoded"));
#ifdef UNIPOOL_HAVE_GPT2
  if (gpt2_available()) {
    il.tokenizer = "auto";
    CHECK_THAT(inspect(il), HasSubstring("decoded     \"<|endoftext|>Hello world!\""));
  }
#endif
}

TEST_CASE("inspect: every corrupt file gets an error naming it", "[tokenize]") {
  TempDir dir;
  const std::vector<std::vector<int32_t>> docs = {{1, 2, 3, 256}, {4, 5, 256}};
  auto fresh = [&](const std::string& name) {
    write_megatron(dir.file(name), docs);
    return dir.file(name);
  };
  auto inspect_error = [&](const std::string& path, int vocab = 257) {
    InspectOptions io;
    io.path = path;
    io.vocab_size = vocab;
    return error_of([&] { inspect(io); });
  };
  CHECK(inspect_error(fresh("good")) == "<no error>");

  {  // bad magic
    const std::string p = fresh("magic");
    std::vector<uint8_t> idx = read_bytes(p + ".idx");
    idx[0] = 'X';
    write_bytes(p + ".idx", idx);
    const std::string e = inspect_error(p);
    CHECK_THAT(e, HasSubstring(p + ".idx"));
    CHECK_THAT(e, HasSubstring("bad magic"));
  }
  {  // truncated .bin
    const std::string p = fresh("trunc");
    std::vector<uint8_t> bin = read_bytes(p + ".bin");
    bin.resize(bin.size() - 2);
    write_bytes(p + ".bin", bin);
    const std::string e = inspect_error(p);
    CHECK_THAT(e, HasSubstring(p + ".bin"));
    CHECK_THAT(e, HasSubstring("truncated"));
  }
  {  // unsupported dtype
    const std::string p = fresh("dtype");
    std::vector<uint8_t> idx = read_bytes(p + ".idx");
    idx[17] = 6;
    write_bytes(p + ".idx", idx);
    const std::string e = inspect_error(p);
    CHECK_THAT(e, HasSubstring(p + ".idx"));
    CHECK_THAT(e, HasSubstring("unsupported dtype code 6"));
  }
  {  // a token id past the vocabulary, with its position
    const std::string p = fresh("vocab");
    const std::string e = inspect_error(p, 6);
    CHECK_THAT(e, HasSubstring(p + ".bin"));
    CHECK_THAT(e, HasSubstring("token id 256 at token position 3"));
  }
  {  // empty shards
    write_megatron(dir.file("none"), {});
    std::string e = inspect_error(dir.file("none"));
    CHECK_THAT(e, HasSubstring(dir.file("none")));
    CHECK_THAT(e, HasSubstring("shard is empty"));
    write_llmc(dir.file("zero.bin"), {});
    e = inspect_error(dir.file("zero.bin"));
    CHECK_THAT(e, HasSubstring(dir.file("zero.bin")));
    CHECK_THAT(e, HasSubstring("shard is empty"));
  }
  {  // llm.c: bad magic (no .idx beside it: read as llm.c) and truncation
    write_text(dir.file("text.bin"), std::string(2000, 'a'));
    std::string e = inspect_error(dir.file("text.bin"));
    CHECK_THAT(e, HasSubstring(dir.file("text.bin")));
    CHECK_THAT(e, HasSubstring("bad magic"));
    write_llmc(dir.file("short.bin"), {50256, 1, 2, 3});
    std::vector<uint8_t> b = read_bytes(dir.file("short.bin"));
    b.pop_back();
    write_bytes(dir.file("short.bin"), b);
    e = inspect_error(dir.file("short.bin"), 50257);
    CHECK_THAT(e, HasSubstring(dir.file("short.bin")));
    CHECK_THAT(e, HasSubstring("size mismatch"));
  }
  {  // missing files
    const std::string e = inspect_error(dir.file("nothing"));
    CHECK_THAT(e, HasSubstring(dir.file("nothing")));
    CHECK_THAT(e, HasSubstring("no such file"));
    const std::string p = fresh("nobin");
    std::filesystem::remove(p + ".bin");
    CHECK_THAT(inspect_error(p), HasSubstring(p + ".bin"));
  }
  {  // explicit formats
    InspectOptions io;
    io.path = fresh("fmt");
    io.vocab_size = 257;
    io.format = "llmc";
    CHECK_THAT(error_of([&] { inspect(io); }), HasSubstring("cannot open " + io.path));
    io.format = "megatron";
    CHECK(error_of([&] { inspect(io); }) == "<no error>");
    io.format = "parquet";
    CHECK_THAT(error_of([&] { inspect(io); }), HasSubstring("parquet"));
  }
}
