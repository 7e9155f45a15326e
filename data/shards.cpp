// Readers and writers of Megatron (.idx/.bin) and llm.c (.bin) token shards; formats in shards.h.
// All multi-byte fields are little-endian and read with memcpy (the .idx arrays are unaligned).
#include "data/shards.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "base/error.h"
#include "base/fsutil.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "unipool's shard readers assume a little-endian host"
#endif

namespace unipool::data {

namespace {

const char kMegatronMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
const char kLegacyMagic[8] = {'T', 'N', 'T', 'I', 'D', 'X', 0, 0};
constexpr size_t kMegatronHeader = 34;
constexpr uint8_t kDtypeInt32 = 4;
constexpr uint8_t kDtypeUint16 = 8;

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

const char* dtype_name(uint8_t code) {
  switch (code) {
    case 1:
      return "uint8";
    case 2:
      return "int8";
    case 3:
      return "int16";
    case 4:
      return "int32";
    case 5:
      return "int64";
    case 6:
      return "float64 or float32 (ambiguous)";
    case 7:
      return "float32 or float64 (ambiguous)";
    case 8:
      return "uint16";
    default:
      return "unknown";
  }
}

// A file opened for writing whose every write is checked; errors name the file.
void check_uint16_token(const std::string& path, int32_t t, size_t pos) {
  if (t < 0 || t > 65535) {
    throw Error(path + ": token id " + std::to_string(t) + " at token " + std::to_string(pos) +
                " does not fit the uint16 token format (must be in [0, 65536))");
  }
}

}  // namespace

// ----------------------------------------------------------------------------------------------
// formats

ShardFormat parse_shard_format(const std::string& s) {
  if (s == "megatron") return ShardFormat::megatron;
  if (s == "llmc") return ShardFormat::llmc;
  throw Error("unknown shard format \"" + s + "\" (expected megatron or llmc)");
}

const char* shard_format_name(ShardFormat f) {
  return f == ShardFormat::megatron ? "megatron" : "llmc";
}

// ----------------------------------------------------------------------------------------------
// MappedFile

MappedFile MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error("cannot stat " + path + ": " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("cannot open " + path + ": not a regular file");
  }
  MappedFile m;
  m.size_ = static_cast<size_t>(st.st_size);
  if (m.size_ > 0) {  // mmap of length 0 is an error; an empty file maps to nullptr
    void* p = ::mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw Error("cannot mmap " + path + ": " + std::strerror(e));
    }
    m.data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
  return m;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& o) noexcept : data_(o.data_), size_(o.size_) {
  o.data_ = nullptr;
  o.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

// ----------------------------------------------------------------------------------------------
// TokenFile: opening and validation

TokenFile TokenFile::open(const std::string& path, ShardFormat format) {
  return format == ShardFormat::megatron ? open_megatron(path) : open_llmc(path);
}

TokenFile TokenFile::open_megatron(const std::string& prefix) {
  const std::string idx_path = prefix + ".idx", bin_path = prefix + ".bin";
  TokenFile f;
  f.name_ = prefix;
  f.token_path_ = bin_path;
  f.format_ = ShardFormat::megatron;
  f.idx_ = MappedFile::open(idx_path);
  const uint8_t* idx = f.idx_.data();
  const size_t idx_size = f.idx_.size();

  // header
  if (idx_size >= sizeof(kLegacyMagic) &&
      std::memcmp(idx, kLegacyMagic, sizeof(kLegacyMagic)) == 0) {
    throw Error(idx_path +
                ": bad magic TNTIDX: a legacy (non-mmap) Megatron index, not supported "
                "(expected MMIDIDX)");
  }
  if (idx_size < kMegatronHeader) {
    if (idx_size < sizeof(kMegatronMagic) ||
        std::memcmp(idx, kMegatronMagic, sizeof(kMegatronMagic)) != 0) {
      throw Error(idx_path + ": bad magic (expected MMIDIDX), not a Megatron index file (" +
                  std::to_string(idx_size) + " bytes)");
    }
    throw Error(idx_path + ": truncated: " + std::to_string(idx_size) +
                " bytes, a Megatron index header needs " + std::to_string(kMegatronHeader));
  }
  if (std::memcmp(idx, kMegatronMagic, sizeof(kMegatronMagic)) != 0) {
    throw Error(idx_path + ": bad magic (expected MMIDIDX), not a Megatron index file");
  }
  const uint64_t version = load<uint64_t>(idx + 9);
  if (version != 1) {
    throw Error(idx_path + ": unsupported version " + std::to_string(version) + " (expected 1)");
  }
  const uint8_t dtype = idx[17];
  if (dtype != kDtypeUint16 && dtype != kDtypeInt32) {
    throw Error(idx_path + ": unsupported dtype code " + std::to_string(dtype) + " (" +
                dtype_name(dtype) + "); token files must be uint16 (code 8) or int32 (code 4)");
  }
  f.itemsize_ = dtype == kDtypeUint16 ? 2 : 4;
  const uint64_t n = load<uint64_t>(idx + 18);
  const uint64_t d = load<uint64_t>(idx + 26);

  // size: exactly 34 + 12N + 8D, computed without overflow (N and D come from the file)
  const uint64_t room = idx_size - kMegatronHeader;
  const std::string counts =
      "N=" + std::to_string(n) + " sequences, D=" + std::to_string(d) + " document indices";
  if (d == 0) throw Error(idx_path + ": document count D is 0 (must be >= 1: documents + 1)");
  if (n > room / 12 || d > (room - 12 * n) / 8) {
    throw Error(idx_path + ": truncated: header says " + counts + ", which needs more than the " +
                std::to_string(idx_size) + " bytes the file has");
  }
  const uint64_t expected = kMegatronHeader + 12 * n + 8 * d;
  if (expected != idx_size) {
    throw Error(idx_path + ": size mismatch: header says " + counts + " so the index is " +
                std::to_string(expected) + " bytes (34 + 12N + 8D), file has " +
                std::to_string(idx_size) +
                " (trailing bytes; multimodal sequence_modes are not supported)");
  }
  f.num_sequences_ = static_cast<int64_t>(n);
  f.doc_count_ = static_cast<int64_t>(d);

  // sequences: lengths >= 0, pointers a running byte sum from 0
  const uint8_t* lengths = idx + kMegatronHeader;
  const uint8_t* pointers = lengths + 4 * n;
  const uint8_t* doc_idx = pointers + 8 * n;
  int64_t expected_ptr = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const int32_t len = load<int32_t>(lengths + 4 * i);
    const int64_t ptr = load<int64_t>(pointers + 8 * i);
    if (len < 0) {
      throw Error(idx_path + ": sequence " + std::to_string(i) + " has negative length " +
                  std::to_string(len));
    }
    if (ptr != expected_ptr) {
      throw Error(idx_path + ": sequence " + std::to_string(i) + " pointer " + std::to_string(ptr) +
                  " != " + std::to_string(expected_ptr) +
                  " (pointers are byte offsets: previous pointer + length * " +
                  std::to_string(f.itemsize_) + ")");
    }
    const int64_t bytes = static_cast<int64_t>(len) * f.itemsize_;
    if (expected_ptr > std::numeric_limits<int64_t>::max() - bytes) {
      throw Error(idx_path + ": sequence lengths sum past 2^63 bytes at sequence " +
                  std::to_string(i));
    }
    expected_ptr += bytes;
  }

  // documents: start at 0, non-decreasing, end at N
  int64_t prev = 0;
  for (uint64_t i = 0; i < d; ++i) {
    const int64_t s = load<int64_t>(doc_idx + 8 * i);
    if (i == 0 && s != 0) {
      throw Error(idx_path + ": document_indices must start at 0, found " + std::to_string(s));
    }
    if (s < prev) {
      throw Error(idx_path + ": document_indices decrease at entry " + std::to_string(i) + " (" +
                  std::to_string(prev) + " then " + std::to_string(s) + ")");
    }
    if (s > f.num_sequences_) {
      throw Error(idx_path + ": document_indices entry " + std::to_string(i) + " is " +
                  std::to_string(s) + ", past the sequence count N=" + std::to_string(n));
    }
    prev = s;
  }
  if (prev != f.num_sequences_) {
    throw Error(idx_path + ": document_indices must end at the sequence count N=" +
                std::to_string(n) + ", found " + std::to_string(prev));
  }

  // .bin: exactly the bytes the index describes
  f.bin_ = MappedFile::open(bin_path);
  const uint64_t bin_size = f.bin_.size();
  if (bin_size != static_cast<uint64_t>(expected_ptr)) {
    throw Error(
        bin_path +
        (bin_size < static_cast<uint64_t>(expected_ptr) ? ": truncated" : ": size mismatch") +
        ": index says " + std::to_string(expected_ptr) + " bytes, file has " +
        std::to_string(bin_size));
  }
  f.num_tokens_ = expected_ptr / f.itemsize_;
  if (f.num_tokens_ == 0) throw Error(prefix + ": shard is empty (0 tokens in " + bin_path + ")");
  f.tokens_ = f.bin_.data();
  return f;
}

