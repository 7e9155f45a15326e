// `unipool tokenize` (see tokenize.h): read documents, encode them in parallel, shuffle, split,
// write Megatron and/or llm.c shards. The writers here stream the token arrays straight to disk in
// the layouts of data/shards.h (the same bytes write_megatron/write_llmc produce, checked by the
// tests against docs/data.md §Token files), so the corpus is never copied into per-document int32 vectors.
#include "data/tokenize.h"
#include "base/json_depth.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/shards.h"
#include "base/error.h"
#include "base/fsutil.h"
#include "base/random.h"

#if __has_include("data/gpt2_tokenizer.h")
#include "data/gpt2_tokenizer.h"
#define UNIPOOL_HAVE_GPT2 1
#endif

namespace unipool::data {

namespace fs = std::filesystem;

std::vector<std::string> split_documents(const std::string& text, const std::string& separator) {
  std::vector<std::string> docs;
  if (separator.empty()) {
    if (!text.empty()) docs.push_back(text);
    return docs;
  }
  std::string current, line;
  std::istringstream in(text);
  while (std::getline(in, line)) {
    if (line == separator) {
      if (!current.empty()) docs.push_back(std::move(current));
      current.clear();
    } else {
      current += line;
      current += '\n';
    }
  }
  if (!current.empty()) docs.push_back(std::move(current));
  return docs;
}

std::vector<int32_t> encode_bytes(const std::string& document) {
  std::vector<int32_t> ids;
  ids.reserve(document.size() + 1);
  for (unsigned char ch : document) ids.push_back(ch);
  ids.push_back(kBytesEod);
  return ids;
}


std::vector<size_t> safe_split_points(std::string_view text, size_t stride) {
  auto graphic = [](char c) { return c > 0x20 && c < 0x7f; };  // printable ASCII, not a space
  std::vector<size_t> points;
  if (stride == 0) return points;
  size_t target = stride;
  for (size_t p = std::max<size_t>(target, 2); p < text.size(); ++p) {
    if (text[p - 1] == '\n' && graphic(text[p - 2]) && graphic(text[p])) {
      points.push_back(p);
      target = p + stride;
      p = target - 1;  // the loop's ++p lands on target
    }
  }
  return points;
}

namespace {

constexpr size_t kBatchBytes = size_t(16) << 20;   // text encoded per parallel batch (about)
constexpr size_t kPieceBytes = size_t(256) << 10;  // a long document is cut into pieces this big

// ---- the tokenizer ------------------------------------------------------------------------------

// The tokenizer behind --tokenizer: encode() is thread-safe and never emits the end-of-document id.
class TextEncoder {
 public:
  explicit TextEncoder(const TokenizeOptions& o) : name_(o.tokenizer) {
    if (o.tokenizer == "bytes") {
      vocab_size_ = kBytesVocab;
      eod_ = kBytesEod;
      return;
    }
#ifdef UNIPOOL_HAVE_GPT2
    const std::string dir =
        o.tokenizer_dir.empty() ? Gpt2Tokenizer::default_dir() : o.tokenizer_dir;
    gpt2_ = std::make_unique<Gpt2Tokenizer>(Gpt2Tokenizer::load(dir));
    vocab_size_ = gpt2_->vocab_size();
    eod_ = Gpt2Tokenizer::kEot;
#else
    throw Error(
        "tokenize: this build has no GPT-2 tokenizer (data/gpt2_tokenizer.h); use "
        "--tokenizer bytes");
#endif
  }
  const std::string& name() const {
    return name_;
  }
  int vocab_size() const {
    return vocab_size_;
  }
  int32_t eod() const {
    return eod_;
  }

  std::vector<int32_t> encode(std::string_view text) const {
#ifdef UNIPOOL_HAVE_GPT2
    if (gpt2_) return gpt2_->encode(text);
#endif
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }

