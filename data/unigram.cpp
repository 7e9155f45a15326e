// The unigram baseline of a split (unigram.h).
#include "data/unigram.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "base/error.h"
#include "data/shards.h"

namespace unipool::data {

namespace {

// Adds the tokens [begin, begin + count) of `file` to `counts`.
void count_tokens(const TokenFile& file, int64_t begin, int64_t count, std::vector<int64_t>& counts,
                  std::vector<int32_t>& buffer) {
  const int64_t chunk = 1 << 16;
  buffer.resize(chunk);
  const int64_t vocab = static_cast<int64_t>(counts.size());
  for (int64_t at = begin; at < begin + count; at += chunk) {
    const int64_t n = std::min(chunk, begin + count - at);
    file.read_tokens(at, n, buffer.data());
    for (int64_t i = 0; i < n; ++i) {
      const int32_t t = buffer[i];
      if (t < 0 || t >= vocab) {
        throw Error(file.token_path() + ": token id " + std::to_string(t) + " at token " +
                    std::to_string(at + i) + (t < 0 ? " is negative" : " >= vocab_size ") +
                    (t < 0 ? std::string() : std::to_string(vocab)));
      }
      ++counts[t];
    }
  }
}

}  // namespace

UnigramBaseline unigram_baseline(const LoaderSpec& spec, Split split, int64_t max_tokens) {
  check(!spec.blend.empty(), "unigram baseline: the blend has no datasets");
  check(spec.vocab_size >= 1 && spec.seq_len >= 1,
        "unigram baseline: vocab_size and seq_len must be >= 1");
  check(max_tokens >= 1, "unigram baseline: max_tokens must be >= 1");
  const std::array<double, 3> weights = parse_split(spec.split);
  const int s = static_cast<int>(split);

  struct Range {
    int64_t lo, hi;
    double weight;
  };
  std::vector<TokenFile> files;
  std::vector<Range> ranges;
  double weight_sum = 0;
  for (const auto& [weight, path] : spec.blend) {
    TokenFile file = TokenFile::open(path, spec.format);
    const int64_t ndocs = file.num_documents();
    const std::array<int64_t, 4> idx = split_indices(weights, ndocs);
    const int64_t lo = idx[s] < ndocs ? file.document_begin(idx[s]) : file.num_tokens();
    const int64_t hi = idx[s + 1] > idx[s] ? file.document_end(idx[s + 1] - 1) : lo;
    // The Loader leaves out a dataset with no sample of seq_len + 1 tokens in this split.
    if (hi - lo < int64_t(spec.seq_len) + 1) continue;
    files.push_back(std::move(file));
    ranges.push_back({lo, hi, weight});
    weight_sum += weight;
  }
  check(!files.empty(), std::string("unigram baseline: no samples for the ") + split_name(split) +
                            " split in any dataset of the blend");

  UnigramBaseline out;
  std::vector<double> p(spec.vocab_size, 0.0);
  std::vector<int64_t> counts(spec.vocab_size);
  std::vector<int32_t> buffer;
  const int64_t budget = std::max<int64_t>(1, max_tokens / static_cast<int64_t>(files.size()));
  for (size_t d = 0; d < files.size(); ++d) {
    const Range& r = ranges[d];
    std::fill(counts.begin(), counts.end(), 0);
    const int64_t n = r.hi - r.lo;
    int64_t counted = 0;
    if (n <= budget) {
      count_tokens(files[d], r.lo, n, counts, buffer);
      counted = n;
    } else {
      out.whole = false;
      const int64_t windows = 1024;
      const int64_t width = std::max<int64_t>(1, budget / windows);
      for (int64_t w = 0; w < windows; ++w) {
        const int64_t at = r.lo + w * (n - width) / (windows - 1);
        count_tokens(files[d], at, width, counts, buffer);
        counted += width;
      }
    }
    out.tokens += counted;
    const double share = r.weight / weight_sum / static_cast<double>(counted);
    for (int t = 0; t < spec.vocab_size; ++t) p[t] += share * static_cast<double>(counts[t]);
  }
  for (double q : p) {
    if (q <= 0) continue;
    out.entropy -= q * std::log(q);
    ++out.distinct;
  }
  return out;
}

}  // namespace unipool::data