TokenFile TokenFile::open_llmc(const std::string& path) {
  TokenFile f;
  f.name_ = path;
  f.token_path_ = path;
  f.format_ = ShardFormat::llmc;
  f.bin_ = MappedFile::open(path);
  const uint8_t* p = f.bin_.data();
  const uint64_t size = f.bin_.size();
  const uint64_t header = kLlmcHeaderInts * 4;
  if (size < 4 || (load<uint32_t>(p) != kLlmcMagicGpt2 && load<uint32_t>(p) != kLlmcMagicLlama3)) {
    throw Error(path + ": bad magic " +
                (size < 4 ? std::string("(file too short)") : std::to_string(load<uint32_t>(p))) +
                " (expected " + std::to_string(kLlmcMagicGpt2) + " or " +
                std::to_string(kLlmcMagicLlama3) + "), not an llm.c token shard");
  }
  if (size < header) {
    throw Error(path + ": truncated: " + std::to_string(size) + " bytes, an llm.c header needs " +
                std::to_string(header));
  }
  const uint32_t magic = load<uint32_t>(p);
  const int32_t version = load<int32_t>(p + 4);
  const int32_t ntok = load<int32_t>(p + 8);
  const int32_t expected_version = magic == kLlmcMagicGpt2 ? 1 : 7;
  if (version != expected_version) {
    throw Error(path + ": unsupported version " + std::to_string(version) + " for magic " +
                std::to_string(magic) + " (expected " + std::to_string(expected_version) + ")");
  }
  f.itemsize_ = magic == kLlmcMagicGpt2 ? 2 : 4;
  f.is_unsigned32_ = magic == kLlmcMagicLlama3;
  if (ntok < 0)
    throw Error(path + ": negative token count " + std::to_string(ntok) + " in the header");
  const uint64_t expected = header + static_cast<uint64_t>(ntok) * f.itemsize_;
  if (size != expected) {
    throw Error(path + ": size mismatch" + (size < expected ? " (truncated)" : "") +
                ": header says " + std::to_string(ntok) + " tokens, so the file is " +
                std::to_string(expected) + " bytes (1024 + ntok * " + std::to_string(f.itemsize_) +
                "), file has " + std::to_string(size));
  }
  if (ntok == 0) throw Error(path + ": shard is empty (0 tokens)");
  f.num_tokens_ = ntok;
  f.tokens_ = p + header;

  // documents: one starts at token 0 and at every later delimiter
  const int32_t delim = f.is_unsigned32_ ? kLlama3Bos : kGpt2Eot;
  f.llmc_doc_starts_.push_back(0);
  std::vector<int32_t> chunk(1 << 16);
  for (int64_t begin = 0; begin < f.num_tokens_; begin += static_cast<int64_t>(chunk.size())) {
    const int64_t count =
        std::min<int64_t>(static_cast<int64_t>(chunk.size()), f.num_tokens_ - begin);
    f.read_tokens(begin, count, chunk.data());
    for (int64_t i = begin == 0 ? 1 : 0; i < count; ++i) {
      if (chunk[static_cast<size_t>(i)] == delim) f.llmc_doc_starts_.push_back(begin + i);
    }
  }
  f.llmc_doc_starts_.push_back(f.num_tokens_);
  return f;
}

