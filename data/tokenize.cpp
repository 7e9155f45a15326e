#include "data/tokenize.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "data/shards.h"
#include "engine/error.h"
#include "engine/fsutil.h"
#include "model/init.h"

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

namespace {

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

}  // namespace

void run_tokenize(const TokenizeOptions& o) {
  check(o.tokenizer == "bytes",
        "tokenize: --tokenizer '" + o.tokenizer + "' is not available (this build has: bytes)");
  check(!o.out_prefix.empty(), "tokenize: --out PREFIX is required");
  check(!o.inputs.empty(), "tokenize: no input files");
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> docs;
  size_t bytes = 0;
  for (const std::string& path : list_inputs(o.inputs)) {
    const std::string text = read_file(path);
    bytes += text.size();
    if (path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0) {
      std::istringstream in(text);
      std::string line;
      int64_t line_no = 0;
      while (std::getline(in, line)) {
        ++line_no;
        if (line.empty()) continue;
        const auto j = nlohmann::json::parse(line, nullptr, false);
        check(!j.is_discarded() && j.is_object() && j.contains("text") && j["text"].is_string(),
              path + ":" + std::to_string(line_no) +
                  ": expected a JSON object with a \"text\" string");
        const std::string doc = j["text"].get<std::string>();
        if (!doc.empty()) docs.push_back(doc);
      }
    } else {
      for (std::string& d : split_documents(text, o.doc_separator)) docs.push_back(std::move(d));
    }
  }
  check(!docs.empty(), "tokenize: the inputs hold no documents");
  // A seeded Fisher–Yates shuffle of the documents.
  for (size_t i = docs.size() - 1; i > 0; --i) {
    const size_t j = splitmix64(o.shuffle_seed ^ splitmix64(i)) % (i + 1);
    std::swap(docs[i], docs[j]);
  }
  std::vector<std::vector<int32_t>> encoded;
  encoded.reserve(docs.size());
  int64_t tokens = 0;
  for (const std::string& d : docs) {
    encoded.push_back(encode_bytes(d));
    tokens += static_cast<int64_t>(encoded.back().size());
  }
  const fs::path parent = fs::path(o.out_prefix).parent_path();
  if (!parent.empty()) make_dirs(parent.string());
  write_megatron(o.out_prefix, encoded);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "tokenize: %zu documents, %.2f MB of text → %lld tokens (%s, vocabulary %d) in %s.{bin,idx} "
      "| %.1f MB/s\n",
      docs.size(), bytes / 1e6, static_cast<long long>(tokens), o.tokenizer.c_str(), kBytesVocab,
      o.out_prefix.c_str(), bytes / 1e6 / std::max(dt, 1e-9));
}

}  // namespace unipool::data
