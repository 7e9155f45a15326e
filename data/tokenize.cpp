// `unipool tokenize` (see tokenize.h): stream documents out of files, standard input, zstd and gzip
// streams; encode them in parallel a window at a time; write them in input order straight into the
// Megatron file, or spool them to a temporary file and write them out shuffled and split. The
// writers of data/shards.h give the bytes (the same write_megatron/write_llmc produce, checked by
// the tests against docs/data.md §Token files); no whole corpus is ever held in memory.
#include "data/tokenize.h"

#include <fcntl.h>
#include <omp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

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

#include "base/error.h"
#include "base/fsutil.h"
#include "base/json_depth.h"
#include "base/random.h"
#include "data/loader.h"
#include "data/shards.h"

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
constexpr size_t kSegmentBytes = size_t(4) << 20;  // plain text is queued in parts this big
constexpr size_t kReadBytes = size_t(1) << 20;     // one read from an input
constexpr size_t kCopyTokens = size_t(1) << 20;    // spool → output copies, in tokens

bool graphic(char c) {
  return c > 0x20 && c < 0x7f;
}  // printable ASCII, not a space

// The last safe split point p >= from of text (the rule of safe_split_points, no stride), or 0.
size_t last_safe_split_point(std::string_view text, size_t from) {
  for (size_t p = text.size(); p-- > std::max<size_t>(from, 2);) {
    if (text[p - 1] == '\n' && graphic(text[p - 2]) && graphic(text[p])) return p;
  }
  return 0;
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// The peak resident memory of this process so far, in bytes (Linux reports ru_maxrss in KB).
int64_t peak_rss_bytes() {
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

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

// ---- where the tokens go ------------------------------------------------------------------------

// Receives the encoded documents in input order: the tokens of the current document (in any
// number of pieces), then the end of the document.
class TokenSink {
 public:
  virtual ~TokenSink() = default;
  virtual void append(const uint16_t* tokens, size_t n) = 0;
  virtual void end_document() = 0;
};

// Unshuffled Megatron output: straight into PREFIX.bin (the index lengths stay in memory).
class MegatronSink : public TokenSink {
 public:
  MegatronSink(const std::string& prefix, int32_t eod) : writer_(prefix), eod_(eod) {}
  void append(const uint16_t* tokens, size_t n) override { writer_.append_tokens(tokens, n); }
  void end_document() override { writer_.end_document(eod_); }  // no tokens: an empty document
  void finish() { writer_.finish(); }

 private:
  MegatronWriter writer_;
  int32_t eod_;
};

// Every document's text tokens back to back in input order (no end-of-document ids), 2 bytes each,
// in a temporary file that is unlinked as soon as it is created (nothing is left behind, whatever
// happens); the documents' ends stay in memory. Read back a document at a time with pread.
class TokenSpool : public TokenSink {
 public:
  explicit TokenSpool(const std::string& out_prefix) {
    const std::string path = out_prefix + ".spool.tmp." + std::to_string(::getpid());
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    check(fd_ >= 0, "cannot create " + path + ": " + std::strerror(errno));
    ::unlink(path.c_str());
    name_ = path;
    buffer_.reserve(kCopyTokens);
  }
  ~TokenSpool() override { ::close(fd_); }
  TokenSpool(const TokenSpool&) = delete;
  TokenSpool& operator=(const TokenSpool&) = delete;

  void append(const uint16_t* tokens, size_t n) override {
    if (buffer_.size() + n > kCopyTokens) drain();
    if (n > kCopyTokens) {
      write_all(tokens, n);
    } else {
      buffer_.insert(buffer_.end(), tokens, tokens + n);
    }
    num_tokens_ += static_cast<int64_t>(n);
  }
  void end_document() override { ends_.push_back(num_tokens_); }
  // The last tokens to disk; then the spool is read.
  void drain() {
    write_all(buffer_.data(), buffer_.size());
    buffer_.clear();
  }

  int64_t num_documents() const { return static_cast<int64_t>(ends_.size()); }
  int64_t num_tokens() const { return num_tokens_; }
  int64_t begin(int64_t d) const { return d == 0 ? 0 : ends_[static_cast<size_t>(d - 1)]; }
  int64_t length(int64_t d) const { return ends_[static_cast<size_t>(d)] - begin(d); }

  // Passes the tokens of document d to emit(pointer, count), at most kCopyTokens at a time.
  template <typename Emit>
  void read_document(int64_t d, const Emit& emit) {
    buffer_.resize(kCopyTokens);
    for (int64_t at = begin(d), end = ends_[static_cast<size_t>(d)]; at < end;) {
      const size_t n = static_cast<size_t>(std::min<int64_t>(end - at, kCopyTokens));
      char* p = reinterpret_cast<char*>(buffer_.data());
      for (size_t done = 0; done < 2 * n;) {
        const ssize_t r = ::pread(fd_, p + done, 2 * n - done, static_cast<off_t>(2 * at + done));
        if (r < 0 && errno == EINTR) continue;
        check(r > 0, "cannot read " + name_ + " (deleted): " +
                         (r < 0 ? std::strerror(errno) : "unexpected end of file"));
        done += static_cast<size_t>(r);
      }
      emit(buffer_.data(), n);
      at += static_cast<int64_t>(n);
    }
  }

 private:
  void write_all(const uint16_t* tokens, size_t n) {
    const char* p = reinterpret_cast<const char*>(tokens);
    for (size_t done = 0; done < 2 * n;) {
      const ssize_t r = ::write(fd_, p + done, 2 * n - done);
      if (r < 0 && errno == EINTR) continue;
      check(r > 0, "cannot write " + name_ +
                       " (the tokenize spool, 2 bytes a token next to the "
                       "output): " +
                       std::strerror(errno));
      done += static_cast<size_t>(r);
    }
  }

  int fd_ = -1;
  std::string name_;
  std::vector<uint16_t> buffer_;
  std::vector<int64_t> ends_;  // document d is tokens [begin(d), ends_[d])
  int64_t num_tokens_ = 0;
};

// ---- encoding -----------------------------------------------------------------------------------

// Text read but not yet encoded, a window of about kBatchBytes: encoded in parallel, then handed
// to the sink in input order.
class BatchEncoder {
 public:
  BatchEncoder(const TextEncoder& tok, TokenSink& sink, int threads, bool quiet)
      : tok_(tok), sink_(sink), threads_(threads), quiet_(quiet) {}

  // Queues a segment of a document: the whole document, or a part of it that ends at a safe split
  // point (ends_document false: more of the document follows). The name is for messages.
  void add(std::string text, bool ends_document, std::string name) {
    pending_bytes_ += text.size();
    segments_.push_back({std::move(text), std::move(name), ends_document});
    if (pending_bytes_ >= kBatchBytes) flush();
  }

  // Encodes the queued segments in parallel and hands their tokens to the sink in queue order.
  void flush() {
    struct Piece {
      size_t segment, begin, end;
    };
    std::vector<Piece> pieces;
    // Every byte of a document is text, a leading U+FEFF (byte-order mark) included, as tiktoken,
    // Python's UTF-8 readers and Megatron-LM's preprocessing keep it. An empty segment is one
    // piece of no bytes.
    for (size_t s = 0; s < segments_.size(); ++s) {
      const std::string_view text = segments_[s].text;
      size_t begin = 0;
      for (size_t p : safe_split_points(text, kPieceBytes)) {
        pieces.push_back({s, begin, p});
        begin = p;
      }
      pieces.push_back({s, begin, text.size()});
      text_bytes_ += static_cast<int64_t>(text.size());
    }
    std::vector<std::vector<uint16_t>> tokens(pieces.size());
    parallel_for(pieces.size(), threads_, [&](size_t i) {
      const Piece& p = pieces[i];
      if (p.end == p.begin) return;
      const Segment& seg = segments_[p.segment];
      const std::vector<int32_t> ids =
          tok_.encode(std::string_view(seg.text).substr(p.begin, p.end - p.begin));
      std::vector<uint16_t>& out = tokens[i];
      out.resize(ids.size());
      for (size_t k = 0; k < ids.size(); ++k) {
        const int32_t t = ids[k];
        if (t < 0 || t >= tok_.vocab_size() || t == tok_.eod()) {
          throw Error(seg.name + ": the " + tok_.name() + " tokenizer produced id " +
                      std::to_string(t) + (t == tok_.eod() ? " (its end-of-document id)" : "") +
                      " inside a document (vocabulary " + std::to_string(tok_.vocab_size()) + ")");
        }
        out[k] = static_cast<uint16_t>(t);
      }
    });
    for (size_t i = 0; i < pieces.size(); ++i) {
      const Segment& seg = segments_[pieces[i].segment];
      document_tokens_ += static_cast<int64_t>(tokens[i].size());
      check(document_tokens_ < std::numeric_limits<int32_t>::max(),
            seg.name +
                ": a document of more than 2^31 - 2 tokens does not fit the Megatron index "
                "(int32 lengths)");
      sink_.append(tokens[i].data(), tokens[i].size());
      tokens_ += static_cast<int64_t>(tokens[i].size());
      std::vector<uint16_t>().swap(tokens[i]);
      const bool last_piece = i + 1 == pieces.size() || pieces[i + 1].segment != pieces[i].segment;
      if (last_piece && seg.ends_document) {
        sink_.end_document();
        ++documents_;
        document_tokens_ = 0;
      }
    }
    segments_.clear();
    pending_bytes_ = 0;
    if (!quiet_ && text_bytes_ >= next_report_) {
      std::printf("tokenize: %.0f MB, %lld documents, %lld tokens so far\n", text_bytes_ / 1e6,
                  static_cast<long long>(documents_), static_cast<long long>(tokens_));
      std::fflush(stdout);
      next_report_ = text_bytes_ + (int64_t(256) << 20);
    }
  }

  int threads() const { return threads_; }
  int64_t text_bytes() const { return text_bytes_; }
  int64_t documents() const { return documents_; }
  int64_t tokens() const { return tokens_; }

 private:
  struct Segment {
    std::string text, name;
    bool ends_document;
  };
  const TextEncoder& tok_;
  TokenSink& sink_;
  int threads_;
  bool quiet_;
  std::vector<Segment> segments_;
  size_t pending_bytes_ = 0;
  int64_t text_bytes_ = 0, documents_ = 0, tokens_ = 0;
  int64_t document_tokens_ = 0;  // tokens of the document being handed over
  int64_t next_report_ = int64_t(256) << 20;
};

// ---- inputs -------------------------------------------------------------------------------------

enum class Compression { none, zstd, gzip };

// One input: a file or standard input, and what its name says it holds.
struct Input {
  std::string path;  // "" for standard input
  std::string name;  // for messages
  Compression compression = Compression::none;
  bool jsonl = false;
  bool sniff =
      false;  // not a regular file (a pipe): a compressed stream is recognised by its bytes
};

// What a file name says: .zst / .gz compression, then .jsonl or plain text.
Input input_named(const std::string& path) {
  Input in;
  in.path = in.name = path;
  std::string base = path;
  if (ends_with(base, ".zst")) {
    in.compression = Compression::zstd;
    base.resize(base.size() - 4);
  } else if (ends_with(base, ".gz")) {
    in.compression = Compression::gzip;
    base.resize(base.size() - 3);
  }
  in.jsonl = ends_with(base, ".jsonl");
  return in;
}

// Every input: files as named, directories walked recursively in sorted order, "-" and /dev/stdin
// as standard input (once), other files that are not regular (a named pipe) read as streams.
std::vector<Input> list_inputs(const TokenizeOptions& o) {
  std::vector<Input> inputs;
  bool have_stdin = false;
  for (const std::string& arg : o.inputs) {
    std::error_code ec;
    if (arg == "-" || arg == "/dev/stdin") {
      check(!have_stdin, "tokenize: standard input is named twice");
      have_stdin = true;
      Input in;
      in.name = "(standard input)";
      in.jsonl = o.stdin_format == "jsonl";
      in.sniff = true;
      inputs.push_back(in);
    } else if (fs::is_directory(arg, ec)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::recursive_directory_iterator(arg, ec))
        if (entry.is_regular_file()) found.push_back(entry.path().string());
      check(!ec, "tokenize: cannot read directory '" + arg + "': " + ec.message());
      std::sort(found.begin(), found.end());
      for (const std::string& f : found) inputs.push_back(input_named(f));
    } else {
      check(fs::exists(arg, ec), "tokenize: input '" + arg + "' does not exist");
      inputs.push_back(input_named(arg));
      inputs.back().sniff = !fs::is_regular_file(arg, ec);
    }
  }
  return inputs;
}

// A binary format recognised by its first bytes.
struct BinaryFormat {
  const char* what = nullptr;  // nullptr: none recognised
  Compression compression = Compression::none;
};

// What the first bytes of a stream say it is, when it is a known binary format.
BinaryFormat binary_format(const char* p, size_t n) {
  auto starts = [&](const char* magic, size_t len) {
    return n >= len && std::memcmp(p, magic, len) == 0;
  };
  if (starts("\x28\xb5\x2f\xfd", 4)) return {"a zstd-compressed stream", Compression::zstd};
  if (starts("\x1f\x8b", 2)) return {"a gzip-compressed stream", Compression::gzip};
  if (starts("\xfd"
             "7zXZ\0",
             6))
    return {"an xz-compressed stream"};
  if (starts("BZh", 3) && n >= 10 && std::memcmp(p + 4, "1AY&SY", 6) == 0)
    return {"a bzip2-compressed stream"};
  if (starts("PK\x03\x04", 4)) return {"a zip archive"};
  if (starts("\x7f"
             "ELF",
             4))
    return {"an ELF executable or library"};
  return {};
}

// Checks that bytes are UTF-8 text with no NUL byte, chunk by chunk (a character may straddle two
// chunks): the well-formed sequences of the Unicode standard (Table 3-7: no overlong forms, no
// surrogates, nothing above U+10FFFF). Errors name the input, the line and the byte offset.
class TextCheck {
 public:
  explicit TextCheck(std::string name) : name_(std::move(name)) {}

  void feed(const char* data, size_t n) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(data);
    size_t i = 0;
    while (i < n) {
      if (need_ == 0) {  // fast path: 8 ASCII bytes, none of them NUL
        const uint64_t high = 0x8080808080808080ull, ones = 0x0101010101010101ull;
        for (uint64_t v; i + 8 <= n; i += 8) {
          std::memcpy(&v, p + i, 8);
          if ((v & high) != 0 || ((v - ones) & ~v & high) != 0) break;
        }
        if (i == n) break;
      }
      const unsigned char c = p[i];
      if (need_ > 0) {
        if (c < lo_ || c > hi_) fail(data, i, "an invalid UTF-8 sequence", c);
        lo_ = 0x80;
        hi_ = 0xbf;
        --need_;
      } else if (c == 0) {
        fail(data, i, "a NUL byte", c);
      } else if (c < 0x80) {
        // ASCII
      } else if (c >= 0xc2 && c <= 0xdf) {
        expect(1, 0x80, 0xbf);
      } else if (c == 0xe0) {
        expect(2, 0xa0, 0xbf);
      } else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) {
        expect(2, 0x80, 0xbf);
      } else if (c == 0xed) {
        expect(2, 0x80, 0x9f);
      } else if (c == 0xf0) {
        expect(3, 0x90, 0xbf);
      } else if (c >= 0xf1 && c <= 0xf3) {
        expect(3, 0x80, 0xbf);
      } else if (c == 0xf4) {
        expect(3, 0x80, 0x8f);
      } else {
        fail(data, i, "an invalid UTF-8 sequence", c);
      }
      ++i;
    }
    line_ += std::count(data, data + n, '\n');
    offset_ += static_cast<int64_t>(n);
  }

  // At the end of the stream: no character may be cut off.
  void finish() {
    if (need_ > 0) fail(nullptr, 0, "a UTF-8 sequence cut off at the end", -1);
  }

 private:
  void expect(int need, unsigned char lo, unsigned char hi) {
    need_ = need;
    lo_ = lo;
    hi_ = hi;
  }
  // Error at byte i of the chunk `data` (the lines before it counted), `byte` its value (-1: none).
  [[noreturn]] void fail(const char* data, size_t i, const char* what, int byte) {
    const int64_t line = line_ + (data != nullptr ? std::count(data, data + i, '\n') : 0);
    char value[16] = "";
    if (byte >= 0) std::snprintf(value, sizeof(value), " (0x%02x)", byte);
    throw Error(name_ + ":" + std::to_string(line) + ": not UTF-8 text: " + what + value +
                " at byte offset " + std::to_string(offset_ + static_cast<int64_t>(i)) +
                "; binary input is refused (--allow-binary encodes its bytes as they are)");
  }

  std::string name_;
  int need_ = 0;                         // continuation bytes still expected
  unsigned char lo_ = 0x80, hi_ = 0xbf;  // the range of the next continuation byte
  int64_t offset_ = 0, line_ = 1;
};

