// `unipool tokenize`: text → token shards (formats in data/shards.h, docs/data.md §Token files).
//
// Inputs are files, directories (walked recursively in sorted order) or "-" (standard input; also
// /dev/stdin). Every input is streamed: it is never read whole.
//   *.jsonl       one document per line in its "text" field (--json-key names another field: the
//                 Pile's raw form); blank lines are skipped. A single line must fit in memory.
//   *.jsonl.zst   the same, zstd-compressed (libzstd; concatenated frames are read one after the
//   *.jsonl.gz    other), or gzip-compressed (zlib; concatenated members too). Any other name
//                 ending in .zst / .gz is compressed plain text.
//   any other     plain text: one document per file, or several when --doc-separator names a line
//                 that separates documents (e.g. "%" in fortune files).
//   -             standard input: JSONL (or plain text with stdin_format "text"); a zstd or gzip
//                 stream is recognised by its first bytes and decompressed.
// Input that is not UTF-8 text is an error naming the file, its line and byte offset: a NUL byte,
// an invalid UTF-8 sequence, a compressed stream whose name does not say so (or an ELF, xz, bzip2,
// zip file) — unless allow_binary, which encodes the bytes as they are (byte-level BPE can).
// The text is encoded as is, every byte of it: a leading U+FEFF (byte-order mark) stays text, as
// tiktoken, Python's UTF-8 readers and Megatron-LM's preprocessing keep it, and a literal
// "<|endoftext|>" inside a document is ordinary text (tiktoken's encode_ordinary, Megatron's
// GPT2BPETokenizer); only the writers put end-of-document ids into the stream. An empty document
// (an empty file, {"text": ""}) is kept as Megatron-LM's writer keeps it: a document with no
// sequence (no tokens, no EOD) in the Megatron index, nothing in an llm.c shard. Inputs with no
// tokens at all give an empty dataset and a warning.
//
// Tokenizers:
//   gpt2   GPT-2 byte-level BPE (data/gpt2_tokenizer.h), vocabulary 50257, end-of-document 50256;
//          vocabulary files in --tokenizer-dir (default Gpt2Tokenizer::default_dir()).
//   bytes  one token per UTF-8 byte (ids 0..255), end-of-document 256, vocabulary 257; no files.
//
// Order and split: the documents are shuffled with a fixed seed (unless shuffle is off), so that
// the contiguous document ranges of a split are not biased by input order. The split string
// ("969,30,1") cuts that shuffled order into train/valid/test document ranges with Megatron's
// get_split_indices (data/loader.h) — the ranges the Loader's data.split takes from the Megatron
// file.
//
// Outputs:
//   megatron  PREFIX.bin + PREFIX.idx: ALL documents in the shuffled order, uint16, one sequence
//             per document, the end-of-document id appended after each one. The loader splits it.
//   llmc      PREFIX_train.bin, PREFIX_val.bin, PREFIX_test.bin (only the non-empty parts; a stale
//             part file of that name from an earlier run is removed): the same three document
//             ranges, each document preceded by EOT 50256 as llm.c's writers do. GPT-2 only: the
//             llm.c format has no document index, its document delimiter is the GPT-2 EOT.
//   both      all of the above, from one encoding pass.
// Files are written under a temporary name and renamed into place when complete.
//
// Parallelism: documents are encoded in parallel (OpenMP) a window of about 16 MB of text at a
// time, and written in input order; a long document is cut into pieces at points where GPT-2
// pre-tokenization always splits (see safe_split_points), so that one large file also uses every
// core. The output is byte-identical whatever the thread count.
// Memory: a fixed window (the text being encoded, its tokens, the I/O buffers: tens of MB) plus a
// few bytes per document, whatever the size of the input:
//   - megatron output, not shuffled: the tokens go straight into PREFIX.bin; 4 bytes a document
//     (the sequence lengths of the index).
//   - otherwise (shuffled, or llmc): the tokens are spooled in input order to a temporary file next
//     to the output (unlinked at once, so nothing is left behind: it needs 2 bytes a token of disk
//     until the run ends), then copied into the output files in the shuffled order through a
//     bounded buffer; about 20 bytes a document (ends, order, index lengths).
// A document is cut into pieces while it is read, so even one huge plain-text document stays in
// the window, unless it has no safe split point for megabytes (one enormous line).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace unipool::data {

struct TokenizeOptions {
  std::vector<std::string> inputs;
  std::string out_prefix;
  std::string tokenizer = "gpt2";      // gpt2 | bytes
  std::string tokenizer_dir;           // GPT-2 vocabulary files; "" = Gpt2Tokenizer::default_dir()
  std::string format = "megatron";     // megatron | llmc | both
  std::string split = "969,30,1";      // train,valid,test weights (Megatron's --split)
  int threads = 0;                     // encoding threads; 0 = OpenMP's default (all cores)
  std::string doc_separator;           // a whole line separating documents in plain text; "" = none
  std::string json_key = "text";       // the field of a JSONL object that holds the document
  std::string stdin_format = "jsonl";  // what "-" holds: jsonl | text
  bool allow_binary = false;           // encode input that is not UTF-8 text instead of refusing it
  bool shuffle = true;  // false: documents keep the input order (tests, reproducing a file)
  uint64_t shuffle_seed = 1234;
  bool quiet = false;  // no progress/summary lines on stdout
};

// What run_tokenize did (also printed).
struct TokenizeStats {
  int64_t documents = 0;
  int64_t text_bytes = 0;                 // bytes of document text encoded (after JSON decoding)
  int64_t tokens = 0;                     // text tokens, without the end-of-document ids
  int64_t part_documents[3] = {0, 0, 0};  // train, valid, test
  double seconds = 0;
  int64_t input_bytes = 0;         // bytes read from the inputs (compressed size for .zst / .gz)
  int64_t spool_bytes = 0;         // temporary disk used for the tokens (0: written straight out)
  int64_t peak_rss_bytes = 0;      // the process's peak resident memory (getrusage ru_maxrss)
  std::vector<std::string> files;  // every file written
};

constexpr int32_t kBytesEod = 256;
constexpr int kBytesVocab = 257;

// Splits a text into documents at lines equal to `separator` (empty: the whole text is one
// document). Empty documents are dropped.
std::vector<std::string> split_documents(const std::string& text, const std::string& separator);

// Byte-level encoding of one document, end-of-document appended.
std::vector<int32_t> encode_bytes(const std::string& document);

// Offsets p in (0, text.size()) where the GPT-2 pre-tokenizer always ends a piece, chosen at most
// every `stride` bytes: text[p-1] is '\n', text[p-2] and text[p] are printable non-space ASCII.
// The '\n' is then a piece of its own whatever follows (\s+(?!\S) cannot match it, \s+ takes just
// it), no pattern looks behind, so encode(text) == encode(text[..p)) + encode(text[p..)).
std::vector<size_t> safe_split_points(std::string_view text, size_t stride);

TokenizeStats run_tokenize(const TokenizeOptions& options);

}  // namespace unipool::data
