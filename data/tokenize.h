// `unipool tokenize`: text → token shards (formats in data/shards.h, docs/data.md §Token files).
//
// Inputs are files or directories (walked recursively in sorted order):
//   *.jsonl    one document per line in its "text" field (the Pile's raw form); blank lines are
//              skipped. Read in blocks of whole lines, so a JSONL file may be larger than memory.
//   any other  one document per file, or several when --doc-separator names a line that separates
//              documents (e.g. "%" in fortune files). The whole file is read at once.
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
//   per
//             document, the end-of-document id appended after each one. The loader splits it.
//   llmc      PREFIX_train.bin, PREFIX_val.bin, PREFIX_test.bin (only the non-empty parts; a stale
//             part file of that name from an earlier run is removed): the same three document
//             ranges, each document preceded by EOT 50256 as llm.c's writers do. GPT-2 only: the
//             llm.c format has no document index, its document delimiter is the GPT-2 EOT.
//   both      all of the above, from one encoding pass.
// Files are written under a temporary name and renamed into place when complete.
//
// Parallelism: documents are encoded in parallel (OpenMP); a long document is cut into pieces at
// points where GPT-2 pre-tokenization always splits (see safe_split_points), so that one large file
// also uses every core. The output is byte-identical whatever the thread count.
// Memory: the token arrays (2 bytes per token) plus the text of one input file (or one block of a
// JSONL file) and its tokens while it is being encoded.
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
  std::string tokenizer = "gpt2";   // gpt2 | bytes
  std::string tokenizer_dir;        // GPT-2 vocabulary files; "" = Gpt2Tokenizer::default_dir()
  std::string format = "megatron";  // megatron | llmc | both
  std::string split = "969,30,1";   // train,valid,test weights (Megatron's --split)
  int threads = 0;                  // encoding threads; 0 = OpenMP's default (all cores)
  std::string
      doc_separator;    // a whole line separating documents inside plain-text files; "" = none
  bool shuffle = true;  // false: documents keep the input order (tests, reproducing a file)
  uint64_t shuffle_seed = 1234;
  bool quiet = false;  // no progress/summary lines on stdout
};

// What run_tokenize did (also printed).
struct TokenizeStats {
  int64_t documents = 0;
  int64_t text_bytes = 0;  // bytes of document text encoded (after JSON decoding)
  int64_t tokens = 0;      // text tokens, without the end-of-document ids
  int64_t part_documents[3] = {0, 0, 0};  // train, valid, test
  double seconds = 0;
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