// The bytes of one input, decompressed, read a chunk at a time; unless allow_binary, checked to be
// UTF-8 text (TextCheck) and refused when they start like a compressed stream or another binary
// format that the name does not announce.
class ByteSource {
 public:
  ByteSource(const Input& in, bool allow_binary) : in_(in), check_(in.name), raw_(kReadBytes) {
    if (in.path.empty()) {
      fd_ = 0;
    } else {
      fd_ = ::open(in.path.c_str(), O_RDONLY | O_CLOEXEC);
      check(fd_ >= 0, "cannot open " + in.name + ": " + std::strerror(errno));
    }
    // the first bytes (a pipe may give fewer than asked)
    while (raw_end_ < 16 && !raw_eof_) fill();
    compression_ = in.compression;
    const BinaryFormat format = binary_format(raw_.data(), raw_end_);
    if (compression_ == Compression::none && format.what != nullptr) {
      if (in.sniff && format.compression != Compression::none) {
        compression_ = format.compression;  // a pipe has no name to say so
      } else if (!allow_binary) {
        const char* hint = format.compression == Compression::zstd
                               ? " (name it .zst, or pipe it in: zstdcat FILE | unipool tokenize -)"
                           : format.compression == Compression::gzip
                               ? " (name it .gz, or pipe it in: zcat FILE | unipool tokenize -)"
                               : "";
        throw Error(in.name + ": " + format.what + ", not text" + hint +
                    "; binary input is refused (--allow-binary encodes its bytes as they are)");
      }
    }
    check_text_ = !allow_binary;
    if (compression_ == Compression::zstd) {
      zstd_ = ZSTD_createDStream();
      check(zstd_ != nullptr, in.name + ": cannot create a zstd decoder");
      ZSTD_initDStream(zstd_);
    } else if (compression_ == Compression::gzip) {
      std::memset(&gzip_, 0, sizeof(gzip_));
      check(inflateInit2(&gzip_, 15 + 16) == Z_OK, in.name + ": cannot create a gzip decoder");
      gzip_open_ = true;
    }
  }
  ~ByteSource() {
    if (fd_ > 0) ::close(fd_);
    if (zstd_ != nullptr) ZSTD_freeDStream(zstd_);
    if (gzip_open_) inflateEnd(&gzip_);
  }
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  // Appends up to kReadBytes decompressed bytes to `out`; false at the end of the input.
  bool read_into(std::string& out) {
    const size_t at = out.size();
    out.resize(at + kReadBytes);
    const size_t n = read(&out[at], kReadBytes);
    out.resize(at + n);
    if (n > 0 && check_text_) check_.feed(out.data() + at, n);
    if (n == 0 && check_text_) check_.finish();
    return n > 0;
  }

