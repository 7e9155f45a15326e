// NormRouter constant c(M, k), reproducing the reference's Monte-Carlo estimate bit for bit in its
// random stream (router.py NormRouter._monte_carlo_y_k):
//
//   rng = numpy.random.RandomState(42)
//   for _ in range(100000):
//       x = rng.randn(M); y = max(0, x / ||x||); y_k = the k largest of y
//       samples.append(1 / sqrt(sum(y_k ** 2)))
//   c = mean(samples)
//
// numpy's legacy RandomState is randomkit: MT19937 (Matsumoto & Nishimura's reference
// genrand_int32), seeded with init_genrand(seed) for an integer seed; rk_double builds a double
// from two 32-bit outputs a, b as ((a >> 5) * 2^26 + (b >> 6)) / 2^53; rk_gauss is the Marsaglia
// polar method: draw x1, x2 uniform in (-1, 1) until 0 < r2 = x1² + x2² < 1, then f = sqrt(-2
// log(r2) / r2), return f*x2 and keep f*x1 for the next call. The cached value lives in the
// generator, so it carries across randn(M) calls (it matters when M is odd). Everything is double
// precision, as in numpy.
//
// Two differences from the reference, both stated in docs/model.md: samples whose top-k norm is 0 (all
// entries <= 0) are skipped instead of producing inf, and the reciprocals are summed in sample
// order (numpy's mean sums pairwise; the difference is far below the 6 significant digits the spec
// fixes).
#include "model/normrouter_constant.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"

