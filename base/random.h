// The hashes and random numbers of unipool, each written once. Every stream here is part of a
// contract: parameter initialisation (model/init.h), the loader's data order (data/loader.cpp),
// the document shuffle of `unipool tokenize`, the sampler of `unipool sample` and the bench's
// random tokens all depend on these exact bit streams, so changing one changes results.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace unipool {

// ---- splitmix64 (Steele, Lea, Flood 2014)
// --------------------------------------------------------
constexpr uint64_t kSplitMixGamma = 0x9E3779B97F4A7C15ULL;  // the Weyl increment (golden ratio)

// The finaliser: a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// splitmix64 as a hash of one word: mix64(x + γ) (the generator's output for state x).
inline uint64_t splitmix64(uint64_t x) {
  return mix64(x + kSplitMixGamma);
}

// The sequential generator: state advances by γ, each output is mix64 of the new state.
struct SplitMix64 {
  uint64_t state;

  uint64_t next() { return mix64(state += kSplitMixGamma); }
  // Uniform in [0, n), n >= 1, unbiased: the lowest (2^64 mod n) outputs are rejected.
  uint64_t below(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1), 53 bits
};

// Fisher–Yates: for i = n … 2, swap element i−1 with a uniform element of [0, i).
template <class T>
void shuffle(T* a, size_t n, SplitMix64& rng) {
  for (size_t i = n; i > 1; --i) {
    const size_t j = static_cast<size_t>(rng.below(i));
    std::swap(a[i - 1], a[j]);
  }
}

// ---- FNV-1a (64-bit)
// -----------------------------------------------------------------------------
struct Fnv1a {
  uint64_t h = 0xCBF29CE484222325ULL;

  void add_bytes(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ULL;
  }
  // The 8 bytes of v, least significant first (the same on every host).
  void add_u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) h = (h ^ ((v >> (8 * i)) & 0xff)) * 0x100000001B3ULL;
  }
};

inline uint64_t fnv1a(const std::string& s) {
  Fnv1a f;
  f.add_bytes(s.data(), s.size());
  return f.h;
}

}  // namespace unipool
