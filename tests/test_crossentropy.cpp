// The fused LM-head cross-entropy (kernels/cpu/crossentropy.h): losses against the formula, dlogits
// against central differences in double, stability for large logits, bad targets, bitwise
// independence of the OpenMP thread count, full overwrite of the losses. GPU twin:
// tests/test_cuda_crossentropy.cpp.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/cpu/ops.h"
#include "tests/catch.h"
#include "tests/fd.h"

namespace cpu = unipool::cpu;
using unipool::test::all_finite;
using unipool::test::bitwise_equal;
using unipool::test::check_gradient;
using unipool::test::nan_vector;
using unipool::test::random_vector;
using unipool::test::to_float;
using unipool::test::Vec;
using unipool::test::weighted_sum;
using unipool::test::with_thread_counts;

TEST_CASE("crossentropy: losses match the formula, dlogits match finite differences", "[crossentropy]") {
  const int rows = 3, V = 37;
  Vec logits = random_vector(size_t(rows) * V, 15, 3.0);
  const std::vector<int32_t> targets = {0, 36, 17};
  const double dloss = 0.7;

  Vec losses(rows);
  Vec untouched = logits;
  cpu::crossentropy_forward_backward(losses.data(), untouched.data(), targets.data(), rows, V, 0.0);
  CHECK(untouched == logits);  // dloss = 0: forward only
  for (int r = 0; r < rows; ++r) {
    double m = -1e300, s = 0;
    for (int i = 0; i < V; ++i) m = std::max(m, logits[size_t(r) * V + i]);
    for (int i = 0; i < V; ++i) s += std::exp(logits[size_t(r) * V + i] - m);
    CHECK(losses[r] == Approx(m + std::log(s) - logits[size_t(r) * V + targets[r]]).epsilon(1e-14));
  }

  Vec dlogits = logits;
  cpu::crossentropy_forward_backward(losses.data(), dlogits.data(), targets.data(), rows, V, dloss);
  for (int r = 0; r < rows; ++r) {  // rows of dlogits sum to 0
    double s = 0;
    for (int i = 0; i < V; ++i) s += dlogits[size_t(r) * V + i];
    CHECK(std::fabs(s) < 1e-14);
  }
  check_gradient(
      [&] {
        cpu::crossentropy_forward_backward(losses.data(), logits.data(), targets.data(), rows, V,
                                           0.0);
        return dloss * (losses[0] + losses[1] + losses[2]);
      },
      logits, dlogits, "dlogits");
}

TEST_CASE("crossentropy is stable for large logits and rejects bad targets", "[crossentropy]") {
  std::vector<float> logits = {1000.f, 999.f, -1000.f, 0.f};
  std::vector<float> losses(1);
  const std::vector<int32_t> t = {1};
  cpu::crossentropy_forward_backward(losses.data(), logits.data(), t.data(), 1, 4, 1.0f);
  CHECK(losses[0] == Approx(1.0 + std::log1p(std::exp(-1.0))).epsilon(1e-6));
  CHECK(all_finite(logits));
  const std::vector<int32_t> bad = {4};
  CHECK_THROWS(
      cpu::crossentropy_forward_backward(losses.data(), logits.data(), bad.data(), 1, 4, 1.0f));
}


template <typename T>
void check_crossentropy_threads() {
  const int rows = 7, V = 51200;
  const Vec logits64 = random_vector(size_t(rows) * V, 21, 8.0);
  const std::vector<T> logits(logits64.begin(), logits64.end());
  std::vector<int32_t> targets(rows);
  for (int r = 0; r < rows; ++r) targets[r] = (r * 12345) % V;
  auto res = with_thread_counts([&] {
    std::vector<T> lg = logits, losses(rows);
    cpu::crossentropy_forward_backward(losses.data(), lg.data(), targets.data(), rows, V,
                                       T(1) / rows);
    lg.insert(lg.end(), losses.begin(), losses.end());
    return lg;
  });
  CHECK(bitwise_equal(res[0], res[1]));
  CHECK(bitwise_equal(res[0], res[2]));
  CHECK(all_finite(res[0]));
}

TEST_CASE("crossentropy at V = 51200 is bitwise independent of the thread count",
          "[crossentropy]") {
  check_crossentropy_threads<float>();
  check_crossentropy_threads<double>();
}

TEST_CASE("crossentropy fully overwrites its losses", "[crossentropy]") {
  const int N = 37, V = 45;
  std::vector<int32_t> tokens(N);
  for (int t = 0; t < N; ++t) tokens[t] = (t * 5) % V;
  std::vector<float> logits = to_float(random_vector(size_t(N) * V, 27));
  auto losses = nan_vector<float>(N);
  cpu::crossentropy_forward_backward(losses.data(), logits.data(), tokens.data(), N, V, 0.0f);
  CHECK(all_finite(losses));
  losses = nan_vector<float>(N);
  cpu::crossentropy_forward_backward(losses.data(), logits.data(), tokens.data(), N, V, 0.5f);
  CHECK(all_finite(losses));
  CHECK(all_finite(logits));
}