namespace unipool {

// Floating point: the project builds with -march=native, where GCC fuses a*b + c into one FMA (one
// rounding instead of two) and would change the last bit of r2 below, hence numpy's Gaussians.
// mul() returns the product rounded to double, which no compiler may fuse into the add that
// follows.
static inline double mul(double a, double b) {
  volatile double p = a * b;
  return p;
}

// ----------------------------------------------------------------------------------------------------
// MT19937 as in randomkit (numpy/random/src/legacy + mt19937).

static const int MT_M = 397;
static const uint32_t MT_MATRIX_A = 0x9908b0dfu;
static const uint32_t MT_UPPER_MASK = 0x80000000u;
static const uint32_t MT_LOWER_MASK = 0x7fffffffu;

NumpyLegacyRandom::NumpyLegacyRandom(uint32_t seed) {
  // init_genrand: what numpy's RandomState(int) calls (mt19937_seed)
  mt_[0] = seed;
  for (int i = 1; i < N; i++) {
    mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + (uint32_t)i;
  }
  pos_ = N;  // the first draw twists
  has_gauss_ = false;
  gauss_ = 0.0;
}

void NumpyLegacyRandom::twist() {
  int i = 0;
  for (; i < N - MT_M; i++) {
    uint32_t y = (mt_[i] & MT_UPPER_MASK) | (mt_[i + 1] & MT_LOWER_MASK);
    mt_[i] = mt_[i + MT_M] ^ (y >> 1) ^ ((0u - (y & 1u)) & MT_MATRIX_A);
  }
  for (; i < N - 1; i++) {
    uint32_t y = (mt_[i] & MT_UPPER_MASK) | (mt_[i + 1] & MT_LOWER_MASK);
    mt_[i] = mt_[i + (MT_M - N)] ^ (y >> 1) ^ ((0u - (y & 1u)) & MT_MATRIX_A);
  }
  uint32_t y = (mt_[N - 1] & MT_UPPER_MASK) | (mt_[0] & MT_LOWER_MASK);
  mt_[N - 1] = mt_[MT_M - 1] ^ (y >> 1) ^ ((0u - (y & 1u)) & MT_MATRIX_A);
  // tempering, done for the whole block at once (a loop the compiler vectorizes)
  for (int j = 0; j < N; j++) {
    uint32_t t = mt_[j];
    t ^= (t >> 11);
    t ^= (t << 7) & 0x9d2c5680u;
    t ^= (t << 15) & 0xefc60000u;
    t ^= (t >> 18);
    out_[j] = t;
  }
  pos_ = 0;
}

uint32_t NumpyLegacyRandom::next_uint32() {
  if (pos_ == N) twist();
  return out_[pos_++];
}

// rk_double from two 32-bit outputs: 27 + 26 = 53 random bits. a * 2^26 is exact, so fused or not
// the sum is the same.
static inline double uniform53(uint32_t a, uint32_t b) {
  return ((a >> 5) * 67108864.0 + (b >> 6)) / 9007199254740992.0;
}

double NumpyLegacyRandom::random_sample() {
  uint32_t a = next_uint32();
  uint32_t b = next_uint32();
  return uniform53(a, b);
}

double NumpyLegacyRandom::standard_normal() {
  if (has_gauss_) {
    has_gauss_ = false;
    return gauss_;
  }
  double x1, x2, r2;
  do {
    x1 = 2.0 * random_sample() - 1.0;  // 2u is exact: fusing cannot change this
    x2 = 2.0 * random_sample() - 1.0;
    r2 = mul(x1, x1) + mul(x2, x2);
  } while (r2 >= 1.0 || r2 == 0.0);
  double f = std::sqrt(-2.0 * std::log(r2) / r2);  // Box-Muller factor
  gauss_ = f * x1;                                 // kept for the next call
  has_gauss_ = true;
  return f * x2;
}

void NumpyLegacyRandom::standard_normal_fill(double* out, int n) {
  int i = 0;
  if (i < n && has_gauss_) {  // the cached second value of the previous pair comes first
    out[i++] = gauss_;
    has_gauss_ = false;
  }
  // Each accepted candidate pair (x1, x2) gives out f*x2 then f*x1, as two standard_normal() calls
  // do. Candidates are drawn in blocks: draw the block, keep the accepted ones with a branch-free
  // compaction, then turn them into Gaussians. A block never has more candidates than the pairs
  // still needed, so no candidate is drawn that the one-at-a-time loop would not have drawn: the
  // stream position afterwards is exactly numpy's.
  const int BLOCK = 64;
  double ax1[BLOCK], ax2[BLOCK], ar2[BLOCK];
  while (i < n) {
    int pairs_needed = (n - i + 1) / 2;
    int tries = pairs_needed < BLOCK ? pairs_needed : BLOCK;
    int accepted = 0;
    int t = 0;
    // fast path: the candidates whose four 32-bit words are all in the current block, read in place
    int in_block = (N - pos_) / 4;
    int fast = tries < in_block ? tries : in_block;
    const uint32_t* w = out_ + pos_;
    for (; t < fast; t++, w += 4) {
      double x1 = 2.0 * uniform53(w[0], w[1]) - 1.0;
      double x2 = 2.0 * uniform53(w[2], w[3]) - 1.0;
      double r2 = mul(x1, x1) + mul(x2, x2);
      ax1[accepted] = x1;
      ax2[accepted] = x2;
      ar2[accepted] = r2;
      accepted += (r2 < 1.0) & (r2 != 0.0);  // the same test as standard_normal's while
    }
    pos_ += 4 * fast;
    for (; t < tries; t++) {  // the candidates that cross into the next block
      double x1 = 2.0 * random_sample() - 1.0;
      double x2 = 2.0 * random_sample() - 1.0;
      double r2 = mul(x1, x1) + mul(x2, x2);
      ax1[accepted] = x1;
      ax2[accepted] = x2;
      ar2[accepted] = r2;
      accepted += (r2 < 1.0) & (r2 != 0.0);
    }
    for (int a = 0; a < accepted; a++) {
      double f = std::sqrt(-2.0 * std::log(ar2[a]) / ar2[a]);
      out[i++] = f * ax2[a];
      if (i < n) {
        out[i++] = f * ax1[a];
      } else {  // n odd: the second value stays cached, exactly as in standard_normal
        gauss_ = f * ax1[a];
        has_gauss_ = true;
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------------
// The Monte-Carlo estimate.

static const int NORMROUTER_SAMPLES = 100000;
static const int NORMROUTER_SEED = 42;
// Up to this k the top-k is kept by insertion into a small sorted buffer (k = 1..4 in every
// config); above it a per-sample nth_element + sort of the first k is cheaper.
static const int TOPK_INSERTION_MAX = 16;

static double compute_normrouter_constant(int M, int k) {
  NumpyLegacyRandom rng(NORMROUTER_SEED);
  std::vector<double> x(M);
  std::vector<double> top(k);  // the k largest entries of ReLU(x), descending
  double sum = 0.0;            // of the reciprocals, in sample order
  int counted = 0;             // samples not skipped
  for (int s = 0; s < NORMROUTER_SAMPLES; s++) {
    // x = rng.randn(M)
    rng.standard_normal_fill(x.data(), M);
    double ss = 0.0;
    for (int i = 0; i < M; i++) ss += mul(x[i], x[i]);
    double norm = std::sqrt(ss);  // np.linalg.norm(x)

    // top-k of ReLU(x): dividing by norm > 0 keeps the order, so select on x and divide after.
    // Filling the buffer with zeros is the ReLU: an entry <= 0 never enters, and if fewer than k
    // entries are positive the rest of the top-k are the zeros of ReLU, exactly as
    // np.sort(y)[::-1][:k] gives.
    if (k <= TOPK_INSERTION_MAX) {
      std::fill(top.begin(), top.end(), 0.0);
      for (int i = 0; i < M; i++) {
        double v = x[i];
        if (v <= top[k - 1]) continue;  // the common case once the buffer holds large values
        int j = k - 1;
        while (j > 0 && top[j - 1] < v) {
          top[j] = top[j - 1];
          j--;
        }
        top[j] = v;
      }
    } else {
      std::vector<double>& y = x;  // x is redrawn next sample, so select in place
      std::nth_element(y.begin(), y.begin() + (k - 1), y.end(), std::greater<double>());
      std::sort(y.begin(), y.begin() + k, std::greater<double>());
      for (int j = 0; j < k; j++) top[j] = std::max(0.0, y[j]);
    }

    // Skip rule (docs/model.md): no positive entry means a zero top-k norm, where the reference gives
    // 1/0.
    if (top[0] <= 0.0) continue;

    // 1 / ||y_k||_2 with y = ReLU(x / norm); y_k ** 2 summed largest first
    double topss = 0.0;
    for (int j = 0; j < k; j++) {
      double y = top[j] / norm;
      topss += mul(y, y);
    }
    sum += 1.0 / std::sqrt(topss);
    counted++;
  }
  // The mean is over the counted samples. A skip needs all M entries <= 0 (probability 2^-M), so
  // for the table's M >= 16 nothing is skipped in practice; M = 8 skips about 1 sample in 256.
  check(counted > 0, "normrouter_constant: every sample has a zero top-k norm (M=" +
                         std::to_string(M) + ", k=" + std::to_string(k) + ")");
  return sum / (double)counted;
}

// Cache: one entry per (M, k), each filled exactly once (std::call_once) outside the map lock, so
// two threads asking for different (M, k) compute in parallel and two asking for the same one
// compute once.
namespace {
struct CachedConstant {
  std::once_flag once;
  double value = 0.0;
};
}  // namespace

double normrouter_constant(int M, int k) {
  if (M < 1 || k < 1 || k > M) {
    throw Error("normrouter_constant: need M >= 1 and 1 <= k <= M (router width M=" +
                std::to_string(M) + ", top_k k=" + std::to_string(k) + ")");
  }
  static std::mutex mutex;
  static std::map<std::pair<int, int>, std::unique_ptr<CachedConstant>> cache;
  CachedConstant* entry;
  {
    std::lock_guard<std::mutex> lock(mutex);
    std::unique_ptr<CachedConstant>& slot = cache[std::make_pair(M, k)];
    if (!slot) slot.reset(new CachedConstant());
    entry = slot.get();  // stable: map nodes and the pointee never move
  }
  std::call_once(entry->once, [&] { entry->value = compute_normrouter_constant(M, k); });
  return entry->value;
}

}  // namespace unipool
