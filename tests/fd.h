// Helpers for the op tests: finite differences for the backward tests (in double precision),
// random inputs and comparisons shared by the CPU and GPU tests.
#pragma once
#include <cmath>
#include <cstring>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "tests/catch.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace unipool::test {

// Deterministic random vector in [-scale, scale) (uniform) from a small seed.
inline std::vector<double> random_vector(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-scale, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// Central difference d loss / d p for one scalar p that `loss` reads.
inline double central_difference(const std::function<double()>& loss, double* p, double h = 1e-6) {
  const double saved = *p;
  *p = saved + h;
  const double up = loss();
  *p = saved - h;
  const double down = loss();
  *p = saved;
  return (up - down) / (2 * h);
}

// |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|)
inline bool close_enough(double analytic, double numeric, double rtol = 1e-6, double atol = 1e-8) {
  return std::fabs(analytic - numeric) <=
         atol + rtol * std::max(std::fabs(analytic), std::fabs(numeric));
}

// Checks analytic gradient `grad` of `loss` w.r.t. every element of `params` (or a sample of
// `max_checks` of them, evenly strided) by central differences. Reports the first failures.
inline void check_gradient(const std::function<double()>& loss, std::vector<double>& params,
                           const std::vector<double>& grad, const char* what,
                           size_t max_checks = 1000000, double rtol = 1e-6, double atol = 1e-8) {
  REQUIRE(params.size() == grad.size());
  const size_t stride = params.size() <= max_checks ? 1 : params.size() / max_checks;
  int failures = 0;
  for (size_t i = 0; i < params.size(); i += stride) {
    const double numeric = central_difference(loss, &params[i]);
    if (!close_enough(grad[i], numeric, rtol, atol)) {
      if (failures < 5) {
        UNSCOPED_INFO(what << "[" << i << "]: analytic " << grad[i] << " numeric " << numeric);
      }
      ++failures;
    }
  }
  CHECK(failures == 0);
}

using Vec = std::vector<double>;

// Σ_i a[i]·b[i]: the scalar loss "Σ output ⊙ R" used to test an op's backward.
inline double weighted_sum(const Vec& a, const Vec& b) {
  REQUIRE(a.size() == b.size());
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Outputs are poisoned with NaN before a call that must overwrite them all.
template <typename T>
std::vector<T> nan_vector(size_t n) {
  return std::vector<T>(n, std::numeric_limits<T>::quiet_NaN());
}

template <typename T>
bool all_finite(const std::vector<T>& v) {
  for (T x : v) {
    if (!std::isfinite(x)) return false;
  }
  return true;
}

// Routing ids [N,k]: k distinct experts per token, uniform in [0, E).
using Ids = std::vector<int32_t>;
inline Ids random_ids(int N, int k, int E, uint32_t seed) {
  std::mt19937 gen(seed);
  Ids ids(size_t(N) * k);
  for (int t = 0; t < N; ++t) {
    for (int j = 0; j < k; ++j) {
      int32_t e;
      bool dup;
      do {
        e = int32_t(gen() % uint32_t(E));
        dup = false;
        for (int q = 0; q < j; ++q) dup |= ids[size_t(t) * k + q] == e;
      } while (dup);
      ids[size_t(t) * k + j] = e;
    }
  }
  return ids;
}

// Offsets [E+1] of the expert-major rows from per-expert row counts.
inline std::vector<int32_t> offsets_from_counts(const std::vector<int32_t>& counts) {
  std::vector<int32_t> off(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) off[e + 1] = off[e] + counts[e];
  return off;
}

inline std::vector<float> to_float(const Vec& v) {
  return std::vector<float>(v.begin(), v.end());
}

template <typename T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Runs fn() with 1, 2 and 3 OpenMP threads; returns the three results.
template <class F>
auto with_thread_counts(F fn) {
  std::vector<decltype(fn())> results;
#ifdef _OPENMP
  const int saved = omp_get_max_threads();
  for (int n : {1, 2, 3}) {
    omp_set_num_threads(n);
    results.push_back(fn());
  }
  omp_set_num_threads(saved);
#else
  for (int n = 0; n < 3; ++n) results.push_back(fn());
#endif
  return results;
}

}  // namespace unipool::test