  int64_t raw_bytes() const { return raw_total_; }

 private:
  // Reads raw bytes after those in raw_ (moving what is left to the front first).
  void fill() {
    if (raw_eof_) return;
    if (raw_pos_ > 0) {
      std::memmove(raw_.data(), raw_.data() + raw_pos_, raw_end_ - raw_pos_);
      raw_end_ -= raw_pos_;
      raw_pos_ = 0;
    }
    if (raw_end_ == raw_.size()) return;
    ssize_t r;
    do {
      r = ::read(fd_, raw_.data() + raw_end_, raw_.size() - raw_end_);
    } while (r < 0 && errno == EINTR);
    check(r >= 0, "cannot read " + in_.name + ": " + std::strerror(errno));
    if (r == 0) raw_eof_ = true;
    raw_end_ += static_cast<size_t>(r);
    raw_total_ += r;
  }
  bool raw_empty() const { return raw_pos_ == raw_end_; }

  // Up to n decompressed bytes into out; 0 at the end.
  size_t read(char* out, size_t n) {
    if (compression_ == Compression::none) {
      if (raw_empty()) fill();
      const size_t k = std::min(n, raw_end_ - raw_pos_);
      std::memcpy(out, raw_.data() + raw_pos_, k);
      raw_pos_ += k;
      return k;
    }
    if (compression_ == Compression::zstd) {
      for (;;) {
        if (raw_empty()) fill();
        ZSTD_inBuffer src{raw_.data() + raw_pos_, raw_end_ - raw_pos_, 0};
        ZSTD_outBuffer dst{out, n, 0};
        const size_t r = ZSTD_decompressStream(zstd_, &dst, &src);
        if (ZSTD_isError(r))
          throw Error(in_.name + ": not a valid zstd stream: " + ZSTD_getErrorName(r));
        raw_pos_ += src.pos;
        if (src.pos > 0 || dst.pos > 0) zstd_frame_done_ = r == 0;  // 0: a frame ended, flushed
        if (dst.pos > 0) return dst.pos;
        if (raw_empty() && raw_eof_) {
          check(zstd_frame_done_,
                in_.name + ": the zstd stream is truncated (it ends inside a frame)");
          return 0;
        }
      }
    }
    for (;;) {  // gzip
      if (raw_empty()) fill();
      if (gzip_member_done_) {
        if (raw_empty() && raw_eof_) return 0;
        inflateReset(&gzip_);  // another member follows (as `cat a.gz b.gz` makes)
        gzip_member_done_ = false;
      }
      gzip_.next_in = reinterpret_cast<Bytef*>(raw_.data() + raw_pos_);
      gzip_.avail_in = static_cast<uInt>(raw_end_ - raw_pos_);
      gzip_.next_out = reinterpret_cast<Bytef*>(out);
      gzip_.avail_out = static_cast<uInt>(n);
      const int r = inflate(&gzip_, Z_NO_FLUSH);
      if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR) {
        throw Error(in_.name + ": not a valid gzip stream: " +
                    (gzip_.msg != nullptr ? gzip_.msg : "error " + std::to_string(r)));
      }
      raw_pos_ = raw_end_ - gzip_.avail_in;
      if (r == Z_STREAM_END) gzip_member_done_ = true;
      const size_t produced = n - gzip_.avail_out;
      if (produced > 0) return produced;
      if (!gzip_member_done_ && raw_empty() && raw_eof_)
        throw Error(in_.name + ": the gzip stream is truncated");
    }
  }

  Input in_;
  TextCheck check_;
  bool check_text_ = true;
  int fd_ = -1;
  std::vector<char> raw_;
  size_t raw_pos_ = 0, raw_end_ = 0;
  bool raw_eof_ = false;
  int64_t raw_total_ = 0;
  Compression compression_ = Compression::none;
  ZSTD_DStream* zstd_ = nullptr;
  bool zstd_frame_done_ = false;  // the last call that made progress ended a frame
  z_stream gzip_;
  bool gzip_open_ = false, gzip_member_done_ = false;
};

