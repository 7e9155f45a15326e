// `unipool inspect` (see inspect.h): TokenFile's validation, a full token scan, a summary.
#include "data/inspect.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <vector>

#include "data/shards.h"
#include "data/tokenize.h"
#include "base/error.h"

#if __has_include("data/gpt2_tokenizer.h")
#include "data/gpt2_tokenizer.h"
#define UNIPOOL_HAVE_GPT2 1
#endif

namespace unipool::data {

namespace fs = std::filesystem;

namespace {

constexpr int kLlama3Vocab = 128256;  // default vocabulary of uint32 (LLaMA-3) llm.c shards

bool is_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool has_llmc_magic(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  uint32_t magic = 0;
  if (!f.read(reinterpret_cast<char*>(&magic), 4)) return false;
  return magic == kLlmcMagicGpt2 || magic == kLlmcMagicLlama3;
}

// The file to open and its format, from --format and what is on disk.
struct Target {
  std::string path;  // Megatron prefix or llm.c file
  ShardFormat format = ShardFormat::megatron;
  bool guessed_llmc = false;  // auto: a plain file without a Megatron index beside it
};

Target resolve(const InspectOptions& o) {
  check(!o.path.empty(), "inspect: no file given");
  const std::string& p = o.path;
  // "x.bin" / "x.idx" name the Megatron prefix "x" when x.idx exists and p.idx does not
  std::string stem;
  if ((ends_with(p, ".bin") || ends_with(p, ".idx")) && !is_file(p + ".idx") &&
      is_file(p.substr(0, p.size() - 4) + ".idx")) {
    stem = p.substr(0, p.size() - 4);
  }
  if (o.format == "megatron") return {stem.empty() ? p : stem, ShardFormat::megatron, false};
  if (o.format == "llmc") return {p, ShardFormat::llmc, false};
  check(o.format == "auto",
        "inspect: unknown --format '" + o.format + "' (expected auto, megatron or llmc)");
  if (is_file(p + ".idx")) return {p, ShardFormat::megatron, false};
  if (is_file(p) && has_llmc_magic(p)) return {p, ShardFormat::llmc, false};
  if (!stem.empty()) return {stem, ShardFormat::megatron, false};
  if (is_file(p)) return {p, ShardFormat::llmc, true};
  throw Error("inspect: " + p + ": no such file, and no Megatron index " + p +
              ".idx (give a Megatron prefix or an llm.c .bin)");
}

// A C-string-like rendering of decoded bytes: printable text as is (UTF-8 passes through),
// newlines, tabs, quotes and other control bytes escaped, so the text stays on one line.
std::string escape(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char b[8];
          std::snprintf(b, sizeof(b), "\\x%02x", c);
          out += b;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// The first tokens as text, or "" with a reason in `note` when they cannot be decoded.
std::string decode_text(const InspectOptions& o, int vocab, int itemsize,
                        const std::vector<int32_t>& ids, std::string& note) {
  std::string how = o.tokenizer;
  if (how == "auto") {
    if (vocab == kBytesVocab) {
      how = "bytes";
    } else if (vocab == 50257 && itemsize == 2) {
      how = "gpt2";
    } else {
      note = "(no tokenizer for a vocabulary of " + std::to_string(vocab) + ": ids only)";
      return "";
    }
  }
  if (how == "none") return "";
  if (how == "bytes") {
    std::string text;
    for (int32_t t : ids) {
      if (t < 256) {
        text += static_cast<char>(t);
      } else {
        text += t == kBytesEod ? "<|eod|>" : "<" + std::to_string(t) + ">";
      }
    }
    return text;
  }
  check(how == "gpt2",
        "inspect: unknown --tokenizer '" + o.tokenizer + "' (expected auto, gpt2, bytes or none)");
#ifdef UNIPOOL_HAVE_GPT2
  try {
    const std::string dir =
        o.tokenizer_dir.empty() ? Gpt2Tokenizer::default_dir() : o.tokenizer_dir;
    const Gpt2Tokenizer tok = Gpt2Tokenizer::load(dir);
    std::string text;
    for (int32_t t : ids) {  // ids past the GPT-2 vocabulary (a larger --vocab-size) as <id>
      text += t < tok.vocab_size() ? tok.decode(&t, 1) : "<" + std::to_string(t) + ">";
    }
    return text;
  } catch (const Error& e) {
    if (o.tokenizer == "gpt2") throw;
    note = std::string("(GPT-2 tokenizer not available: ") + e.what() + ")";
    return "";
  }
#else
  if (o.tokenizer == "gpt2") throw Error("inspect: this build has no GPT-2 tokenizer");
  note = "(this build has no GPT-2 tokenizer: ids only)";
  return "";
#endif
}

std::string file_size(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? std::string("?") : std::to_string(n) + " bytes";
}

}  // namespace

std::string inspect(const InspectOptions& o) {
  check(o.vocab_size >= 0, "inspect: --vocab-size must be >= 0 (0: 50257)");
  check(o.decode_tokens >= 0, "inspect: --decode-tokens must be >= 0");
  const Target target = resolve(o);
  std::unique_ptr<TokenFile> file;
  try {
    file = std::make_unique<TokenFile>(TokenFile::open(target.path, target.format));
  } catch (const Error& e) {
    if (!target.guessed_llmc) throw;
    throw Error(std::string(e.what()) + " [inspect: there is no Megatron index " + target.path +
                ".idx, so the file was read as an llm.c shard]");
  }
  const TokenFile& f = *file;
  const bool llmc = f.format() == ShardFormat::llmc;
  // ids are checked against --vocab-size, or else the default: 50257 (128256 for uint32 llm.c)
  const int limit =
      o.vocab_size > 0 ? o.vocab_size : (llmc && f.itemsize() == 4 ? kLlama3Vocab : 50257);

  // every token below the vocabulary; count the candidate end-of-document ids
  const int64_t n = f.num_tokens();
  int64_t count_256 = 0, count_50256 = 0, count_bos = 0;
  int32_t max_id = 0;
  std::vector<int32_t> chunk(1 << 16);
  for (int64_t begin = 0; begin < n; begin += static_cast<int64_t>(chunk.size())) {
    const int64_t count = std::min<int64_t>(static_cast<int64_t>(chunk.size()), n - begin);
    f.read_tokens(begin, count, chunk.data());
    for (int64_t i = 0; i < count; ++i) {
      const int32_t t = chunk[static_cast<size_t>(i)];
      if (t < 0 || t >= limit) {
        throw Error(f.token_path() + ": token id " + std::to_string(t) + " at token position " +
                    std::to_string(begin + i) + " is not below the vocabulary size " +
                    std::to_string(limit) + (o.vocab_size > 0 ? "" : " (see --vocab-size)"));
      }
      max_id = std::max(max_id, t);
      count_256 += t == kBytesEod;
      count_50256 += t == kGpt2Eot;
      count_bos += t == kLlama3Bos;
    }
  }

  // documents: lengths, and which end (Megatron) or start (llm.c) with a delimiter
  const int64_t docs = f.num_documents();
  int64_t min_len = std::numeric_limits<int64_t>::max(), max_len = 0;
  int64_t end_256 = 0, end_50256 = 0, start_delim = 0;
  const int32_t llmc_delim = f.itemsize() == 4 ? kLlama3Bos : kGpt2Eot;
  for (int64_t d = 0; d < docs; ++d) {
    const int64_t b = f.document_begin(d), e = f.document_end(d);
    min_len = std::min(min_len, e - b);
    max_len = std::max(max_len, e - b);
    if (e == b) continue;
    const int32_t first = f.token(b), last = f.token(e - 1);
    end_256 += last == kBytesEod;
    end_50256 += last == kGpt2Eot;
    start_delim += first == llmc_delim;
  }

  // a Megatron file whose ids are all < 257 and whose every document ends with 256 is byte-level
  const bool byte_level = o.vocab_size == 0 && !llmc && max_id < kBytesVocab && end_256 == docs;
  const int vocab = byte_level ? kBytesVocab : limit;
  const int32_t eod = llmc ? llmc_delim : (vocab == kBytesVocab ? kBytesEod : kGpt2Eot);
  const int64_t eod_count = eod == kBytesEod  ? count_256
                            : eod == kGpt2Eot ? count_50256
                                              : count_bos;
  const int64_t delimited = llmc ? start_delim : (eod == kBytesEod ? end_256 : end_50256);

  std::ostringstream s;
  char line[256];
  s << "inspect: " << f.name() << " (" << shard_format_name(f.format()) << ", valid)\n";
  if (llmc) {
    s << "  file        " << f.token_path() << " (" << file_size(f.token_path()) << ")\n";
  } else {
    s << "  files       " << f.name() << ".idx (" << file_size(f.name() + ".idx") << "), "
      << f.token_path() << " (" << file_size(f.token_path()) << ")\n";
  }
  s << "  dtype       "
    << (f.itemsize() == 2 ? "uint16"
        : llmc            ? "uint32"
                          : "int32")
    << " (" << f.itemsize() << " bytes per token)\n";
  s << "  vocabulary  " << vocab
    << (o.vocab_size > 0 ? ""
        : byte_level     ? " (byte-level: every id < 257, every document ends with 256)"
                         : " (default; --vocab-size to change)")
    << "\n";
  s << "  documents   " << docs << "\n";
  s << "  tokens      " << n << "\n";
  std::snprintf(line, sizeof(line), "  doc length  min %lld | mean %.1f | max %lld tokens\n",
                static_cast<long long>(min_len), static_cast<double>(n) / static_cast<double>(docs),
                static_cast<long long>(max_len));
  s << line;
  s << "  " << (llmc ? "EOT" : "EOD") << " " << eod << "   " << eod_count << " tokens; "
    << delimited << " of " << docs << " documents " << (llmc ? "start" : "end") << " with one\n";
  s << "  token ids   all < " << vocab << " (largest " << max_id << ")\n";

  const int64_t shown = std::min<int64_t>(o.decode_tokens, n);
  if (shown > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(shown));
    f.read_tokens(0, shown, ids.data());
    s << "  first " << shown << " tokens:";
    for (int32_t t : ids) s << ' ' << t;
    s << "\n";
    std::string note;
    const std::string text = decode_text(o, vocab, f.itemsize(), ids, note);
    if (!text.empty()) s << "  decoded     " << escape(text) << "\n";
    if (!note.empty()) s << "  decoded     " << note << "\n";
  }
  return s.str();
}

void run_inspect(const InspectOptions& options) {
  const std::string summary = inspect(options);
  std::fputs(summary.c_str(), stdout);
}

}  // namespace unipool::data
