// The GPT-2 tokenizer (data/gpt2_tokenizer.h): golden ids from tiktoken for every fixture string,
// exact round trips on random valid UTF-8 and on a large real text, the documented invalid-UTF-8
// behaviour, concurrent use from two threads, SHA-256 and the errors for missing or wrong files.
//
// The tests that need the vocabulary read it from Gpt2Tokenizer::default_dir(). Without it they
// fail when $CI is set and are skipped with a warning otherwise; scripts/fetch_tokenizer.sh
// installs it. Golden ids: tests/fixtures/gpt2_golden_ids.json, written by
// tools/golden/gen_gpt2_golden.mjs (npm tiktoken, gpt2 encode_ordinary) from
// tests/fixtures/tokenizer_fixture.json.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "data/gpt2_tokenizer.h"
#include "base/error.h"
#include "base/sha256.h"
#include "tests/catch.h"
#include "tests/tempdir.h"

using unipool::test::TempDir;

using unipool::data::Gpt2Tokenizer;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
  REQUIRE(f.good());
}

bool tokenizer_files_present(const std::string& dir) {
  return std::filesystem::exists(dir + "/encoder.json") ||
         std::filesystem::exists(dir + "/vocab.bpe");
}

// The tokenizer of default_dir(), loaded once per process. nullptr (after a WARN) when the files
// are absent and $CI is unset; a test failure when they are absent under CI, or present but wrong.
const Gpt2Tokenizer* tokenizer_or_skip() {
  static std::optional<Gpt2Tokenizer> tokenizer;
  static std::string error;
  static bool tried = false;
  const std::string dir = Gpt2Tokenizer::default_dir();
  if (!tried) {
    tried = true;
    try {
      tokenizer.emplace(Gpt2Tokenizer::load(dir));
    } catch (const unipool::Error& e) {
      error = e.what();
    }
  }
  if (tokenizer) return &*tokenizer;
  if (tokenizer_files_present(dir))
    FAIL("the GPT-2 tokenizer files in " << dir << " do not load: " << error);
  const char* ci = std::getenv("CI");
  if (ci && *ci)
    FAIL("the GPT-2 tokenizer files are missing from "
         << dir << "; run scripts/fetch_tokenizer.sh before the tests (" << error << ")");
  WARN("skipped: the GPT-2 tokenizer files are missing from "
       << dir << "; run scripts/fetch_tokenizer.sh to enable this test");
  return nullptr;
}