 private:
  std::string name_;
  int vocab_size_ = 0;
  int32_t eod_ = 0;
#ifdef UNIPOOL_HAVE_GPT2
  std::unique_ptr<Gpt2Tokenizer> gpt2_;
#endif
};

// ---- the encoded corpus -------------------------------------------------------------------------

// Every document's text tokens back to back in input order (no end-of-document ids), 2 bytes each.
struct Corpus {
  std::vector<uint16_t> tokens;
  std::vector<int64_t> ends;  // document d is tokens [begin(d), ends[d])
  int64_t num_documents() const { return static_cast<int64_t>(ends.size()); }
  int64_t begin(int64_t d) const { return d == 0 ? 0 : ends[static_cast<size_t>(d - 1)]; }
  int64_t length(int64_t d) const { return ends[static_cast<size_t>(d)] - begin(d); }
};

// Runs body(i) for i in [0, n) on `threads` threads. The first exception (lowest i) is rethrown
// after the loop, so errors are deterministic too.
template <typename Body>
void parallel_for(size_t n, int threads, const Body& body) {
  std::vector<std::exception_ptr> errors(n);
  const int64_t count = static_cast<int64_t>(n);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < count; ++i) {
    try {
      body(static_cast<size_t>(i));
    } catch (...) {
      errors[static_cast<size_t>(i)] = std::current_exception();
    }
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

// Documents read but not yet encoded, and what happens to them.
class BatchEncoder {
 public:
  BatchEncoder(const TextEncoder& tok, int threads, bool quiet)
      : tok_(tok), threads_(threads), quiet_(quiet) {}

  // Queues a document (its name is for messages); encodes the queue once it holds kBatchBytes.
  void add(std::string text, std::string name) {
    pending_bytes_ += text.size();
    docs_.push_back(std::move(text));
    names_.push_back(std::move(name));
    if (pending_bytes_ >= kBatchBytes) flush();
  }

  // Encodes the queued documents in parallel and appends them to the corpus in queue order.
  void flush() {
    struct Piece {
      size_t doc, begin, end;
    };
    std::vector<Piece> pieces;
    // Every byte of a document is text, a leading U+FEFF (byte-order mark) included, as tiktoken,
    // Python's UTF-8 readers and Megatron-LM's preprocessing keep it. An empty document is one
    // piece of no bytes: it becomes a document with no tokens.
    for (size_t d = 0; d < docs_.size(); ++d) {
      const std::string_view text = docs_[d];
      size_t begin = 0;
      for (size_t p : safe_split_points(text, kPieceBytes)) {
        pieces.push_back({d, begin, p});
        begin = p;
      }
      pieces.push_back({d, begin, text.size()});
      text_bytes_ += static_cast<int64_t>(text.size());
    }
    std::vector<std::vector<int32_t>> ids(pieces.size());
    parallel_for(pieces.size(), threads_, [&](size_t i) {
      const Piece& p = pieces[i];
      if (p.end > p.begin)
        ids[i] = tok_.encode(std::string_view(docs_[p.doc]).substr(p.begin, p.end - p.begin));
    });
    for (size_t i = 0; i < pieces.size(); ++i) {
      const Piece& p = pieces[i];
      for (int32_t t : ids[i]) {
        if (t < 0 || t >= tok_.vocab_size() || t == tok_.eod()) {
          throw Error(names_[p.doc] + ": the " + tok_.name() + " tokenizer produced id " +
                      std::to_string(t) + (t == tok_.eod() ? " (its end-of-document id)" : "") +
                      " inside a document (vocabulary " + std::to_string(tok_.vocab_size()) + ")");
        }
        corpus_.tokens.push_back(static_cast<uint16_t>(t));
      }
      std::vector<int32_t>().swap(ids[i]);
      const bool last_piece = i + 1 == pieces.size() || pieces[i + 1].doc != p.doc;
      if (last_piece) {
        const int64_t end = static_cast<int64_t>(corpus_.tokens.size());
        check(end - corpus_.begin(corpus_.num_documents()) < std::numeric_limits<int32_t>::max(),
              names_[p.doc] +
                  ": a document of more than 2^31 - 2 tokens does not fit the "
                  "Megatron index (int32 lengths)");
        corpus_.ends.push_back(end);
      }
    }
    docs_.clear();
    names_.clear();
    pending_bytes_ = 0;
    if (!quiet_ && text_bytes_ >= next_report_) {
      std::printf("tokenize: %.0f MB, %lld documents, %lld tokens so far\n", text_bytes_ / 1e6,
                  static_cast<long long>(corpus_.num_documents()),
                  static_cast<long long>(corpus_.tokens.size()));
      std::fflush(stdout);
      next_report_ = text_bytes_ + (int64_t(256) << 20);
    }
  }

  int threads() const { return threads_; }
  Corpus& corpus() { return corpus_; }
  int64_t text_bytes() const { return text_bytes_; }

 private:
  const TextEncoder& tok_;
  int threads_;
  bool quiet_;
  std::vector<std::string> docs_, names_;
  size_t pending_bytes_ = 0;
  Corpus corpus_;
  int64_t text_bytes_ = 0;
  int64_t next_report_ = int64_t(256) << 20;
};

// ---- inputs -------------------------------------------------------------------------------------

bool is_jsonl(const std::string& path) {
  return path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0;
}

// Every regular file under the inputs, directories walked recursively in sorted order.
std::vector<std::string> list_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (fs::is_directory(input, ec)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::recursive_directory_iterator(input, ec))
        if (entry.is_regular_file()) found.push_back(entry.path().string());
      check(!ec, "tokenize: cannot read directory '" + input + "': " + ec.message());
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      check(fs::is_regular_file(input, ec), "tokenize: input '" + input + "' does not exist");
      files.push_back(input);
    }
  }
  return files;
}