// ----------------------------------------------------------------------------------------------
// TokenFile: access

int64_t TokenFile::num_documents() const {
  return format_ == ShardFormat::megatron ? doc_count_ - 1
                                          : static_cast<int64_t>(llmc_doc_starts_.size()) - 1;
}

int64_t TokenFile::doc_start(int64_t d) const {
  if (format_ == ShardFormat::llmc) return llmc_doc_starts_[static_cast<size_t>(d)];
  // first sequence of document d, then its byte pointer (validated on open) in tokens
  const uint8_t* doc_idx = idx_.data() + kMegatronHeader + 12 * static_cast<size_t>(num_sequences_);
  const int64_t seq = load<int64_t>(doc_idx + 8 * d);
  if (seq == num_sequences_) return num_tokens_;
  const uint8_t* pointers = idx_.data() + kMegatronHeader + 4 * static_cast<size_t>(num_sequences_);
  return load<int64_t>(pointers + 8 * seq) / itemsize_;
}

int64_t TokenFile::document_begin(int64_t doc) const {
  check(doc >= 0 && doc < num_documents(), name_ + ": document " + std::to_string(doc) +
                                               " out of range (" + std::to_string(num_documents()) +
                                               " documents)");
  return doc_start(doc);
}

int64_t TokenFile::document_end(int64_t doc) const {
  check(doc >= 0 && doc < num_documents(), name_ + ": document " + std::to_string(doc) +
                                               " out of range (" + std::to_string(num_documents()) +
                                               " documents)");
  return doc_start(doc + 1);
}

