// `unipool bench-tokenizer FILE...`: GPT-2 tokenizer throughput (data/gpt2_tokenizer.h) per file.
// Each file is read whole and encoded three times with `threads` threads (the text cut into equal
// chunks at line breaks); the best pass is reported as MB/s (1 MB = 1e6 bytes of input) in total
// and per thread. scripts/bench_tokenizer.sh runs it next to tiktoken on the same texts.
#include "engine/bench.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "data/gpt2_tokenizer.h"

namespace unipool {

namespace {

// Cuts text into `parts` ranges of about equal size, each ending after a '\n' when there is one
// close by, and never inside a UTF-8 sequence.
std::vector<std::pair<size_t, size_t>> split_text(const std::string& text, int parts) {
  std::vector<std::pair<size_t, size_t>> ranges;
  size_t begin = 0;
  for (int p = 1; p <= parts; ++p) {
    size_t end = p == parts ? text.size() : text.size() / parts * p;
    if (end < begin) end = begin;
    if (p < parts) {
      const size_t nl = text.find('\n', end);
      if (nl != std::string::npos && nl - end < 65536) end = nl + 1;
      while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80) ++end;
    }
    ranges.emplace_back(begin, end);
    begin = end;
  }
  return ranges;
}

}  // namespace

void run_tokenizer_bench(const std::vector<std::string>& files, int threads) {
  threads = std::max(threads, 1);
  const std::string dir = data::Gpt2Tokenizer::default_dir();
  const Stopwatch load_time;
  const data::Gpt2Tokenizer tokenizer = data::Gpt2Tokenizer::load(dir);
  std::printf("bench-tokenizer | GPT-2 BPE from %s loaded in %.2f s | %d thread%s\n", dir.c_str(),
              load_time.seconds(), threads, threads == 1 ? "" : "s");
  for (const std::string& file : files) {
    std::ifstream f(file, std::ios::binary);
    if (!f) throw Error("bench-tokenizer: cannot read " + file);
    std::ostringstream ss;
    ss << f.rdbuf();
    const std::string text = ss.str();
    const auto ranges = split_text(text, threads);
    std::vector<std::vector<int32_t>> ids(threads);
    double best = 1e30;
    for (int pass = 0; pass < 3; ++pass) {
      const Stopwatch pass_time;
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
          ids[t].clear();
          const auto [b, e] = ranges[t];
          tokenizer.encode_append(std::string_view(text).substr(b, e - b), ids[t]);
        });
      for (auto& th : pool) th.join();
      best = std::min(best, pass_time.seconds());
    }
    size_t tokens = 0;
    for (const auto& v : ids) tokens += v.size();
    const double mb = static_cast<double>(text.size()) / 1e6;
    std::printf(
        "bench-tokenizer | %s | %.2f MB, %zu tokens (%.2f bytes/token) | %.1f MB/s, %.1f MB/s per "
        "thread\n",
        file.c_str(), mb, tokens, tokens ? static_cast<double>(text.size()) / tokens : 0.0,
        mb / best, mb / best / threads);
  }
}

}  // namespace unipool