// Reads a JSONL file block by block, each block about kBatchBytes of whole lines, parses the lines
// of a block in parallel and queues their "text" fields.
void read_jsonl(const std::string& path, BatchEncoder& enc) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  check(f != nullptr, "cannot open " + path + ": " + std::strerror(errno));
  std::string block, carry;
  std::vector<char> buf(kBatchBytes);
  int64_t first_line = 1;  // line number of the block's first line
  bool eof = false;
  while (!eof) {
    // fill: at least kBatchBytes, and then up to a line end (or the end of the file)
    block.swap(carry);
    carry.clear();
    while (true) {
      const size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
      check(!std::ferror(f.get()), "cannot read " + path + ": " + std::strerror(errno));
      block.append(buf.data(), n);
      if (n == 0) {
        eof = true;
        break;
      }
      const size_t last = block.rfind('\n');
      if (block.size() >= kBatchBytes && last != std::string::npos) {
        carry.assign(block, last + 1, std::string::npos);
        block.resize(last + 1);
        break;
      }
    }
    // split into lines, parse in parallel
    std::vector<std::string_view> lines;
    for (size_t pos = 0; pos < block.size();) {
      size_t nl = block.find('\n', pos);
      if (nl == std::string::npos) nl = block.size();
      lines.emplace_back(block.data() + pos, nl - pos);
      pos = nl + 1;
    }
    std::vector<std::string> texts(lines.size());
    std::vector<char> is_document(lines.size(), 0);  // blank lines are not documents
    parallel_for(lines.size(), enc.threads(), [&](size_t i) {
      const std::string_view line = lines[i];
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;  // blank line
      const std::string where = path + ":" + std::to_string(first_line + int64_t(i));
      check_json_depth(line, where);
      const auto j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
      check(!j.is_discarded(), where + ": not valid JSON (or not valid UTF-8)");
      check(j.is_object() && j.contains("text") && j["text"].is_string(),
            where + ": expected a JSON object with a \"text\" string");
      texts[i] = j["text"].get<std::string>();
      is_document[i] = 1;
    });
    for (size_t i = 0; i < lines.size(); ++i) {
      if (is_document[i])  // {"text": ""} is an (empty) document
        enc.add(std::move(texts[i]), path + ":" + std::to_string(first_line + int64_t(i)));
    }
    first_line += static_cast<int64_t>(lines.size());
  }
}

