// NormRouter constant c(M, k) (docs/model.md §NormRouter) and the numpy legacy RandomState behind it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "model/normrouter_constant.h"
#include "tests/catch.h"

using unipool::normrouter_constant;
using unipool::NumpyLegacyRandom;

// Exact double equality (the stream must be numpy's bit for bit), with a readable failure.
static void require_same_double(double got, double want) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "got %.17g, want %.17g", got, want);
  INFO(buf);
  REQUIRE(got == want);
}

TEST_CASE("NumpyLegacyRandom(42) reproduces numpy's RandomState(42)", "[normrouter]") {
  SECTION("randn(5)") {
    // numpy's exact doubles (repr). The second is often quoted to 16 digits as -0.1382643011711847,
    // which is 2 ulp away; the full value is -0.13826430117118466.
    NumpyLegacyRandom rng(42);
    require_same_double(rng.standard_normal(), 0.4967141530112327);
    double second = rng.standard_normal();
    require_same_double(second, -0.13826430117118466);
    REQUIRE(std::fabs(second - -0.1382643011711847) < 1e-16);
    require_same_double(rng.standard_normal(), 0.6476885381006925);
    require_same_double(rng.standard_normal(), 1.5230298564080254);
    require_same_double(rng.standard_normal(), -0.23415337472333597);
  }
  SECTION("random_sample()") {
    NumpyLegacyRandom rng(42);
    require_same_double(rng.random_sample(), 0.3745401188473625);
    require_same_double(rng.random_sample(), 0.9507143064099162);
    require_same_double(rng.random_sample(), 0.7319939418114051);
  }
  SECTION("standard_normal_fill == repeated standard_normal, odd lengths and twists included") {
    NumpyLegacyRandom a(42), b(42);
    std::vector<double> buf;
    for (int n : {1, 0, 7, 384, 2, 1, 33, 5000, 3, 48}) {
      buf.assign(n, 0.0);
      a.standard_normal_fill(buf.data(), n);
      for (int i = 0; i < n; i++) {
        INFO("n=" << n << " i=" << i);
        REQUIRE(buf[i] == b.standard_normal());
      }
    }
    // same state afterwards: the cached Gaussian and the MT position agree
    for (int i = 0; i < 5; i++) REQUIRE(a.standard_normal() == b.standard_normal());
    REQUIRE(a.next_uint32() == b.next_uint32());
  }
}

// A 6-significant-digit match, last digit +-1: |got - want| <= 1 unit of the 6th digit (plus
// rounding).
static void require_six_digits(int M, int k, double want) {
  double got = normrouter_constant(M, k);
  double unit = std::pow(10.0, std::floor(std::log10(std::fabs(want))) - 5);
  char buf[128];
  std::snprintf(buf, sizeof buf, "c(M=%d, k=%d) = %.9f, docs/model.md says %.6f", M, k, got, want);
  INFO(buf);
  REQUIRE(std::fabs(got - want) <= 1.5 * unit);
}

TEST_CASE("normrouter_constant reproduces the docs/model.md table", "[normrouter]") {
  // k = 1: the paper's pool sizes (8L for L = 6..48 and the reduced pools)
  require_six_digits(48, 1, 3.190055);
  require_six_digits(64, 1, 3.499159);
  require_six_digits(96, 1, 4.016194);
  require_six_digits(128, 1, 4.448096);
  require_six_digits(144, 1, 4.638498);
  require_six_digits(160, 1, 4.820298);
  require_six_digits(192, 1, 5.158132);
  require_six_digits(288, 1, 6.012228);
  require_six_digits(384, 1, 6.722189);
  // k > 1: the fine-grained sweep
  require_six_digits(192, 2, 3.848425);
  require_six_digits(384, 4, 3.760824);
  require_six_digits(16, 2, 1.918122);
  require_six_digits(32, 4, 1.770994);
}

// The reference's loop transcribed literally (router.py NormRouter._monte_carlo_y_k), plus the
// skip: y = max(0, x / ||x||), sort descending, 1 / sqrt(sum of the first k squared).
static double reference_constant(int M, int k) {
  NumpyLegacyRandom rng(42);
  std::vector<double> x(M), y(M);
  double sum = 0.0;
  int counted = 0;
  for (int s = 0; s < 100000; s++) {
    double ss = 0.0;
    for (int i = 0; i < M; i++) {
      x[i] = rng.standard_normal();
      ss += x[i] * x[i];
    }
    double norm = std::sqrt(ss);
    for (int i = 0; i < M; i++) y[i] = std::max(0.0, x[i] / norm);
    std::sort(y.begin(), y.end(), [](double a, double b) { return a > b; });
    double topss = 0.0;
    for (int j = 0; j < k; j++) topss += y[j] * y[j];
    if (topss == 0.0) continue;
    sum += 1.0 / std::sqrt(topss);
    counted++;
  }
  return sum / counted;
}

TEST_CASE("normrouter_constant: skip rule, large k, cache, bad arguments", "[normrouter]") {
  SECTION("M=8, k=1 is finite: all-negative samples are skipped, not 1/0") {
    double c = normrouter_constant(8, 1);
    REQUIRE(std::isfinite(c));
    REQUIRE(c > 1.0);
  }
  SECTION("both top-k paths and odd M agree with the literal reference loop") {
    // k <= 16 keeps a sorted buffer, k > 16 uses nth_element; M = 7 leaves a cached Gaussian
    // between samples; M = 8 has skipped samples. Only rounding may differ (the order of the
    // squares' sum).
    struct Case {
      int M, k;
    };
    for (Case c : {Case{18, 16}, Case{18, 17}, Case{7, 3}, Case{8, 1}}) {
      INFO("M=" << c.M << " k=" << c.k);
      double got = normrouter_constant(c.M, c.k);
      double want = reference_constant(c.M, c.k);
      REQUIRE(std::fabs(got - want) <= 1e-13 * want);
    }
    // M=1: x/||x|| is +-1, the -1 samples are skipped and every other one gives exactly 1
    REQUIRE(normrouter_constant(1, 1) == 1.0);
  }
  SECTION("cached and thread-safe: concurrent callers all get the same value") {
    std::vector<double> got(4, 0.0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++)
      threads.emplace_back([&got, t] { got[t] = normrouter_constant(24, 2); });
    for (auto& th : threads) th.join();
    for (int t = 1; t < 4; t++) REQUIRE(got[t] == got[0]);
    REQUIRE(normrouter_constant(24, 2) == got[0]);
  }
  SECTION("bad arguments throw an Error naming M and k") {
    struct Bad {
      int M, k;
    };
    for (Bad b : {Bad{8, 0}, Bad{8, 9}, Bad{0, 1}, Bad{-3, 1}, Bad{4, -1}}) {
      INFO("M=" << b.M << " k=" << b.k);
      try {
        normrouter_constant(b.M, b.k);
        FAIL("no exception");
      } catch (const unipool::Error& e) {
        std::string msg = e.what();
        REQUIRE(msg.find("M=" + std::to_string(b.M)) != std::string::npos);
        REQUIRE(msg.find("k=" + std::to_string(b.k)) != std::string::npos);
      }
    }
  }
}
