// Token shards on disk: validated, memory-mapped readers and byte-exact writers for the two formats
// unipool trains on (layouts byte by byte in docs/data.md).
//
// Megatron-LM indexed dataset, PREFIX.idx + PREFIX.bin, all little-endian:
//   .idx  0: "MMIDIDX\0\0" (9 bytes)   9: u64 version = 1   17: u8 dtype code (8 uint16, 4 int32)
//        18: u64 N sequences   26: u64 D = documents + 1
//        34: int32 lengths[N] (tokens)   34+4N: int64 pointers[N] (BYTE offsets into .bin)
//        34+12N: int64 document_indices[D] (first sequence of each document; 0 first, N last)
//        size exactly 34 + 12N + 8D (the arrays are unaligned: they are read with memcpy)
//   .bin  the sequences' tokens back to back, no header, size exactly sum(lengths) * itemsize.
//   Document d is the sequences [doc_idx[d], doc_idx[d+1]). Writers append the EOD (50256)
//   themselves.
//
// karpathy/llm.c token shard, one .bin:
//   256 int32 header (1024 bytes): [0] magic, [1] version, [2] token count; then the tokens.
//   magic 20240520 version 1: uint16 tokens (GPT-2);  magic 20240801 version 7: uint32 tokens
//   (LLaMA-3). size exactly 1024 + ntok * itemsize. There is no document index: llm.c's writers put
//   a delimiter BEFORE each document (EOT 50256 for GPT-2; BOS 128000 for the uint32 LLaMA-3
//   shards), so a document starts at every delimiter and at token 0.
//
// TokenFile::open checks every invariant and throws unipool::Error naming the file and the problem;
// a corrupt file never crashes the reader or makes it read out of bounds. Token ids are NOT checked
// against a vocabulary here (that would read the whole file): the Loader checks each token it
// reads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace unipool::data {

enum class ShardFormat { megatron, llmc };
ShardFormat parse_shard_format(const std::string& s);  // "megatron" | "llmc", else Error
const char* shard_format_name(ShardFormat f);

constexpr int32_t kGpt2Eot = 50256;              // GPT-2 <|endoftext|>
constexpr int32_t kLlama3Bos = 128000;           // LLaMA-3 <|begin_of_text|> (llm.c uint32 shards)
constexpr uint32_t kLlmcMagicGpt2 = 20240520;    // version 1, uint16 tokens
constexpr uint32_t kLlmcMagicLlama3 = 20240801;  // version 7, uint32 tokens
constexpr int kLlmcHeaderInts = 256;             // 1024-byte header

// A read-only memory mapping of a whole file (POSIX mmap); move-only, unmapped in the destructor.
class MappedFile {
 public:
  MappedFile() = default;
  static MappedFile open(const std::string& path);  // Error "cannot open PATH: <strerror>"
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }  // nullptr for an empty file
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// A read-only, memory-mapped token file with a document structure, validated on open.
class TokenFile {
 public:
  // megatron: path is a PREFIX (reads PREFIX.idx and PREFIX.bin). llmc: path is the .bin file.
  static TokenFile open(const std::string& path, ShardFormat format);

  const std::string& name() const { return name_; }              // prefix or path, for messages
  const std::string& token_path() const { return token_path_; }  // the file holding the tokens
  ShardFormat format() const { return format_; }
  int itemsize() const { return itemsize_; }  // bytes per token on disk: 2 or 4
  int64_t num_documents() const;
  int64_t num_tokens() const { return num_tokens_; }
  // Token offsets of document doc in the token stream, doc in [0, num_documents()); the documents
  // tile the stream: document_end(d) == document_begin(d + 1), document_end(last) == num_tokens().
  int64_t document_begin(int64_t doc) const;
  int64_t document_end(int64_t doc) const;
  int32_t token(int64_t i) const;  // i-th token of the whole stream (documents back to back)
  void read_tokens(int64_t begin, int64_t count, int32_t* out) const;  // bounds-checked

  TokenFile(TokenFile&&) noexcept = default;
  TokenFile& operator=(TokenFile&&) noexcept = default;
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