// ---- outputs ------------------------------------------------------------------------------------

// Megatron PREFIX.bin/.idx (docs/data.md §Token files (Megatron)): the documents in `order`, the EOD appended to each.
void write_megatron_corpus(const std::string& prefix, const Corpus& c,
                           const std::vector<int64_t>& order, int32_t eod) {
  MegatronWriter writer(prefix);
  for (const int64_t d : order) {
    if (c.length(d) == 0) {
      writer.add_empty_document();  // as Megatron-LM: no sequence, no EOD
    } else {
      writer.add_document(c.tokens.data() + c.begin(d), static_cast<size_t>(c.length(d)), eod);
    }
  }
  writer.finish();
}

// llm.c shard (docs/data.md §Token files (llm.c)): documents order[lo, hi), each preceded by EOT 50256.
void write_llmc_part(const std::string& path, const Corpus& c, const std::vector<int64_t>& order,
                     int64_t lo, int64_t hi) {
  // An empty document has no tokens: nothing is written for it (llm.c has no document index).
  int64_t ntok = 0;
  for (int64_t i = lo; i < hi; ++i) {
    const int64_t n = c.length(order[static_cast<size_t>(i)]);
    ntok += n > 0 ? 1 + n : 0;
  }
  LlmcWriter writer(path, ntok);
  const uint16_t eot = static_cast<uint16_t>(kGpt2Eot);
  for (int64_t i = lo; i < hi; ++i) {
    const int64_t d = order[static_cast<size_t>(i)];
    if (c.length(d) == 0) continue;
    writer.add(&eot, 1);
    writer.add(c.tokens.data() + c.begin(d), static_cast<size_t>(c.length(d)));
  }
  writer.finish();
}

std::string mb(int64_t bytes) {
  char s[32];
  std::snprintf(s, sizeof(s), "%.2f MB", bytes / 1e6);
  return s;
}

}  // namespace

