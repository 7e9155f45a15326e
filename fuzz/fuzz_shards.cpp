// libFuzzer target: token shards (data/shards.h) read through the Loader (data/loader.h).
//
// Input: [mode][params][payload...]
//   mode % 3 == 0  payload = a Megatron .idx, paired with a fixed valid .bin (the project's writer
//                  wrote it for fixed_documents(); the matching .idx is the seed)
//   mode % 3 == 1  payload = u32 little-endian L, then L bytes of .idx (clamped to what is there),
//                  then the rest as the .bin
//   mode % 3 == 2  payload = an llm.c .bin
//   params         bits 0-1 seq_len {1, 2, 3, 8}; bit 2 prefetch; bits 3-4 split string
//                  {"1", "969,30,1", "1,1,1", "0,1"}; bits 5-6 split {train, valid, test, train};
//                  bit 7 a blend of the file with itself (weights 1 and 0.5)
// The files are written into the process's scratch directory (the readers take paths) and opened
// with TokenFile::open, whose invariants are checked; then a Loader (vocabulary 50257) reads three
// batches, and its state() restored into a second Loader must give the same next batch.
// Expected outcome for a bad input: unipool::Error. std::bad_alloc is a finding (fuzz_util.h).
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/json_fields.h"
#include "data/loader.h"
#include "data/shards.h"
#include "fuzz/fuzz_util.h"

using namespace unipool;
using namespace unipool::fuzz;

namespace {

constexpr int kVocab = 50257;
constexpr int kBatch = 2;

const std::string& fixed_bin_prefix() {
  static const std::string prefix = [] {
    const std::string p = scratch("m0");
    data::write_megatron(p, fixed_documents());  // m0.bin stays; m0.idx is rewritten per input
    return p;
  }();
  return prefix;
}

// TokenFile's documented invariants (data/shards.h).
void check_token_file(const data::TokenFile& f) {
  const int64_t n = f.num_tokens(), docs = f.num_documents();
  FUZZ_ASSERT(n >= 0 && docs >= 0);
  FUZZ_ASSERT(f.itemsize() == 2 || f.itemsize() == 4);
  if (docs == 0) {
    FUZZ_ASSERT(n == 0);
  } else {
    FUZZ_ASSERT(f.document_begin(0) == 0);
    FUZZ_ASSERT(f.document_end(docs - 1) == n);
    for (int64_t d = 0; d < docs; ++d) {
      const int64_t b = f.document_begin(d), e = f.document_end(d);
      FUZZ_ASSERT(0 <= b && b <= e && e <= n);
      if (d + 1 < docs) FUZZ_ASSERT(e == f.document_begin(d + 1));
    }
  }
  std::vector<int32_t> all(static_cast<size_t>(n) + 1);
  f.read_tokens(0, n, all.data());
  if (n > 0) FUZZ_ASSERT(f.token(n - 1) == all[static_cast<size_t>(n - 1)]);
  bool threw = false;  // reads past the end are refused
  try {
    f.read_tokens(n, 1, all.data());
  } catch (const Error&) {
    threw = true;
  }
  FUZZ_ASSERT(threw);
}

void check_batch(const std::vector<int32_t>& in, const std::vector<int32_t>& tg, int T) {
  for (size_t i = 0; i < in.size(); ++i) {
    FUZZ_ASSERT(in[i] >= 0 && in[i] < kVocab);
    FUZZ_ASSERT(tg[i] >= 0 && tg[i] < kVocab);
  }
  for (int b = 0; b < kBatch; ++b)  // targets are the inputs shifted by one
    for (int t = 0; t + 1 < T; ++t) FUZZ_ASSERT(tg[size_t(b * T + t)] == in[size_t(b * T + t + 1)]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const std::string m0 = fixed_bin_prefix();
  const int mode = data[0] % 3;
  const uint8_t p = data[1];
  const uint8_t* payload = data + 2;
  const size_t n = size - 2;

  data::LoaderSpec spec;
  std::string path;
  if (mode == 0) {
    path = m0;
    write_bytes(path + ".idx", payload, n);
    spec.format = data::ShardFormat::megatron;
  } else if (mode == 1) {
    path = scratch("m1");
    uint32_t len = 0;
    size_t off = 0;
    if (n >= 4) {
      std::memcpy(&len, payload, 4);  // little-endian hosts only (x86-64, aarch64)
      off = 4;
    }
    const size_t idx_len = std::min<size_t>(len, n - off);
    write_bytes(path + ".idx", payload + off, idx_len);
    write_bytes(path + ".bin", payload + off + idx_len, n - off - idx_len);
    spec.format = data::ShardFormat::megatron;
  } else {
    path = scratch("l.bin");
    write_bytes(path, payload, n);
    spec.format = data::ShardFormat::llmc;
  }

  static const int kSeqLens[4] = {1, 2, 3, 8};
  static const char* kSplits[4] = {"1", "969,30,1", "1,1,1", "0,1"};
  static const data::Split kWhich[4] = {data::Split::train, data::Split::valid, data::Split::test,
                                        data::Split::train};
  spec.seq_len = kSeqLens[p & 3];
  spec.prefetch = (p & 4) != 0;
  spec.split = kSplits[(p >> 3) & 3];
  const data::Split which = kWhich[(p >> 5) & 3];
  spec.blend = {{1.0, path}};
  if (p & 0x80) spec.blend.push_back({0.5, path});
  spec.vocab_size = kVocab;

  if (!guard([&] { check_token_file(data::TokenFile::open(path, spec.format)); })) return 0;

  const int T = spec.seq_len;
  std::vector<int32_t> in(size_t(kBatch * T)), tg(in.size()), in2(in.size()), tg2(in.size());
  guard([&] {
    data::Loader loader(spec, which);
    FUZZ_ASSERT(loader.num_samples() > 0);
    for (int i = 0; i < 3; ++i) {
      loader.next_batch(kBatch, in.data(), tg.data());
      check_batch(in, tg, T);
    }
    // The position as a checkpoint stores it (dump_json, parse) resumes to the same next batch.
    const nlohmann::json st = nlohmann::json::parse(dump_json(loader.state(), 1));
    FUZZ_ASSERT(st.at("samples_drawn").get<int64_t>() == loader.samples_drawn());
    data::Loader resumed(spec, which);
    resumed.restore(st);
    FUZZ_ASSERT(resumed.samples_drawn() == loader.samples_drawn());
    bool failed = false, failed2 = false;
    try {
      loader.next_batch(kBatch, in.data(), tg.data());
    } catch (const Error&) {
      failed = true;
    }
    try {
      resumed.next_batch(kBatch, in2.data(), tg2.data());
    } catch (const Error&) {
      failed2 = true;
    }
    FUZZ_ASSERT(failed == failed2);
    if (!failed) FUZZ_ASSERT(in == in2 && tg == tg2);
    loader.reset();
    FUZZ_ASSERT(loader.samples_drawn() == 0);
  });
  return 0;
}
