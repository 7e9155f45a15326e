// `unipool tokenize`: text → token shards. Inputs are files or directories (walked recursively in
// sorted order): a `.jsonl` file holds one document per line in its "text" field (the Pile's raw
// form); any other file is one document, or several when --doc-separator names a line that
// separates documents (e.g. "%" in fortune files). Documents are shuffled with a fixed seed (so
// that the contiguous train/valid/test ranges of data.split are not biased by input order) and
// written as a Megatron PREFIX.bin/.idx with the end-of-document id appended after each document.
//
// Tokenizers: `bytes` — one token per UTF-8 byte (ids 0..255), end-of-document 256, vocabulary 257.
// It needs no vocabulary files; the GPT-2 BPE tokenizer (vocabulary 50257) joins it with the data
// pipeline.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace unipool::data {

struct TokenizeOptions {
  std::vector<std::string> inputs;
  std::string out_prefix;
  std::string tokenizer = "bytes";
  std::string
      doc_separator;  // a whole line separating documents inside plain-text files; "" = none
  uint64_t shuffle_seed = 1234;
};

constexpr int32_t kBytesEod = 256;
constexpr int kBytesVocab = 257;

// Splits a text into documents at lines equal to `separator` (empty: the whole text is one
// document). Empty documents are dropped.
std::vector<std::string> split_documents(const std::string& text, const std::string& separator);

// Byte-level encoding of one document, end-of-document appended.
std::vector<int32_t> encode_bytes(const std::string& document);

void run_tokenize(const TokenizeOptions& options);

}  // namespace unipool::data