TokenizeStats run_tokenize(const TokenizeOptions& o) {
  // check every option before any work
  check(o.tokenizer == "gpt2" || o.tokenizer == "bytes",
        "tokenize: unknown --tokenizer '" + o.tokenizer + "' (expected gpt2 or bytes)");
  check(o.format == "megatron" || o.format == "llmc" || o.format == "both",
        "tokenize: unknown --format '" + o.format + "' (expected megatron, llmc or both)");
  const bool megatron = o.format != "llmc", llmc = o.format != "megatron";
  check(
      !(llmc && o.tokenizer == "bytes"),
      "tokenize: --format " + o.format +
          " needs --tokenizer gpt2: the llm.c format has no document index, its documents are "
          "delimited by the GPT-2 <|endoftext|> id 50256, which is a byte in the bytes tokenizer");
  check(!o.out_prefix.empty(), "tokenize: --out PREFIX is required");
  check(!o.inputs.empty(), "tokenize: no input files");
  check(o.threads >= 0, "tokenize: --threads must be >= 0 (0: all cores)");
  const std::array<double, 3> split_weights = parse_split(o.split);
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  const std::vector<std::string> files = list_inputs(o.inputs);

  const auto t0 = std::chrono::steady_clock::now();
  const TextEncoder tok(o);
  check(tok.vocab_size() <= 65536, "tokenize: vocabulary too large for uint16 shards");

  // read and encode, in input order
  BatchEncoder enc(tok, threads, o.quiet);
  for (const std::string& path : files) {
    if (is_jsonl(path)) {
      read_jsonl(path, enc);
    } else if (o.doc_separator.empty()) {
      enc.add(read_file(path), path);
    } else {
      std::vector<std::string> docs = split_documents(read_file(path), o.doc_separator);
      for (size_t i = 0; i < docs.size(); ++i)
        enc.add(std::move(docs[i]), path + " (document " + std::to_string(i + 1) + ")");
    }
  }
  enc.flush();
  const auto t_encoded = std::chrono::steady_clock::now();
  const Corpus& corpus = enc.corpus();
  const int64_t num_docs = corpus.num_documents();
  if (num_docs == 0 || corpus.tokens.empty()) {  // as Megatron-LM: an empty dataset, said
    std::fprintf(stderr, "tokenize: warning: %s: the dataset written holds no tokens\n",
                 num_docs == 0 ? "the inputs hold no documents" : "every document is empty");
  }

  // a seeded Fisher–Yates shuffle of the documents (base/random.h, unbiased)
  std::vector<int64_t> order(static_cast<size_t>(num_docs));
  for (int64_t i = 0; i < num_docs; ++i) order[static_cast<size_t>(i)] = i;
  if (o.shuffle) {
    SplitMix64 rng{o.shuffle_seed};
    shuffle(order.data(), order.size(), rng);
  }
  const std::array<int64_t, 4> bounds = split_indices(split_weights, num_docs);

  // write
  TokenizeStats stats;
  stats.documents = num_docs;
  stats.text_bytes = enc.text_bytes();
  stats.tokens = static_cast<int64_t>(corpus.tokens.size());
  for (int p = 0; p < 3; ++p) stats.part_documents[p] = bounds[p + 1] - bounds[p];
  const std::string parent = fs::path(o.out_prefix).parent_path().string();
  if (!parent.empty()) make_dirs(parent);
  if (megatron) {
    write_megatron_corpus(o.out_prefix, corpus, order, tok.eod());
    stats.files.push_back(o.out_prefix + ".bin");
    stats.files.push_back(o.out_prefix + ".idx");
  }
  if (llmc) {
    const char* suffix[3] = {"_train.bin", "_val.bin", "_test.bin"};
    for (int p = 0; p < 3; ++p) {
      const std::string path = o.out_prefix + suffix[p];
      if (bounds[p + 1] > bounds[p]) {
        write_llmc_part(path, corpus, order, bounds[p], bounds[p + 1]);
        stats.files.push_back(path);
      } else if (path_exists(path)) {
        fs::remove(path);  // a stale part of an earlier run would not match this split
        if (!o.quiet) std::printf("tokenize: removed stale %s (empty part)\n", path.c_str());
      }
    }
  }
  const auto t_end = std::chrono::steady_clock::now();
  stats.seconds = std::chrono::duration<double>(t_end - t0).count();
  const double encode_s = std::chrono::duration<double>(t_encoded - t0).count();
  const double write_s = std::chrono::duration<double>(t_end - t_encoded).count();

  if (!o.quiet) {
    const int64_t all_tokens = stats.tokens + num_docs;  // with one EOD/EOT per document
    std::printf(
        "tokenize: %lld documents, %s → %lld tokens in %.2f s | %.1f MB/s (%s, vocabulary %d, "
        "%d threads)\n",
        static_cast<long long>(num_docs), mb(stats.text_bytes).c_str(),
        static_cast<long long>(all_tokens), stats.seconds,
        stats.text_bytes / 1e6 / std::max(stats.seconds, 1e-9), tok.name().c_str(),
        tok.vocab_size(), threads);
    std::printf("tokenize: read + encode %.2f s (%.1f MB/s), shuffle + write %.2f s\n", encode_s,
                stats.text_bytes / 1e6 / std::max(encode_s, 1e-9), write_s);
    std::printf("tokenize: split %s → train %lld | valid %lld | test %lld documents%s\n",
                o.split.c_str(), static_cast<long long>(stats.part_documents[0]),
                static_cast<long long>(stats.part_documents[1]),
                static_cast<long long>(stats.part_documents[2]),
                o.shuffle ? "" : " (input order, not shuffled)");
    for (const std::string& f : stats.files) std::printf("tokenize: wrote %s\n", f.c_str());
  }
  return stats;
}

}  // namespace unipool::data