int32_t TokenFile::token(int64_t i) const {
  int32_t t;
  read_tokens(i, 1, &t);
  return t;
}

void TokenFile::read_tokens(int64_t begin, int64_t count, int32_t* out) const {
  if (begin < 0 || count < 0 || begin > num_tokens_ || count > num_tokens_ - begin) {
    throw Error(token_path_ + ": read of " + std::to_string(count) + " tokens at token " +
                std::to_string(begin) + " out of range (" + std::to_string(num_tokens_) +
                " tokens)");
  }
  const uint8_t* p = tokens_ + static_cast<size_t>(begin) * itemsize_;
  if (itemsize_ == 2) {
    for (int64_t i = 0; i < count; ++i) out[i] = load<uint16_t>(p + 2 * i);
  } else if (!is_unsigned32_) {
    std::memcpy(out, p, static_cast<size_t>(count) * 4);
  } else {
    for (int64_t i = 0; i < count; ++i) {
      const uint32_t t = load<uint32_t>(p + 4 * i);
      if (t > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
        throw Error(token_path_ + ": token id " + std::to_string(t) + " at token " +
                    std::to_string(begin + i) + " does not fit int32");
      }
      out[i] = static_cast<int32_t>(t);
    }
  }
}

// ----------------------------------------------------------------------------------------------
// writers

// A buffered uint16 token stream into an AtomicFile.
struct TokenStream {
  explicit TokenStream(const std::string& path) : file(path) { buffer.reserve(kBufferTokens); }
  void raw(const void* p, size_t n) {
    drain();
    file.write(p, n);
  }
  void tokens(const uint16_t* p, size_t n) {
    if (buffer.size() + n > kBufferTokens) drain();
    if (n > kBufferTokens) {
      file.write(p, n * 2);
    } else {
      buffer.insert(buffer.end(), p, p + n);
    }
  }
  void drain() {
    if (!buffer.empty()) file.write(buffer.data(), buffer.size() * 2);
    buffer.clear();
  }
  static constexpr size_t kBufferTokens = size_t(1) << 20;
  AtomicFile file;
  std::vector<uint16_t> buffer;
};

struct MegatronWriter::Files {
  explicit Files(const std::string& prefix) : bin(prefix + ".bin") {}
  TokenStream bin;
};

MegatronWriter::MegatronWriter(const std::string& prefix)
    : prefix_(prefix), files_(new Files(prefix)) {}
MegatronWriter::~MegatronWriter() {
  delete files_;
}

void MegatronWriter::add_document(const uint16_t* tokens, size_t n, int32_t eod) {
  const size_t length = n + (eod >= 0 ? 1 : 0);
  check(length <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
        prefix_ + ".bin: a document of " + std::to_string(length) +
            " tokens does not fit an int32 length");
  check(open_length_ == 0, prefix_ + ": add_document inside a document given in pieces");
  files_->bin.tokens(tokens, n);
  if (eod >= 0) {
    const uint16_t t = static_cast<uint16_t>(eod);
    files_->bin.tokens(&t, 1);
  }
  lengths_.push_back(static_cast<int32_t>(length));
  ++num_documents_;
}

void MegatronWriter::add_empty_document() {
  empty_documents_.push_back(num_documents_++);
}

void MegatronWriter::append_tokens(const uint16_t* tokens, size_t n) {
  open_length_ += static_cast<int64_t>(n);
  check(open_length_ < std::numeric_limits<int32_t>::max(),
        prefix_ + ".bin: a document of more than 2^31 - 2 tokens does not fit an int32 length");
  files_->bin.tokens(tokens, n);
}

