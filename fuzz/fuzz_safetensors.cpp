// libFuzzer target: engine/safetensors.h read_safetensors on the input bytes (written to a file in
// the process's scratch directory). A file the reader accepts must be self-consistent (every
// tensor's data holds prod(shape) floats, `order` names each tensor once) and must survive a round
// trip through write_safetensors: the rewritten file reads back to the same tensors and metadata.
// Expected outcome for a bad input: unipool::Error. std::bad_alloc is a finding: the reader sizes
// nothing before checking it against the file's size (fuzz_util.h).
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/safetensors.h"
#include "fuzz/fuzz_util.h"

using namespace unipool;
using namespace unipool::fuzz;

namespace {

void check_file(const SafetensorsFile& f) {
  FUZZ_ASSERT(f.order.size() == f.tensors.size());
  FUZZ_ASSERT(std::set<std::string>(f.order.begin(), f.order.end()).size() == f.order.size());
  for (const std::string& name : f.order) FUZZ_ASSERT(f.tensors.count(name) == 1);
  for (const auto& [name, t] : f.tensors) {
    FUZZ_ASSERT(name != "__metadata__");
    int64_t n = 1;
    for (const int64_t d : t.shape) {
      FUZZ_ASSERT(d >= 0);
      n *= d;  // bounded: the data is in the file
    }
    FUZZ_ASSERT(static_cast<int64_t>(t.data.size()) == n);
  }
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = scratch("in.safetensors");
  static const std::string again = scratch("again.safetensors");
  write_bytes(path, data, size);
  SafetensorsFile f;
  if (!guard([&] { f = read_safetensors(path); })) return 0;
  check_file(f);

  // Round trip through the project's writer, in the file's order.
  std::vector<TensorRef> refs;
  for (const std::string& name : f.order) {
    const SafeTensor& t = f.tensors.at(name);
    refs.push_back({name, t.shape, t.data.data()});
  }
  if (!guard([&] { write_safetensors(again, refs, f.metadata); })) {
    // The writer refuses what it never writes (an empty tensor name); the reader may accept it.
    return 0;
  }
  SafetensorsFile g;
  must("the rewritten file does not read back", [&] { g = read_safetensors(again); });
  FUZZ_ASSERT(g.order == f.order);
  FUZZ_ASSERT(g.metadata == f.metadata);
  for (const auto& [name, t] : f.tensors) {
    const SafeTensor& u = g.tensors.at(name);
    FUZZ_ASSERT(u.shape == t.shape);
    FUZZ_ASSERT(same_bits(u.data, t.data));
  }
  return 0;
}