 private:
  TokenFile() = default;
  static TokenFile open_megatron(const std::string& prefix);
  static TokenFile open_llmc(const std::string& path);
  int64_t doc_start(
      int64_t d) const;  // d in [0, num_documents()]: the token offset, num_tokens at the end

  std::string name_, token_path_;
  ShardFormat format_ = ShardFormat::megatron;
  int itemsize_ = 2;
  bool is_unsigned32_ =
      false;        // llm.c version 7: uint32 tokens (values >= 2^31 are rejected on read)
  MappedFile bin_;  // the token file, kept mapped
  const uint8_t* tokens_ = nullptr;  // first token byte inside bin_
  int64_t num_tokens_ = 0;
  // megatron: the .idx stays mapped; document starts are looked up in it (no per-document memory)
  MappedFile idx_;
  int64_t num_sequences_ = 0, doc_count_ = 0;  // N and D (= documents + 1)
  // llmc: document start offsets found by scanning for the delimiter, plus num_tokens at the end
  std::vector<int64_t> llmc_doc_starts_;
};

// Streaming writers (the one place that knows the on-disk layouts); both files of a shard are
// written to temporary names, fsynced and renamed into place by finish() (base/fsutil.h
// AtomicFile), so a failed write never leaves a half shard. `unipool tokenize` streams corpora
// through them.
class MegatronWriter {
 public:
  explicit MegatronWriter(const std::string& prefix);
  ~MegatronWriter();
  MegatronWriter(const MegatronWriter&) = delete;
  MegatronWriter& operator=(const MegatronWriter&) = delete;
  // One document = one sequence: its n tokens, then `eod` when eod >= 0.
  void add_document(const uint16_t* tokens, size_t n, int32_t eod = -1);
  // A document with no sequence (an empty text, as Megatron-LM's preprocessing writes it: no
  // tokens, not even the EOD): document_indices repeats the previous entry.
  void add_empty_document();
  // A document given in pieces (one larger than memory): append_tokens any number of times, then
  // end_document, which appends `eod` (when eod >= 0) and closes the sequence. A document that got
  // no tokens is an empty document (add_empty_document: no sequence, no EOD).
  void append_tokens(const uint16_t* tokens, size_t n);
  void end_document(int32_t eod = -1);
  void finish();  // writes PREFIX.idx, commits PREFIX.bin and PREFIX.idx

 private:
  struct Files;
  std::string prefix_;
  Files* files_;
  // The index in memory is 4 bytes a sequence: pointers and document indices follow from the
  // lengths and the (rare) empty documents, and are computed while finish() writes them.
  std::vector<int32_t> lengths_;
  std::vector<int64_t> empty_documents_;  // numbers of the documents with no sequence, ascending
  int64_t num_documents_ = 0;
  int64_t open_length_ = 0;  // tokens appended to the document not yet ended
};

// llm.c shard, magic 20240520 version 1, uint16 tokens; the token count goes in the header first.
class LlmcWriter {
 public:
  LlmcWriter(const std::string& path, int64_t num_tokens);  // Error unless 0 <= count < 2^31
  ~LlmcWriter();
  LlmcWriter(const LlmcWriter&) = delete;
  LlmcWriter& operator=(const LlmcWriter&) = delete;
  void add(const uint16_t* tokens, size_t n);
  void finish();  // Error when fewer or more tokens than announced were added

 private:
  struct Files;
  std::string path_;
  Files* files_;
  int64_t expected_, written_ = 0;
};

// Megatron PREFIX.bin + PREFIX.idx with uint16 tokens (dtype code 8), one sequence per document,
// exactly the bytes of docs/data.md §Token files (Megatron). Documents are written as given (no EOD is appended here).
// Every token must be in [0, 65536), else Error.
void write_megatron(const std::string& prefix, const std::vector<std::vector<int32_t>>& documents);
// llm.c shard: magic 20240520, version 1, uint16 tokens in [0, 65536), fewer than 2^31 of them.
void write_llmc(const std::string& path, const std::vector<int32_t>& tokens);

}  // namespace unipool::data