void MegatronWriter::end_document(int32_t eod) {
  if (open_length_ == 0) {
    add_empty_document();
    return;
  }
  if (eod >= 0) {
    const uint16_t t = static_cast<uint16_t>(eod);
    files_->bin.tokens(&t, 1);
  }
  lengths_.push_back(static_cast<int32_t>(open_length_ + (eod >= 0 ? 1 : 0)));
  ++num_documents_;
  open_length_ = 0;
}

void MegatronWriter::finish() {
  check(open_length_ == 0, prefix_ + ": finish() inside a document given in pieces");
  const uint64_t n = lengths_.size();
  AtomicFile idx(prefix_ + ".idx");
  const uint64_t version = 1, sequences = n, documents = uint64_t(num_documents_) + 1;
  idx.write(kMegatronMagic, sizeof(kMegatronMagic));
  idx.write(&version, 8);
  idx.write(&kDtypeUint16, 1);
  idx.write(&sequences, 8);
  idx.write(&documents, 8);
  idx.write(lengths_.data(), n * 4);
  // pointers (byte offsets) and document indices, computed and written a block at a time
  std::vector<int64_t> block;
  block.reserve(size_t(1) << 16);
  auto drain = [&] {
    idx.write(block.data(), block.size() * 8);
    block.clear();
  };
  int64_t pointer = 0;
  for (const int32_t length : lengths_) {
    block.push_back(pointer);
    pointer += int64_t(length) * 2;
    if (block.size() == block.capacity()) drain();
  }
  drain();
  int64_t first_sequence = 0;
  size_t next_empty = 0;
  block.push_back(0);
  for (int64_t d = 0; d < num_documents_; ++d) {
    const bool empty = next_empty < empty_documents_.size() && empty_documents_[next_empty] == d;
    if (empty) ++next_empty;
    first_sequence += empty ? 0 : 1;
    block.push_back(first_sequence);
    if (block.size() == block.capacity()) drain();
  }
  drain();
  files_->bin.drain();
  files_->bin.file.commit();
  idx.commit();
}

struct LlmcWriter::Files {
  explicit Files(const std::string& path) : out(path) {}
  TokenStream out;
};

LlmcWriter::LlmcWriter(const std::string& path, int64_t num_tokens)
    : path_(path), files_(nullptr), expected_(num_tokens) {
  check(num_tokens >= 0 && num_tokens < (int64_t(1) << 31),
        path + ": " + std::to_string(num_tokens) + " tokens, an llm.c shard holds fewer than 2^31");
  files_ = new Files(path);
  std::vector<int32_t> header(kLlmcHeaderInts, 0);
  header[0] = static_cast<int32_t>(kLlmcMagicGpt2);
  header[1] = 1;
  header[2] = static_cast<int32_t>(num_tokens);
  files_->out.raw(header.data(), header.size() * 4);
}
LlmcWriter::~LlmcWriter() {
  delete files_;
}

void LlmcWriter::add(const uint16_t* tokens, size_t n) {
  files_->out.tokens(tokens, n);
  written_ += static_cast<int64_t>(n);
}

void LlmcWriter::finish() {
  check(written_ == expected_, path_ + ": " + std::to_string(written_) +
                                   " tokens written, the header says " + std::to_string(expected_));
  files_->out.drain();
  files_->out.file.commit();
}

// Checked int32 → uint16 conversion of one document (writers of test fixtures and small files).
static std::vector<uint16_t> to_uint16(const std::string& path, const std::vector<int32_t>& ids,
                                       size_t first_pos) {
  std::vector<uint16_t> out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    check_uint16_token(path, ids[i], first_pos + i);
    out[i] = static_cast<uint16_t>(ids[i]);
  }
  return out;
}

void write_megatron(const std::string& prefix, const std::vector<std::vector<int32_t>>& documents) {
  MegatronWriter writer(prefix);
  size_t pos = 0;
  for (const auto& doc : documents) {
    const std::vector<uint16_t> tokens = to_uint16(prefix + ".bin", doc, pos);
    writer.add_document(tokens.data(), tokens.size());
    pos += doc.size();
  }
  writer.finish();
}

void write_llmc(const std::string& path, const std::vector<int32_t>& tokens) {
  check(tokens.size() < (size_t(1) << 31), path + ": " + std::to_string(tokens.size()) +
                                               " tokens, an llm.c shard holds fewer than 2^31");
  const std::vector<uint16_t> ids = to_uint16(path, tokens, 0);
  LlmcWriter writer(path, static_cast<int64_t>(ids.size()));
  writer.add(ids.data(), ids.size());
  writer.finish();
}

}  // namespace unipool::data
