// Parameter initialisation (SPEC.md §1 Init): N(0, σ) or ones, where every value depends only on
// (seed, tensor name, element index) — never on backend, thread count or number of ranks.
//
// Each element draws from a counter-based generator: key = mix(seed, fnv1a(name)), and element i
// turns mix(key, i) into two uniforms and one Box–Muller normal, computed in double.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "model/layout.h"

namespace unipool {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

inline uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001B3ULL;
  return h;
}

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
    const uint64_t key = splitmix64(seed ^ fnv1a(t.name));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < t.numel; ++i) {
      p[i] = static_cast<T>(t.init_std * counter_normal(key, static_cast<uint64_t>(i)));
    }
  }
}

}  // namespace unipool