// ---- readers: bytes → document segments ---------------------------------------------------------

// JSONL, block by block, each block about kBatchBytes of whole lines: the lines of a block are
// parsed in parallel and their `key` fields queued as documents.
void read_jsonl(ByteSource& src, const std::string& name, const std::string& key,
                BatchEncoder& enc) {
  std::string block;  // one buffer: the lines of this block, then the start of the next line
  block.reserve(kBatchBytes + 2 * kReadBytes);
  int64_t first_line = 1;  // line number of the block's first line
  bool more = true;
  while (more) {
    // fill: at least kBatchBytes, and then up to a line end (or the end of the input)
    size_t end = 0;      // the block is block[0, end)
    size_t scanned = 0;  // no '\n' in block[0, scanned)
    while (end == 0 && (more = src.read_into(block))) {
      if (block.size() < kBatchBytes) continue;
      const void* last = ::memrchr(block.data() + scanned, '\n', block.size() - scanned);
      if (last != nullptr) end = static_cast<const char*>(last) - block.data() + 1;
      scanned = block.size();  // one long line: only the bytes read next are searched
    }
    if (end == 0) end = block.size();  // the end of the input
    // split into lines, parse in parallel
    std::vector<std::string_view> lines;
    for (size_t pos = 0; pos < end;) {
      size_t nl = block.find('\n', pos);
      if (nl == std::string::npos || nl > end) nl = end;
      lines.emplace_back(block.data() + pos, nl - pos);
      pos = nl + 1;
    }
    std::vector<std::string> texts(lines.size());
    std::vector<char> is_document(lines.size(), 0);  // blank lines are not documents
    parallel_for(lines.size(), enc.threads(), [&](size_t i) {
      const std::string_view line = lines[i];
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;  // blank line
      const std::string where = name + ":" + std::to_string(first_line + int64_t(i));
      check_json_depth(line, where);
      auto j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
      check(!j.is_discarded(), where + ": not valid JSON (or not valid UTF-8)");
      const auto field = j.is_object() ? j.find(key) : j.end();
      check(field != j.end() && field->is_string(),
            where + ": expected a JSON object with a \"" + key + "\" string");
      texts[i] = std::move(field->get_ref<std::string&>());
      is_document[i] = 1;
    });
    for (size_t i = 0; i < lines.size(); ++i) {
      if (is_document[i])  // {"text": ""} is an (empty) document
        enc.add(std::move(texts[i]), true, name + ":" + std::to_string(first_line + int64_t(i)));
    }
    first_line += static_cast<int64_t>(lines.size());
    block.erase(0, end);  // keeps the start of the next line
  }
}

