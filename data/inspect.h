// `unipool inspect FILE_OR_PREFIX`: validate a token file and summarise it.
//
// The file is opened with TokenFile::open — the same validation every reader of the engine (the
// training/eval Loader) applies: magic, version, dtype code, the .idx size 34 + 12N + 8D, the
// pointers as a running byte sum, the document index (0 first, non-decreasing, N last), the .bin
// size, the llm.c header and size, no empty shard. Then every token is read and checked to be
// below the vocabulary size (the Loader checks the tokens it reads the same way). Any violation is
// a unipool::Error naming the file (and the token position).
//
// Format "auto": PATH.idx exists → Megatron prefix PATH; PATH is a file starting with an llm.c
// magic → llm.c shard; PATH ends in .bin/.idx and its stem has a .idx → Megatron prefix (the stem).
//
// The summary: format, files and sizes, dtype, documents, tokens, min/mean/max document length,
// end-of-document tokens (and how many documents end — Megatron — or start — llm.c — with one),
// the largest id, and the first tokens as ids and decoded text (GPT-2 when the vocabulary is 50257
// and its files are there, bytes for 257, else ids only).
#pragma once
#include <string>

namespace unipool::data {

struct InspectOptions {
  std::string path;                // Megatron prefix (or its .bin/.idx) or llm.c .bin
  std::string format = "auto";     // auto | megatron | llmc
  int vocab_size = 0;              // ids must be < this; 0: 50257 (128256 for uint32 llm.c shards)
  int decode_tokens = 64;          // how many leading tokens to show
  std::string tokenizer = "auto";  // auto | gpt2 | bytes | none: how to decode them
  std::string tokenizer_dir;       // GPT-2 vocabulary files; "" = Gpt2Tokenizer::default_dir()
};

// Validates the file and returns the summary (several lines); Error on any violation.
std::string inspect(const InspectOptions& options);
// inspect() printed on stdout.
void run_inspect(const InspectOptions& options);

}  // namespace unipool::data
