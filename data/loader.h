// The training/evaluation data loader: a deterministic, resumable stream of (inputs, targets)
// samples drawn from a weighted blend of token files (docs/data.md, Megatron's GPTDataset +
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
//
// Data parallelism (LoaderSpec.rank, world_size = W): the GLOBAL sample sequence is the one above,
//   the same on every rank. With g the global samples consumed before a call, next_batch(B) on rank
//   r returns the global samples [g + r*B, g + r*B + B) and advances g by W*B on every rank: one
//   step's ranks jointly take W*B consecutive samples, each rank a contiguous slice. W = 1 is the
//   plain sequence. The position (state(), samples_drawn()) is the global one, identical on all
//   ranks, so any rank's state resumes every rank. The state (format version 1, unchanged) holds
//   no rank or world size: restored under another world size W' (or batch B'), the loaders go on
//   from global sample g, each step taking [g, g + W'*B'); that is what an uninterrupted W'-rank
//   run takes whenever g is a multiple of W'*B'. Nothing checks that: the caller decides.
//
// Prefetch (LoaderSpec.prefetch, on by default): after each next_batch(B) a background thread
//   reads (mmap page-ins, token checks, copies) the next batch of B samples while the caller
//   computes; the next next_batch(B) with the same B takes it (another B throws it away and reads
//   synchronously). The samples are exactly those without prefetch. state() is the position after
//   the batches returned to the caller, never the prefetched one; reset() and restore() cancel a
//   prefetch in flight and start one at the new position (for the last B). An Error met while
//   prefetching (a token id >= vocab_size, ...) is thrown, with its message, by the next_batch()
//   call that would have returned those samples. The first call, and any call after a different B
//   or an error, reads synchronously. The thread starts with the first prefetch and is joined by
//   the destructor (which first stops a batch in flight).
//
// next_batch() is all-or-nothing: when it throws, the position is unchanged and no output was
// written. A Loader is used from one thread at a time (its prefetch thread is internal). The files
// are memory-mapped and may be read by the prefetch thread at any moment while the Loader lives:
// rewriting or truncating them meanwhile is undefined (SIGBUS), as it always was for mmap.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
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
  int rank = 0, world_size = 1;  // data parallelism: 0 <= rank < world_size (see above)
  bool prefetch = true;          // read the next batch on a background thread
  // A held-out set (data.valid, `unipool eval --data`): every document of every file whatever the
  // split (`split` is not used, the Loader's Split only names it in messages), and each dataset's
  // samples in stream order, epoch after epoch, instead of a permutation.
  bool whole_files = false;
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
         Split split);        // opens + validates all files; Error if this split has no samples
  ~Loader();                  // cancels and joins a prefetch in flight
  Loader(Loader&&) noexcept;  // a moved-from Loader may only be destroyed or assigned to
  Loader& operator=(Loader&&) noexcept;
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // batch × seq_len each: this rank's slice of the next global batch of world_size × batch
  // samples; advances the (global) position by world_size × batch. All or nothing on an Error.
  void next_batch(int batch, int32_t* inputs, int32_t* targets);
  nlohmann::json state() const;  // the exact global position (enough to resume any rank)
  void restore(const nlohmann::json&
                   state);        // Error on a state that does not match this spec and these files
  void reset();                   // back to the very first sample
  int64_t num_samples() const;    // samples in one pass of this split (sum over datasets)
  int64_t samples_drawn() const;  // global samples consumed (by all ranks together)
  int seq_len() const;
  Split split() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace unipool::data