// Queues the front of a growing document `text` once it holds kSegmentBytes: everything before its
// last safe split point, as a segment that does not end the document. `scanned`: the split points
// below it were looked for already.
void queue_front(std::string& text, size_t& scanned, const std::string& name, BatchEncoder& enc) {
  if (text.size() < kSegmentBytes) return;
  const size_t p = last_safe_split_point(text, scanned);
  if (p == 0) {
    scanned = text.size();
    return;
  }
  enc.add(text.substr(0, p), false, name);
  text.erase(0, p);
  scanned = text.size();
}

// Plain text: the whole input is one document, or, with a separator, documents are separated by
// lines equal to it (split_documents' rule, streamed: empty documents are dropped, every line of a
// document keeps a '\n', a last line without one included). A long document is queued in segments.
void read_plain(ByteSource& src, const std::string& name, const std::string& separator,
                BatchEncoder& enc) {
  std::string text;
  size_t scanned = 0;
  if (separator.empty()) {
    while (src.read_into(text)) queue_front(text, scanned, name, enc);
    enc.add(std::move(text), true, name);  // an empty input is an empty document
    return;
  }
  std::string chunk;
  int64_t number = 0;    // documents queued
  bool started = false;  // a segment of the current document was queued
  auto document_name = [&] { return name + " (document " + std::to_string(number + 1) + ")"; };
  auto end_document = [&] {
    if (text.empty() && !started) return;  // empty: dropped
    enc.add(std::move(text), true, document_name());
    text.clear();
    scanned = 0;
    started = false;
    ++number;
  };
  auto take_line = [&](std::string_view line) {
    if (line == separator) {
      end_document();
      return;
    }
    text.append(line);
    text += '\n';
    if (text.size() >= kSegmentBytes) {
      const size_t before = text.size();
      queue_front(text, scanned, document_name(), enc);
      started = started || text.size() < before;
    }
  };
  bool more = true;
  while (more) {
    more = src.read_into(chunk);
    size_t pos = 0;
    for (size_t nl; (nl = chunk.find('\n', pos)) != std::string::npos; pos = nl + 1)
      take_line(std::string_view(chunk).substr(pos, nl - pos));
    chunk.erase(0, pos);  // a partial line waits for the next read
  }
  if (!chunk.empty()) take_line(chunk);  // a last line without '\n'
  end_document();
}

