// libFuzzer target: the tokenizer (data/gpt2_tokenizer.h) and the tokenize path (data/tokenize.h).
//
// Input: bytes, used twice.
// 1. As text through the GPT-2 tokenizer, when its vocabulary is present (Gpt2Tokenizer::
//    default_dir(): $UNIPOOL_TOKENIZER_DIR or data_cache/tokenizer/gpt2, installed by
//    scripts/fetch_tokenizer.sh; without it this part is skipped, said once). Properties:
//      - every id is in [0, 50256) (<|endoftext|> is never produced);
//      - decode(encode(x)) is valid UTF-8, equal to x when x is valid UTF-8 (else x repaired), and
//        encode(decode(encode(x))) == encode(x);
//      - cutting x at safe_split_points and encoding the pieces gives the same ids
//        (data/tokenize.h promises it; `unipool tokenize` relies on it for long documents).
// 2. When it holds a '{' (the only inputs that can hold a document): as a JSONL file (one
//    {"text": ...} per line) through run_tokenize, as `unipool tokenize --tokenizer bytes
//    --format megatron --threads 1` runs it (the byte tokenizer: run_tokenize would reload the
//    GPT-2 files on every call). The shard it writes must open and hold as many documents as it
//    reported, every token below the byte vocabulary (257); unless it holds no tokens at all:
//    tokenize writes that dataset with a warning, and TokenFile refuses an empty shard.
// Expected outcome for a bad input: unipool::Error (only the JSONL part may throw: encode and
// decode of any bytes must not). std::bad_alloc is a finding (fuzz_util.h).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "data/gpt2_tokenizer.h"
#include "data/shards.h"
#include "data/tokenize.h"
#include "fuzz/fuzz_util.h"

using namespace unipool;
using namespace unipool::fuzz;

namespace {

const data::Gpt2Tokenizer* gpt2() {
  static const std::unique_ptr<data::Gpt2Tokenizer> tok = []() -> std::unique_ptr<data::Gpt2Tokenizer> {
    const std::string dir = data::Gpt2Tokenizer::default_dir();
    try {
      return std::make_unique<data::Gpt2Tokenizer>(data::Gpt2Tokenizer::load(dir));
    } catch (const Error& e) {
      report(std::string("no GPT-2 vocabulary, the GPT-2 part is skipped (run "
                         "scripts/fetch_tokenizer.sh): ") +
             e.what());
      return nullptr;
    }
  }();
  return tok.get();
}

void check_gpt2(const data::Gpt2Tokenizer& tok, std::string_view x) {
  const std::vector<int32_t> ids = tok.encode(x);
  for (const int32_t id : ids) FUZZ_ASSERT(id >= 0 && id < data::Gpt2Tokenizer::kEot);
  const std::string y = tok.decode(ids);
  FUZZ_ASSERT(valid_utf8(y));
  if (valid_utf8(x)) FUZZ_ASSERT(y == x);
  FUZZ_ASSERT(tok.encode(y) == ids);

  std::vector<int32_t> pieces;
  size_t start = 0;
  for (const size_t p : data::safe_split_points(x, 7)) {
    FUZZ_ASSERT(p > start && p < x.size());
    tok.encode_append(x.substr(start, p - start), pieces);
    start = p;
  }
  tok.encode_append(x.substr(start), pieces);
  FUZZ_ASSERT(pieces == ids);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view x(reinterpret_cast<const char*>(data), size);
  if (const data::Gpt2Tokenizer* tok = gpt2()) check_gpt2(*tok, x);

  const std::vector<int32_t> bytes = data::encode_bytes(std::string(x));
  FUZZ_ASSERT(bytes.size() == size + 1 && bytes.back() == data::kBytesEod);

  // The JSONL part costs ~10 ms an input (run_tokenize reads through a fresh 16 MB buffer): it runs
  // for inputs that hold a '{', the only ones that can hold a document.
  if (x.find('{') == std::string_view::npos) return 0;
  static const std::string jsonl = scratch("docs.jsonl");
  static const std::string out = scratch("tok");
  write_bytes(jsonl, x);
  data::TokenizeOptions o;
  o.inputs = {jsonl};
  o.out_prefix = out;
  o.tokenizer = "bytes";
  o.format = "megatron";
  o.threads = 1;
  o.quiet = true;
  data::TokenizeStats stats;
  if (!guard([&] { stats = data::run_tokenize(o); })) return 0;
  // A dataset with no tokens is written (with a warning), and TokenFile refuses an empty shard.
  if (stats.tokens == 0) return 0;
  must("the shard tokenize wrote does not open", [&] {
    const data::TokenFile f = data::TokenFile::open(out, data::ShardFormat::megatron);
    FUZZ_ASSERT(f.num_documents() == stats.documents);
    std::vector<int32_t> all(static_cast<size_t>(f.num_tokens()));
    f.read_tokens(0, f.num_tokens(), all.data());
    for (const int32_t t : all) FUZZ_ASSERT(t >= 0 && t < data::kBytesVocab);
  });
  return 0;
}
