// Parameter initialisation (docs/model.md §Initialisation): N(0, σ) or ones, where every value depends only on
// (seed, tensor name, element index) — never on backend, thread count or number of ranks.
//
// Each element draws from a counter-based generator: key = mix(seed, fnv1a(name)), and element i
// turns mix(key, i) into two uniforms and one Box–Muller normal, computed in double.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "base/random.h"
#include "model/layout.h"

namespace unipool {

// The i-th standard normal of the stream `key` (Box–Muller, cosine branch).
inline double counter_normal(uint64_t key, uint64_t i) {
  const uint64_t a = splitmix64(key ^ splitmix64(2 * i));
  const uint64_t b = splitmix64(key ^ splitmix64(2 * i + 1));
  const double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;          // [0, 1)
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

// Fills the arena (layout.arena_size elements; padding between tensors set to 0). The arena is
// cut into blocks of at most kInitBlock elements, each inside one tensor and the padding after
// it, which the threads take as they free up (a core lost to another process slows the fill
// instead of holding the others at a barrier). (A CPU arena's pages were faulted in by all threads
// when CpuBackend::alloc zeroed it, kernels/cpu/memory.h.) Every value depends on (seed, tensor
// name, index) only: the same arena, bit for bit, whatever the thread count or the order the blocks
// are done in.
constexpr int64_t kInitBlock = int64_t(1) << 16;

template <typename T>
void init_parameters(const Layout& layout, T* arena, uint64_t seed) {
  struct Block {
    int tensor;
    int64_t begin, end;  // the tensor's own indices; past its numel: the padding after it
  };
  std::vector<Block> blocks;
  const int n = static_cast<int>(layout.tensors.size());
  for (int t = 0; t < n; ++t) {
    const int64_t next = t + 1 < n ? layout.tensors[size_t(t) + 1].offset : layout.arena_size;
    const int64_t span = next - layout.tensors[size_t(t)].offset;
    for (int64_t b = 0; b < span; b += kInitBlock)
      blocks.push_back(Block{t, b, std::min(b + kInitBlock, span)});
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t j = 0; j < static_cast<int64_t>(blocks.size()); ++j) {
    const Block& b = blocks[size_t(j)];
    const ParamTensor& t = layout.tensors[size_t(b.tensor)];
    T* p = arena + t.offset;
    const int64_t end = std::min(b.end, t.numel);
    int64_t i = b.begin;
    if (t.init == InitKind::normal) {
      const uint64_t key = splitmix64(seed ^ fnv1a(t.name));
      for (; i < end; ++i)
        p[i] = static_cast<T>(t.init_std * counter_normal(key, static_cast<uint64_t>(i)));
    } else if (t.init == InitKind::ones) {
      for (; i < end; ++i) p[i] = T(1);
    }
    for (; i < b.end; ++i) p[i] = T(0);  // InitKind::zeros and the padding
  }
}

}  // namespace unipool