// ---- outputs ------------------------------------------------------------------------------------

// Megatron PREFIX.bin/.idx (docs/data.md §Token files (Megatron)): the spooled documents in
// `order`, the EOD appended to each.
void write_megatron_from(TokenSpool& spool, const std::string& prefix,
                         const std::vector<int64_t>& order, int32_t eod) {
  MegatronWriter writer(prefix);
  for (const int64_t d : order) {
    // an empty document gets no tokens: end_document makes it a document with no sequence
    spool.read_document(d, [&](const uint16_t* p, size_t n) { writer.append_tokens(p, n); });
    writer.end_document(eod);
  }
  writer.finish();
}

// llm.c shard (docs/data.md §Token files (llm.c)): spooled documents order[lo, hi), each preceded
// by EOT 50256.
void write_llmc_part(TokenSpool& spool, const std::string& path, const std::vector<int64_t>& order,
                     int64_t lo, int64_t hi) {
  // An empty document has no tokens: nothing is written for it (llm.c has no document index).
  int64_t ntok = 0;
  for (int64_t i = lo; i < hi; ++i) {
    const int64_t n = spool.length(order[static_cast<size_t>(i)]);
    ntok += n > 0 ? 1 + n : 0;
  }
  LlmcWriter writer(path, ntok);
  const uint16_t eot = static_cast<uint16_t>(kGpt2Eot);
  for (int64_t i = lo; i < hi; ++i) {
    const int64_t d = order[static_cast<size_t>(i)];
    if (spool.length(d) == 0) continue;
    writer.add(&eot, 1);
    spool.read_document(d, [&](const uint16_t* p, size_t n) { writer.add(p, n); });
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
  check(o.stdin_format == "jsonl" || o.stdin_format == "text",
        "tokenize: unknown --stdin-format '" + o.stdin_format + "' (expected jsonl or text)");
  check(!o.json_key.empty(), "tokenize: --json-key must not be empty");
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
  const std::vector<Input> inputs = list_inputs(o);

  const auto t0 = std::chrono::steady_clock::now();
  const TextEncoder tok(o);
  check(tok.vocab_size() <= 65536, "tokenize: vocabulary too large for uint16 shards");
  const std::string parent = fs::path(o.out_prefix).parent_path().string();
  if (!parent.empty()) make_dirs(parent);

  // Where the tokens go: unshuffled Megatron output straight into its file, else a spool.
  const bool direct = megatron && !llmc && !o.shuffle;
  std::unique_ptr<MegatronSink> megatron_sink;
  std::unique_ptr<TokenSpool> spool;
  TokenSink* sink;
  if (direct) {
    megatron_sink = std::make_unique<MegatronSink>(o.out_prefix, tok.eod());
    sink = megatron_sink.get();
  } else {
    spool = std::make_unique<TokenSpool>(o.out_prefix);
    sink = spool.get();
  }

  // read and encode, in input order
  BatchEncoder enc(tok, *sink, threads, o.quiet);
  int64_t input_bytes = 0;
  for (const Input& in : inputs) {
    ByteSource src(in, o.allow_binary);
    if (in.jsonl) {
      read_jsonl(src, in.name, o.json_key, enc);
    } else {
      read_plain(src, in.name, o.doc_separator, enc);
    }
    input_bytes += src.raw_bytes();
  }
  enc.flush();
  const auto t_encoded = std::chrono::steady_clock::now();
  const int64_t num_docs = enc.documents();
  if (num_docs == 0 || enc.tokens() == 0) {  // as Megatron-LM: an empty dataset, said
    std::fprintf(stderr, "tokenize: warning: %s: the dataset written holds no tokens\n",
                 num_docs == 0 ? "the inputs hold no documents" : "every document is empty");
  }
  const std::array<int64_t, 4> bounds = split_indices(split_weights, num_docs);

  // write
  TokenizeStats stats;
  stats.documents = num_docs;
  stats.text_bytes = enc.text_bytes();
  stats.tokens = enc.tokens();
  stats.input_bytes = input_bytes;
  for (int p = 0; p < 3; ++p) stats.part_documents[p] = bounds[p + 1] - bounds[p];
  if (direct) {
    megatron_sink->finish();
  } else {
    spool->drain();
    stats.spool_bytes = 2 * spool->num_tokens();
    // a seeded Fisher–Yates shuffle of the documents (base/random.h, unbiased)
    std::vector<int64_t> order(static_cast<size_t>(num_docs));
    for (int64_t i = 0; i < num_docs; ++i) order[static_cast<size_t>(i)] = i;
    if (o.shuffle) {
      SplitMix64 rng{o.shuffle_seed};
      shuffle(order.data(), order.size(), rng);
    }
    if (megatron) write_megatron_from(*spool, o.out_prefix, order, tok.eod());
    if (llmc) {
      const char* suffix[3] = {"_train.bin", "_val.bin", "_test.bin"};
      for (int p = 0; p < 3; ++p) {
        const std::string path = o.out_prefix + suffix[p];
        if (bounds[p + 1] > bounds[p]) {
          write_llmc_part(*spool, path, order, bounds[p], bounds[p + 1]);
        } else if (path_exists(path)) {
          fs::remove(path);  // a stale part of an earlier run would not match this split
          if (!o.quiet) std::printf("tokenize: removed stale %s (empty part)\n", path.c_str());
        }
      }
    }
  }
  if (megatron) {
    stats.files.push_back(o.out_prefix + ".bin");
    stats.files.push_back(o.out_prefix + ".idx");
  }
  if (llmc) {
    const char* suffix[3] = {"_train.bin", "_val.bin", "_test.bin"};
    for (int p = 0; p < 3; ++p)
      if (bounds[p + 1] > bounds[p]) stats.files.push_back(o.out_prefix + suffix[p]);
  }
  spool.reset();
  const auto t_end = std::chrono::steady_clock::now();
  stats.seconds = std::chrono::duration<double>(t_end - t0).count();
  stats.peak_rss_bytes = peak_rss_bytes();
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
    std::printf("tokenize: read + encode %.2f s (%.1f MB/s of text, %s read), %s %.2f s\n",
                encode_s, stats.text_bytes / 1e6 / std::max(encode_s, 1e-9),
                mb(stats.input_bytes).c_str(), direct ? "finish" : "shuffle + write", write_s);
    std::printf("tokenize: split %s → train %lld | valid %lld | test %lld documents%s\n",
                o.split.c_str(), static_cast<long long>(stats.part_documents[0]),
                static_cast<long long>(stats.part_documents[1]),
                static_cast<long long>(stats.part_documents[2]),
                o.shuffle ? "" : " (input order, not shuffled)");
    for (const std::string& f : stats.files) std::printf("tokenize: wrote %s\n", f.c_str());
    std::printf("tokenize: peak memory %s (ru_maxrss); temporary disk %s%s\n",
                mb(stats.peak_rss_bytes).c_str(), mb(stats.spool_bytes).c_str(),
                direct ? " (written straight out)" : " (token spool, removed)");
  }
  return stats;
}

}  // namespace unipool::data