// Code point -> UTF-8.
void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xc0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xe0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    s += static_cast<char>(0xf0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// Random valid UTF-8: code points from every plane (no surrogates), mixed with runs of ASCII and
// Unicode white space, punctuation, digits, apostrophe contractions and the literal <|endoftext|>.
std::string random_utf8(std::mt19937_64& rng) {
  static const uint32_t kSpaces[] = {0x20,   0x20,   0x20,   0x09,   0x0a,   0x0d,   0x0b,   0x0c,
                                     0x85,   0xa0,   0x1680, 0x2000, 0x2009, 0x200a, 0x2028, 0x2029,
                                     0x202f, 0x205f, 0x3000, 0xfeff, 0x200b, 0x200d};
  static const char* kSnippets[] = {"'s",   "'t",   "'re", "'ve", "'m",
                                    "'ll",  "'d",   "'S",  "'",   "<|endoftext|>",
                                    "\r\n", "    ", "...", "123", "don't"};
  std::string s;
  const int n = std::uniform_int_distribution<int>(0, 80)(rng);
  for (int i = 0; i < n; ++i) {
    const int kind = std::uniform_int_distribution<int>(0, 9)(rng);
    const int repeat = std::uniform_int_distribution<int>(1, 4)(rng);
    for (int r = 0; r < repeat; ++r) {
      uint32_t cp;
      switch (kind) {
        case 0:
        case 1:
          cp = std::uniform_int_distribution<uint32_t>(0x20, 0x7e)(rng);
          break;
        case 2:
          cp = kSpaces[std::uniform_int_distribution<size_t>(0, std::size(kSpaces) - 1)(rng)];
          break;
        case 3:
          cp = std::uniform_int_distribution<uint32_t>(0, 0x7f)(rng);  // controls too
          break;
        case 4:
          cp = std::uniform_int_distribution<uint32_t>(0x80, 0x7ff)(rng);
          break;
        case 5:
          cp = std::uniform_int_distribution<uint32_t>(0x800, 0xffff)(rng);
          break;
        case 6:
          cp = std::uniform_int_distribution<uint32_t>(0x10000, 0x10ffff)(rng);
          break;
        case 7:
          cp = std::uniform_int_distribution<uint32_t>(0x4e00, 0x9fff)(rng);  // CJK
          break;
        default:
          s += kSnippets[std::uniform_int_distribution<size_t>(0, std::size(kSnippets) - 1)(rng)];
          continue;
      }
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 'x';
      append_utf8(s, cp);
    }
  }
  return s;
}

// Bytes outside printable ASCII as \xNN, for messages.
std::string escaped(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

std::string common_licenses() {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/usr/share/common-licenses", ec))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& f : files) text += read_file(f.string());
  return text;
}

}  // namespace

TEST_CASE("sha256 matches the FIPS 180-4 test vectors", "[tokenizer]") {
  using unipool::sha256_hex;
  auto sha = [](const std::string& s) { return sha256_hex(s.data(), s.size()); };
  CHECK(sha("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // Padding boundaries: 55 bytes fit one block, 56 and 64 need a second one.
  CHECK(sha(std::string(55, 'a')) ==
        "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  CHECK(sha(std::string(56, 'a')) ==
        "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  CHECK(sha(std::string(64, 'a')) ==
        "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
  CHECK(sha(std::string(1000000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("missing or wrong tokenizer files give an Error naming the file", "[tokenizer]") {
  TempDir dir;
  // Nothing there.
  try {
    Gpt2Tokenizer::load(dir.path);
    FAIL("load of an empty directory succeeded");
  } catch (const unipool::Error& e) {
    CHECK_THAT(e.what(), HasSubstring(dir.path + "/encoder.json"));
    CHECK_THAT(e.what(), HasSubstring("scripts/fetch_tokenizer.sh"));
  }
  // A wrong encoder.json.
  write_file(dir.path + "/encoder.json", "{\"!\": 0}");
  write_file(dir.path + "/vocab.bpe", "#version: 0.2\n");
  try {
    Gpt2Tokenizer::load(dir.path);
    FAIL("load of a wrong encoder.json succeeded");
  } catch (const unipool::Error& e) {
    CHECK_THAT(e.what(), HasSubstring(dir.path + "/encoder.json"));
    CHECK_THAT(e.what(), HasSubstring("sha256"));
    CHECK_THAT(e.what(), HasSubstring(Gpt2Tokenizer::kEncoderSha256));
    CHECK_THAT(e.what(), HasSubstring("scripts/fetch_tokenizer.sh"));
  }
  // The right encoder.json with a missing, then a wrong (one byte changed) vocab.bpe.
  if (!tokenizer_or_skip()) return;
  const std::string real = Gpt2Tokenizer::default_dir();
  write_file(dir.path + "/encoder.json", read_file(real + "/encoder.json"));
  std::filesystem::remove(dir.path + "/vocab.bpe");
  try {
    Gpt2Tokenizer::load(dir.path);
    FAIL("load without vocab.bpe succeeded");
  } catch (const unipool::Error& e) {
    CHECK_THAT(e.what(), HasSubstring(dir.path + "/vocab.bpe"));
    CHECK_THAT(e.what(), HasSubstring("scripts/fetch_tokenizer.sh"));
  }
  std::string vocab = read_file(real + "/vocab.bpe");
  vocab[vocab.size() / 2] ^= 1;
  write_file(dir.path + "/vocab.bpe", vocab);
  try {
    Gpt2Tokenizer::load(dir.path);
    FAIL("load of a corrupted vocab.bpe succeeded");
  } catch (const unipool::Error& e) {
    CHECK_THAT(e.what(), HasSubstring(dir.path + "/vocab.bpe"));
    CHECK_THAT(e.what(), HasSubstring(Gpt2Tokenizer::kVocabSha256));
  }
  // And the right pair loads.
  write_file(dir.path + "/vocab.bpe", read_file(real + "/vocab.bpe"));
  CHECK(Gpt2Tokenizer::load(dir.path).vocab_size() == 50257);
}

TEST_CASE("default_dir honours UNIPOOL_TOKENIZER_DIR", "[tokenizer]") {
  const char* old = std::getenv("UNIPOOL_TOKENIZER_DIR");
  const std::string saved = old ? old : "";
  setenv("UNIPOOL_TOKENIZER_DIR", "/some/where/gpt2", 1);
  CHECK(Gpt2Tokenizer::default_dir() == "/some/where/gpt2");
  unsetenv("UNIPOOL_TOKENIZER_DIR");
  const std::string fallback = Gpt2Tokenizer::default_dir();
  CHECK_THAT(fallback, HasSubstring("data_cache/tokenizer/gpt2"));
  if (old) setenv("UNIPOOL_TOKENIZER_DIR", saved.c_str(), 1);
}

TEST_CASE("GPT-2 ids equal tiktoken's gpt2 encode_ordinary on every fixture string",
          "[tokenizer]") {
  const Gpt2Tokenizer* tok = tokenizer_or_skip();
  if (!tok) return;
  const std::string fixtures = std::string(UNIPOOL_SOURCE_DIR) + "/tests/fixtures/";
  const auto golden = nlohmann::json::parse(read_file(fixtures + "gpt2_golden_ids.json"));
  const auto texts = nlohmann::json::parse(read_file(fixtures + "tokenizer_fixture.json"));
  CHECK(golden.at("package") == "tiktoken");
  CHECK(golden.at("encoding") == "gpt2");
  CHECK(golden.at("method") == "encode_ordinary");
  const auto& cases = golden.at("cases");
  {
    INFO(
        "tests/fixtures/gpt2_golden_ids.json is stale: regenerate it with "
        "tools/golden/gen_gpt2_golden.mjs after editing tokenizer_fixture.json");
    REQUIRE(cases.size() == texts.size());
    for (size_t i = 0; i < cases.size(); ++i) REQUIRE(cases[i].at("text") == texts[i]);
  }
  size_t total = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string text = cases[i].at("text").get<std::string>();
    const auto want = cases[i].at("ids").get<std::vector<int32_t>>();
    const auto got = tok->encode(text);
    INFO("case " << i << ": " << nlohmann::json(text).dump());
    CHECK(got == want);
    CHECK(tok->decode(got) == text);
    total += want.size();
  }
  CHECK(total > 1000);
  // The worked examples of docs/data.md §Token files.
  CHECK(tok->encode("Hello world!") == std::vector<int32_t>{15496, 995, 0});
  CHECK(tok->encode("The quick brown fox.") == std::vector<int32_t>{464, 2068, 7586, 21831, 13});
  CHECK(tok->encode("int main() { return 0; }") ==
        std::vector<int32_t>{600, 1388, 3419, 1391, 1441, 657, 26, 1782});
  CHECK(tok->vocab_size() == 50257);
  const int32_t eot = Gpt2Tokenizer::kEot;
  CHECK(tok->decode(&eot, 1) == "<|endoftext|>");
  CHECK(tok->encode("<|endoftext|>") != std::vector<int32_t>{eot});
}

TEST_CASE("decode(encode(s)) == s on random valid UTF-8", "[tokenizer]") {
  const Gpt2Tokenizer* tok = tokenizer_or_skip();
  if (!tok) return;
  std::mt19937_64 rng(20241123);
  for (int i = 0; i < 3000; ++i) {
    const std::string s = random_utf8(rng);
    const auto ids = tok->encode(s);
    INFO("string " << i << ": " << nlohmann::json(s).dump());
    REQUIRE(tok->decode(ids) == s);
    for (int32_t id : ids) REQUIRE((id >= 0 && id < Gpt2Tokenizer::kEot));
  }
  // Long single-class pieces take the heap merge path.
  for (const std::string& s :
       {std::string(5000, 'a'), std::string(3000, '='), std::string(2000, '7'),
        std::string(4000, ' ') + "x", std::string(1000, '\n')})
    CHECK(tok->decode(tok->encode(s)) == s);
  CHECK(tok->encode(std::string(5000, 'a')).size() == 1250);  // "aaaa" is a token
}

TEST_CASE("decode(encode(s)) == s on a large real text", "[tokenizer]") {
  const Gpt2Tokenizer* tok = tokenizer_or_skip();
  if (!tok) return;
  const std::string text = common_licenses();
  if (text.size() < 100000) {
    WARN("skipped: /usr/share/common-licenses is missing or small");
    return;
  }
  const auto ids = tok->encode(text);
  CHECK(tok->decode(ids) == text);
  const double bytes_per_token = static_cast<double>(text.size()) / static_cast<double>(ids.size());
  CHECK(bytes_per_token > 3.5);
  CHECK(bytes_per_token < 5.0);
  CHECK(std::all_of(ids.begin(), ids.end(),
                    [](int32_t id) { return id >= 0 && id < Gpt2Tokenizer::kEot; }));
  const std::string gpl = read_file("/usr/share/common-licenses/GPL-3");
  CHECK(tok->decode(tok->encode(gpl)) == gpl);
}

TEST_CASE("invalid UTF-8: each maximal ill-formed subpart becomes U+FFFD", "[tokenizer]") {
  const Gpt2Tokenizer* tok = tokenizer_or_skip();
  if (!tok) return;
  const std::string R = "\xEF\xBF\xBD";  // U+FFFD
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"a\xff"
       "b",
       "a" + R + "b"},                               // a byte that never occurs in UTF-8
      {"\x80", R},                                   // a lone continuation byte
      {"x\x80\x80 y", "x" + R + R + " y"},           // two of them
      {"\xe6\x97 text", R + " text"},                // truncated 3-byte sequence: one U+FFFD
      {"end \xf0\x9f\x98", "end " + R},              // truncated 4-byte sequence at the end
      {"\xc0\xaf", R + R},                           // overlong '/': C0 is never valid
      {"\xe0\x80\xaf", R + R + R},                   // overlong 3-byte form
      {"\xed\xa0\x80", R + R + R},                   // an encoded surrogate (U+D800)
      {"\xf4\x90\x80\x80", R + R + R + R},           // above U+10FFFF
      {"\xf5\x80", R + R},                           // F5 is never valid
      {"caf\xc3", "caf" + R},                        // truncated é at the end
      {"caf\xc3 au lait", "caf" + R + " au lait"},   // truncated é before a space
      {"\xe2\x82\xac\xe2\x82", "\xe2\x82\xac" + R},  // € then half a €
      {"ok \xf0\x9f\x98\x80 \xf0\x9f", "ok \xf0\x9f\x98\x80 " + R},
  };
  for (const auto& [bad, repaired] : cases) {
    INFO("input " << escaped(bad) << ", expected " << escaped(repaired));
    const auto ids = tok->encode(bad);
    CHECK(ids == tok->encode(repaired));
    CHECK(tok->decode(ids) == repaired);
  }
  // Appending keeps what was already there, also when the input needs repairing.
  std::vector<int32_t> out = {1, 2, 3};
  tok->encode_append("ab \xff", out);
  auto want = std::vector<int32_t>{1, 2, 3};
  for (int32_t id : tok->encode("ab " + R)) want.push_back(id);
  CHECK(out == want);
}

TEST_CASE("encode is thread-safe: two threads give the single-threaded ids", "[tokenizer]") {
  const Gpt2Tokenizer* tok = tokenizer_or_skip();
  if (!tok) return;
  std::vector<std::string> texts;
  const auto fixture = nlohmann::json::parse(
      read_file(std::string(UNIPOOL_SOURCE_DIR) + "/tests/fixtures/tokenizer_fixture.json"));
  for (const auto& t : fixture) texts.push_back(t.get<std::string>());
  std::mt19937_64 rng(7);
  for (int i = 0; i < 500; ++i) texts.push_back(random_utf8(rng));
  const std::string licenses = common_licenses();
  if (!licenses.empty()) texts.push_back(licenses);
  std::vector<std::vector<int32_t>> reference;
  for (const auto& t : texts) reference.push_back(tok->encode(t));

  std::vector<std::vector<int32_t>> results[2];
  auto work = [&](int t) {
    // The two threads walk the texts in opposite orders, three times, so that their word caches
    // fill differently while they run at the same time.
    for (int round = 0; round < 3; ++round) {
      std::vector<std::vector<int32_t>> r(texts.size());
      for (size_t k = 0; k < texts.size(); ++k) {
        const size_t i = t == 0 ? k : texts.size() - 1 - k;
        r[i] = tok->encode(texts[i]);
      }
      results[t] = std::move(r);
    }
  };
  std::thread a(work, 0), b(work, 1);
  a.join();
  b.join();
  for (int t = 0; t < 2; ++t) {
    REQUIRE(results[t].size() == texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      INFO("thread " << t << ", text " << i);
      CHECK(results[t][i] == reference[i]);
    }
  }
}

TEST_CASE("decode rejects ids outside the vocabulary", "[tokenizer]") {
  const Gpt2Tokenizer* tok = tokenizer_or_skip();
  if (!tok) return;
  const int32_t bad[] = {15496, 50257};
  CHECK_THROWS_AS(tok->decode(bad, 2), unipool::Error);
  const int32_t negative[] = {-1};
  CHECK_THROWS_AS(tok->decode(negative, 1), unipool::Error);
  CHECK(tok->decode(nullptr, 0).empty());
  CHECK(tok->encode("").empty());
}
