// Parameter initialisation (docs/model.md §Initialisation): N(0, σ) or ones, where every value depends only on
// (seed, tensor name, element index) — never on backend, thread count or number of ranks.
//
// Each element draws from a counter-based generator: key = mix(seed, fnv1a(name)), and element i
// turns mix(key, i) into two uniforms and one Box–Muller normal, computed in double.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

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

// Fills the arena (layout.arena_size elements; padding between tensors set to 0).
template <typename T>
void init_parameters(const Layout& layout, T* arena, uint64_t seed) {
  for (int64_t i = 0; i < layout.arena_size; ++i) arena[i] = T(0);
  for (const ParamTensor& t : layout.tensors) {
    T* p = arena + t.offset;
    if (t.init == InitKind::ones) {
      for (int64_t i = 0; i < t.numel; ++i) p[i] = T(1);
      continue;
    }
    if (t.init == InitKind::zeros) continue;
    const uint64_t key = splitmix64(seed ^ fnv1a(t.name));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < t.numel; ++i) {
      p[i] = static_cast<T>(t.init_std * counter_normal(key, static_cast<uint64_t>(i)));
    }
  }
}

}  // namespace unipool
