// The training/evaluation data loader: a deterministic, resumable stream of (inputs, targets)
// samples drawn from a weighted blend of token files (SPEC.md §3, Megatron's GPTDataset +
// BlendedDataset).
//
// Per dataset (one TokenFile of the blend):
//   split     "a,b,c" is normalised and cut into three contiguous DOCUMENT ranges exactly like
//             Megatron's get_split_indices (round half to even, like Python's round; the rounding
//             excess is taken off every boundary). A part with no documents is empty (a warning on
//             stderr, once per file and part per process; an error only for a Loader of that
//             split).
//   stream    the split's documents back to back: tokens [document_begin(lo), document_end(hi-1)).
//   samples   sample i covers stream tokens [i*T, i*T + T] (T+1 tokens): inputs = the first T,
//             targets = the last T. Consecutive samples share one token; samples cross documents.
//             A dataset split has (tokens - 1) / T samples.
//   order     epoch e visits the samples in a Fisher–Yates permutation drawn from a splitmix64
//             stream seeded by (seed, dataset index, split, e); the next epoch gets a new one.
// Blend: weights are normalised over the datasets that have samples in this split (a dataset with
//   none is left out, with a warning). The j-th sample drawn (j = 0, 1, ...) comes from the dataset
//   d that maximises weight_d * (j + 1) - drawn_d (ties to the lower index), Megatron's blending
//   rule.
// Every token read is checked to be in [0, vocab_size); the error names the file and token
// position. state() is the exact position (per dataset: epoch and place in its permutation, plus
// the count drawn) and a fingerprint of the spec and files; restore() resumes bit-exactly or
// throws.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/shards.h"

namespace unipool::data {

enum class Split { train = 0, valid = 1, test = 2 };
const char* split_name(Split s);  // "train" | "valid" | "test"

struct LoaderSpec {
  std::vector<std::pair<double, std::string>> blend;  // (weight, path or prefix); weights > 0
  ShardFormat format = ShardFormat::megatron;
  std::string split =
      "969,30,1";  // Megatron string form; 1 to 3 comma-separated non-negative numbers, not all 0
  int seq_len = 1024;
  int vocab_size = 50257;  // token ids must be < this
  uint64_t seed = 1234;
};

// The normalised weights of a split string ("969,30,1" -> {0.969, 0.03, 0.001}; missing parts are
// 0). Error on anything but 1 to 3 comma-separated finite non-negative numbers that are not all 0.
std::array<double, 3> parse_split(const std::string& split);
// Megatron's get_split_indices: boundaries {0, end_train, end_valid, num_documents}; part p is the
// documents [idx[p], idx[p+1]).
std::array<int64_t, 4> split_indices(const std::array<double, 3>& weights, int64_t num_documents);

class Loader {
 public:
  Loader(const LoaderSpec& spec,
         Split split);  // opens + validates all files; Error if this split has no samples
  void next_batch(int batch, int32_t* inputs,
                  int32_t* targets);  // batch × seq_len each; advances the position
  nlohmann::json state() const;       // the exact position (enough to resume)
  void restore(const nlohmann::json&
                   state);      // Error on a state that does not match this spec and these files
  void reset();                 // back to the very first sample
  int64_t num_samples() const;  // samples in one pass of this split (sum over datasets)
  int64_t samples_drawn() const { return drawn_total_; }
  int seq_len() const { return spec_.seq_len; }
  Split split() const { return split_; }

 private:
  struct Dataset {
    explicit Dataset(TokenFile f) : file(std::move(f)) {}
    TokenFile file;
    double weight = 0;  // normalised over the datasets with samples; 0 for a left-out one
    int64_t doc_lo = 0, doc_hi = 0;  // this split's documents [lo, hi)
    int64_t tok_lo = 0, tok_hi = 0;  // their tokens [lo, hi)
    int64_t num_samples = 0;
    std::string fingerprint;  // hash of sizes and a sample of the tokens
    // position: the next sample is perm[pos] of epoch `epoch`; drawn = epoch * num_samples + pos
    uint64_t epoch = 0;
    int64_t pos = 0;
    int64_t drawn = 0;
    std::vector<uint32_t> perm;  // permutation of [0, num_samples) for perm_epoch (built lazily)
    int64_t perm_epoch = -1;
  };
  int pick_dataset() const;  // Megatron's blending rule for sample drawn_total_
  void ensure_permutation(Dataset& ds, size_t index);
  void read_sample(Dataset& ds, int64_t sample);  // fills buf_ with T+1 checked tokens

  LoaderSpec spec_;
  Split split_;
  std::array<double, 3> split_weights_{};
  std::vector<Dataset> datasets_;
  int64_t drawn_total_ = 0;
  std::vector<int32_t> buf_;  // T + 1 tokens of the current sample
};

}  // namespace unipool::data
