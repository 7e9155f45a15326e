// The NormRouter constant c(M, k) of docs/model.md §NormRouter, and the numpy legacy RandomState that
// the reference implementation draws it from. c calibrates the selected router score to about 1 at
// init:
//
//   c(M, k) = mean over 100,000 samples of 1 / ||top-k(ReLU(x / ||x||))||_2,   x ~ N(0, I_M),
//
// with x = numpy.random.RandomState(42).randn(M), drawn once per sample from one generator.
#pragma once
#include <cstdint>

namespace unipool {

// numpy's legacy RandomState (randomkit): MT19937 seeded like RandomState(seed) (init_genrand),
// doubles with 53 random bits from two 32-bit outputs, and randn() via the Marsaglia polar method,
// which makes Gaussians in pairs and caches the second one. Bit-for-bit the same stream as numpy's:
//   NumpyLegacyRandom(42).standard_normal() x4 == numpy.random.RandomState(42).randn(4)
//   NumpyLegacyRandom(42).random_sample()      == numpy.random.RandomState(42).random_sample()
class NumpyLegacyRandom {
 public:
  explicit NumpyLegacyRandom(uint32_t seed);
  uint32_t next_uint32();    // one tempered MT19937 output (randomkit rk_random)
  double random_sample();    // uniform in [0, 1) with 53 bits (rk_double)
  double standard_normal();  // N(0, 1) (rk_gauss / legacy_gauss)
  // n values of standard_normal() in a row (randn(n)): the same values and the same state
  // afterwards, but the polar method's accept/reject runs branch-free over blocks of candidate
  // pairs, which is about twice as fast. Used by normrouter_constant.
  void standard_normal_fill(double* out, int n);

 private:
  static const int N = 624;
  void twist();      // regenerate all N words of state and their tempered outputs
  uint32_t mt_[N];   // MT19937 state
  uint32_t out_[N];  // tempered outputs of mt_, handed out in order
  int pos_;          // next index into out_; N means twist first
  bool has_gauss_;   // a cached second value of the last polar pair is waiting
  double gauss_;
};

// c(M, k) of docs/model.md §NormRouter. Computed once per (M, k) and cached (thread-safe). Samples whose top-k norm
// is 0 (all M entries <= 0) are skipped, so the value is finite for every M >= 1 (e.g. M = 8, k =
// 1). Throws unipool::Error when M < 1, k < 1 or k > M.
double normrouter_constant(int M, int k);

}  // namespace unipool
