// CPU router ops (kernels/cpu/router.h): softmax, sigmoid and NormRouter scores, top-k (with and
// without an expert bias), expert counts,
// balancing terms. Forward values against direct formulas and docs/model.md's conventions (ties,
// NormRouter zero scores), every backward against central differences in double, thread-count
// independence, "=" outputs overwritten. GPU twin: tests/test_cuda_router.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/cpu/ops.h"
#include "tests/catch.h"
#include "tests/fd.h"

namespace cpu = unipool::cpu;
using unipool::test::all_finite;
using unipool::test::check_gradient;
using unipool::test::Ids;
using unipool::test::nan_vector;
using unipool::test::random_ids;
using unipool::test::random_vector;
using unipool::test::to_float;
using unipool::test::Vec;
using unipool::test::weighted_sum;
using unipool::test::with_thread_counts;

namespace {

// Router logits with mixed signs and |z| >= 0.05 (no u at or near 0).
Vec logits_away_from_zero(size_t n, uint32_t seed) {
  Vec z = random_vector(n, seed);
  for (auto& v : z) v = v >= 0 ? v + 0.05 : v - 0.05;
  return z;
}

// Scores whose row values are all distinct with gaps >= 0.05: top-k never changes under FD steps.
Vec separated_scores(int N, int E, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> jitter(-0.005, 0.005);
  Vec s(size_t(N) * E);
  for (int t = 0; t < N; ++t) {
    std::vector<int> perm(E);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), gen);
    for (int i = 0; i < E; ++i) s[size_t(t) * E + i] = 0.05 + 0.06 * perm[i] + jitter(gen);
  }
  return s;
}

// Reference top-k: stable sort by descending value (ties keep the lower index first).
Ids reference_topk(const Vec& s, int N, int E, int k) {
  Ids ids(size_t(N) * k);
  for (int t = 0; t < N; ++t) {
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return s[size_t(t) * E + a] > s[size_t(t) * E + b]; });
    for (int j = 0; j < k; ++j) ids[size_t(t) * k + j] = order[j];
  }
  return ids;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
TEST_CASE("softmax router: rows sum to 1, formula, finite differences", "[router]") {
  const int N = 5, E = 13;
  Vec z = random_vector(size_t(N) * E, 31, 3.0);
  z[0] = 700.0;  // max subtraction keeps this finite
  const Vec R = random_vector(z.size(), 32);
  Vec s(z.size());
  cpu::softmax_forward(s.data(), z.data(), N, E);
  for (int t = 0; t < N; ++t) {
    double sum = 0, m = -1e300, ref = 0;
    for (int i = 0; i < E; ++i) sum += s[size_t(t) * E + i];
    CHECK(sum == Approx(1.0).epsilon(1e-14));
    for (int i = 0; i < E; ++i) m = std::max(m, z[size_t(t) * E + i]);
    for (int i = 0; i < E; ++i) ref += std::exp(z[size_t(t) * E + i] - m);
    for (int i = 0; i < E; ++i) {
      CHECK(s[size_t(t) * E + i] ==
            Approx(std::exp(z[size_t(t) * E + i] - m) / ref).epsilon(1e-13));
    }
  }
  z[0] = 0.3;
  cpu::softmax_forward(s.data(), z.data(), N, E);
  Vec dz(z.size());
  cpu::softmax_backward(dz.data(), R.data(), s.data(), N, E);
  check_gradient(
      [&] {
        cpu::softmax_forward(s.data(), z.data(), N, E);
        return weighted_sum(s, R);
      },
      z, dz, "dz");
}

TEST_CASE("sigmoid router: formula, finite differences", "[router]") {
  const int N = 5, E = 11;
  Vec z = random_vector(size_t(N) * E, 61, 4.0);
  z[3] = -80.0;  // far in the tails: no overflow, s stays in [0, 1]
  z[4] = 80.0;
  const Vec R = random_vector(z.size(), 62);
  Vec s(z.size());
  cpu::sigmoid_forward(s.data(), z.data(), N, E);
  for (size_t i = 0; i < z.size(); ++i) {
    CHECK(s[i] == Approx(1.0 / (1.0 + std::exp(-z[i]))).epsilon(1e-15));
    CHECK(s[i] >= 0.0);
    CHECK(s[i] <= 1.0);
  }
  z[3] = -0.7;
  z[4] = 1.3;
  cpu::sigmoid_forward(s.data(), z.data(), N, E);
  Vec dz(z.size());
  cpu::sigmoid_backward(dz.data(), R.data(), s.data(), N, E);
  check_gradient(
      [&] {
        cpu::sigmoid_forward(s.data(), z.data(), N, E);
        return weighted_sum(s, R);
      },
      z, dz, "dz");
}

TEST_CASE("top-k with an expert bias: chosen on s + b, gated by s, finite differences",
          "[router]") {
  const int N = 6, E = 10;
  const Vec s = separated_scores(N, E, 63);
  // A bias that reorders the experts: the reference is the stable sort of s + b.
  Vec b(E);
  for (int i = 0; i < E; ++i) b[size_t(i)] = 0.11 * ((i * 7) % E) - 0.4;
  Vec keys(s.size());
  for (size_t i = 0; i < s.size(); ++i) keys[i] = s[i] + b[i % E];
  for (int k : {1, 3}) {
    for (bool renorm : {false, true}) {
      INFO("k = " << k << ", renorm = " << renorm);
      Ids ids(size_t(N) * k);
      Vec gates(size_t(N) * k);
      cpu::topk_forward(ids.data(), gates.data(), s.data(), b.data(), N, E, k, renorm);
      CHECK(ids == reference_topk(keys, N, E, k));
      CHECK(ids != reference_topk(s, N, E, k));  // the bias changed the choice
      for (int t = 0; t < N; ++t) {
        double sum = 0;
        for (int j = 0; j < k; ++j) sum += s[size_t(t) * E + ids[size_t(t) * k + j]];
        for (int j = 0; j < k; ++j) {
          const double raw = s[size_t(t) * E + ids[size_t(t) * k + j]];
          CHECK(gates[size_t(t) * k + j] == Approx(renorm ? raw / sum : raw).epsilon(1e-15));
        }
      }
      // The gradient flows to the unbiased scores of the chosen experts only.
      const Vec R = random_vector(size_t(N) * k, 64 + k);
      Vec ds(s.size(), 0.0);
      cpu::topk_backward(ds.data(), R.data(), ids.data(), gates.data(), s.data(), N, E, k, renorm);
      Vec s_moved = s;
      Ids ids2(ids.size());
      check_gradient(
          [&] {
            cpu::topk_forward(ids2.data(), gates.data(), s_moved.data(), b.data(), N, E, k, renorm);
            REQUIRE(ids2 == ids);
            return weighted_sum(gates, R);
          },
          s_moved, ds, "ds");
    }
  }
}

TEST_CASE("entropy term: formula, finite differences, the support mask", "[router]") {
  const int N = 7, E = 9;
  Vec s = random_vector(size_t(N) * E, 71);
  for (auto& v : s) v = std::fabs(v) + 0.02;  // scores are >= 0 (NormRouter, softmax)
  Vec support(E, 1.0);
  support[2] = support[5] = 0.0;
  const double coeff = 0.37, log_target = std::log(3.0);
  for (bool masked : {false, true}) {
    INFO("masked " << masked);
    const double* sup = masked ? support.data() : nullptr;
    Vec loss(1), weight(E);
    cpu::entropy_loss_forward(loss.data(), weight.data(), s.data(), sup, coeff, log_target, N, E);
    // The formula, directly.
    std::vector<double> q(E, 0.0);
    double S = 0;
    for (int i = 0; i < E; ++i) {
      for (int t = 0; t < N; ++t) q[i] += s[size_t(t) * E + i] / N;
      if (masked && support[i] == 0) q[i] = 0;
      S += q[i];
    }
    double H = 0;
    for (double& qi : q) {
      qi /= S + 1e-8;
      H -= qi * std::log(qi + 1e-8);
    }
    CHECK(loss[0] == Approx(coeff * (H - log_target) * (H - log_target)).epsilon(1e-12));
    // The gradient: weight[i] on every row t.
    Vec ds(s.size());
    for (int t = 0; t < N; ++t)
      for (int i = 0; i < E; ++i) ds[size_t(t) * E + i] = weight[i];
    if (masked) CHECK((weight[2] == 0.0 && weight[5] == 0.0));
    check_gradient(
        [&] {
          cpu::entropy_loss_forward(loss.data(), weight.data(), s.data(), sup, coeff, log_target, N,
                                    E);
          return loss[0];
        },
        s, ds, "ds");
  }
  // N = 0: zeros.
  Vec loss = {5.0}, weight(E, 5.0);
  cpu::entropy_loss_forward(loss.data(), weight.data(), s.data(), nullptr, coeff, 1.0, 0, E);
  CHECK(loss[0] == 0.0);
  CHECK(std::all_of(weight.begin(), weight.end(), [](double w) { return w == 0.0; }));
}

TEST_CASE("routing_stats: zero-gate tokens, slots and nonzero-gate slots per expert", "[router]") {
  const int N = 5, k = 2, E = 4;
  const Ids ids = {0, 1, 2, 3, 0, 2, 1, 0, 3, 3};
  const Vec gates = {0.5, 0.0, 0.0, 0.0, 0.2, 0.7, 0.0, 0.0, 0.1, 0.0};
  std::vector<int32_t> stats(1 + 2 * E, 10);  // accumulates onto what is there
  cpu::routing_stats(stats.data(), ids.data(), gates.data(), N, k, E);
  // Tokens 1 and 3 have only zero gates; slots: e0 ×3, e1 ×2, e2 ×2, e3 ×3; nonzero: e0 ×2 (t0,
  // t2), e2 ×1 (t2), e3 ×1 (t4).
  CHECK(stats == std::vector<int32_t>{12, 13, 12, 12, 13, 12, 10, 11, 11});
  const Ids bad = {0, 4};
  CHECK_THROWS_AS(cpu::routing_stats(stats.data(), bad.data(), gates.data(), 1, 2, E),
                  unipool::Error);
}

TEST_CASE("NormRouter forward matches its formula", "[router]") {
  const int N = 4, E = 10;
  const double sigma = 1.7, c = 3.3, sigma_c = sigma * c;
  Vec z = logits_away_from_zero(size_t(N) * E, 33);
  for (int i = 0; i < E; ++i) z[size_t(3) * E + i] = 0.0;  // a zero row
  Vec s(z.size()), norm(N);
  cpu::norm_router_forward(s.data(), norm.data(), z.data(), &sigma, c, N, E);
  for (int t = 0; t < N; ++t) {
    double n2 = 0, relu_sum = 0, s_sum = 0, s_sq = 0;
    for (int i = 0; i < E; ++i) {
      const double v = z[size_t(t) * E + i];
      n2 += v * v;
      relu_sum += std::max(v, 0.0);
    }
    const double n = std::sqrt(n2);
    CHECK(norm[t] == Approx(n).epsilon(1e-14));
    for (int i = 0; i < E; ++i) {
      const double want = sigma_c * std::max(z[size_t(t) * E + i], 0.0) / (n + 1e-8);
      CHECK(s[size_t(t) * E + i] == Approx(want).epsilon(1e-14));
      CHECK(s[size_t(t) * E + i] >= 0.0);
      s_sum += s[size_t(t) * E + i];
      s_sq += s[size_t(t) * E + i] * s[size_t(t) * E + i];
    }
    CHECK(s_sum == Approx(sigma_c * relu_sum / (n + 1e-8)).epsilon(1e-13));
    CHECK(std::sqrt(s_sq) <= sigma_c);  // ||relu(u)|| <= ||u|| < 1
  }
  for (int i = 0; i < E; ++i) CHECK(s[size_t(3) * E + i] == 0.0);
  CHECK(norm[3] == 0.0);
}

TEST_CASE("NormRouter backward matches finite differences in z and sigma", "[router]") {
  const int N = 6, E = 11;
  const double c = 2.9;
  Vec z = logits_away_from_zero(size_t(N) * E, 34);
  for (int i = 0; i < E; ++i) z[size_t(5) * E + i] = 0.0;  // n == 0 row: dz = 0
  Vec sigma = {1.3};
  const Vec R = random_vector(z.size(), 35);
  Vec s(z.size()), norm(N);
  auto loss = [&] {
    cpu::norm_router_forward(s.data(), norm.data(), z.data(), &sigma[0], c, N, E);
    return weighted_sum(s, R);
  };
  loss();
  bool some_negative = false;
  for (double v : z) some_negative |= v < 0;
  REQUIRE(some_negative);

  Vec dz(z.size(), std::numeric_limits<double>::quiet_NaN());
  Vec dsigma = {0.25};  // "+=": starts from a nonzero value
  cpu::norm_router_backward(dz.data(), &dsigma[0], R.data(), z.data(), norm.data(), &sigma[0], c, N,
                            E);
  dsigma[0] -= 0.25;
  CHECK(all_finite(dz));
  for (int i = 0; i < E; ++i) CHECK(dz[size_t(5) * E + i] == 0.0);
  // Rows 0..4 only: the zero row's FD is a kink (not differentiable at z = 0).
  Vec z_head(z.begin(), z.begin() + 5 * E), dz_head(dz.begin(), dz.begin() + 5 * E);
  check_gradient(
      [&] {
        std::copy(z_head.begin(), z_head.end(), z.begin());
        return loss();
      },
      z_head, dz_head, "dz");
  std::copy(z_head.begin(), z_head.end(), z.begin());
  check_gradient(loss, sigma, dsigma, "dsigma");

  // The radial direction gets no gradient (up to ε): <dz_t, z_t> ≈ 0.
  for (int t = 0; t < 5; ++t) {
    double dot = 0;
    for (int i = 0; i < E; ++i) dot += dz[size_t(t) * E + i] * z[size_t(t) * E + i];
    CHECK(std::fabs(dot) < 1e-7);
  }
}

// Double too: the sums run in double, and a float result could hide an order change in them.
template <typename T>
void check_norm_router_threads() {
  const int N = 4099, E = 96;  // a partial last row chunk
  const Vec z64 = logits_away_from_zero(size_t(N) * E, 36), ds64 = random_vector(z64.size(), 37);
  const std::vector<T> z(z64.begin(), z64.end()), ds(ds64.begin(), ds64.end());
  std::vector<T> s(z.size()), norm(N);
  const T sigma = T(1);
  cpu::norm_router_forward(s.data(), norm.data(), z.data(), &sigma, 4.0, N, E);
  auto res = with_thread_counts([&] {
    std::vector<T> dz(z.size());
    T dsigma = T(0.125);
    cpu::norm_router_backward(dz.data(), &dsigma, ds.data(), z.data(), norm.data(), &sigma, 4.0, N,
                              E);
    dz.push_back(dsigma);
    return dz;
  });
  for (int q = 1; q < 3; ++q) {
    CHECK(std::memcmp(&res[0].back(), &res[q].back(), sizeof(T)) == 0);  // dsigma
    CHECK(std::memcmp(res[0].data(), res[q].data(), res[0].size() * sizeof(T)) == 0);
  }
}

TEST_CASE("NormRouter dsigma and dz are bitwise independent of the thread count", "[router]") {
  check_norm_router_threads<float>();
  check_norm_router_threads<double>();
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("top-k: ties go to the lower index", "[router]") {
  const std::vector<float> s = {0.2f, 0.5f, 0.5f, 0.1f};
  Ids ids(2);
  std::vector<float> gates(2);
  cpu::topk_forward(ids.data(), gates.data(), s.data(), nullptr, 1, 4, 2, false);
  CHECK(ids == Ids{1, 2});
  CHECK(gates == std::vector<float>{0.5f, 0.5f});

  const std::vector<float> flat = {0.3f, 0.3f, 0.3f, 0.3f, 0.3f};
  Ids ids3(3);
  std::vector<float> g3(3);
  cpu::topk_forward(ids3.data(), g3.data(), flat.data(), nullptr, 1, 5, 3, false);
  CHECK(ids3 == Ids{0, 1, 2});
  cpu::topk_forward(ids3.data(), g3.data(), flat.data(), nullptr, 1, 5, 3, true);
  CHECK(ids3 == Ids{0, 1, 2});
  CHECK(g3[0] == Approx(1.0 / 3));
}

TEST_CASE(
    "top-k on NormRouter scores with fewer than k positive picks zero experts by lowest index",
    "[router]") {
  const int E = 6, k = 3;
  const std::vector<float> z = {-1.0f, 2.0f, -3.0f, -0.5f, 0.7f, -2.0f};  // two positive scores
  std::vector<float> s(E), norm(1);
  const float sigma = 1.5f;
  cpu::norm_router_forward(s.data(), norm.data(), z.data(), &sigma, 2.0, 1, E);
  Ids ids(k);
  std::vector<float> gates(k);
  cpu::topk_forward(ids.data(), gates.data(), s.data(), nullptr, 1, E, k, false);
  CHECK(ids == Ids{1, 4, 0});
  CHECK(gates[0] == s[1]);
  CHECK(gates[1] == s[4]);
  CHECK(gates[2] == 0.0f);

  const std::vector<float> zneg = {-1.0f, -2.0f, -3.0f, -0.5f, -0.7f, -2.0f};  // none positive
  cpu::norm_router_forward(s.data(), norm.data(), zneg.data(), &sigma, 2.0, 1, E);
  cpu::topk_forward(ids.data(), gates.data(), s.data(), nullptr, 1, E, k, false);
  CHECK(ids == Ids{0, 1, 2});
  CHECK(gates == std::vector<float>{0.0f, 0.0f, 0.0f});
}

TEST_CASE("top-k matches a stable sort, E = 96", "[router]") {
  const int N = 200, E = 96;
  Vec s = random_vector(size_t(N) * E, 38);
  for (size_t i = 0; i < s.size(); i += 7) s[i] = 0.25;  // plenty of exact ties
  for (int k : {1, 2, 4, 8}) {
    Ids ids(size_t(N) * k);
    Vec gates(size_t(N) * k);
    cpu::topk_forward(ids.data(), gates.data(), s.data(), nullptr, N, E, k, false);
    CHECK(ids == reference_topk(s, N, E, k));
    for (size_t i = 0; i < ids.size(); ++i) CHECK(gates[i] == s[(i / k) * E + ids[i]]);
  }
  Ids ids(1);
  Vec g(1);
  CHECK_THROWS(cpu::topk_forward(ids.data(), g.data(), s.data(), nullptr, 1, 4, 5, false));
}

TEST_CASE("top-k backward matches finite differences, with and without renorm", "[router]") {
  const int N = 4, E = 9;
  Vec s = separated_scores(N, E, 39);
  for (int k : {1, 2, 3}) {
    for (bool renorm : {false, true}) {
      INFO("k = " << k << ", renorm = " << renorm);
      const Vec R = random_vector(size_t(N) * k, 40 + k);
      Ids ids(size_t(N) * k);
      Vec gates(size_t(N) * k);
      cpu::topk_forward(ids.data(), gates.data(), s.data(), nullptr, N, E, k, renorm);
      if (renorm) {
        for (int t = 0; t < N; ++t) {
          double sum = 0;
          for (int j = 0; j < k; ++j) sum += gates[size_t(t) * k + j];
          CHECK(sum == Approx(1.0).epsilon(1e-14));
        }
      }
      Vec ds(s.size(), 0.0);
      cpu::topk_backward(ds.data(), R.data(), ids.data(), gates.data(), s.data(), N, E, k, renorm);
      Ids ids2(ids.size());
      check_gradient(
          [&] {
            cpu::topk_forward(ids2.data(), gates.data(), s.data(), nullptr, N, E, k, renorm);
            REQUIRE(ids2 == ids);
            return weighted_sum(gates, R);
          },
          s, ds, "ds");
    }
  }
}

TEST_CASE("expert_counts counts routed tokens and rejects bad ids", "[router]") {
  const int N = 50, k = 2, E = 96;
  const Ids ids = random_ids(N, k, E, 41);
  Ids counts(E, -1);
  cpu::expert_counts(counts.data(), ids.data(), N, k, E);
  Ids want(E, 0);
  for (int32_t e : ids) ++want[e];
  CHECK(counts == want);
  Ids bad = {0, 96};
  CHECK_THROWS(cpu::expert_counts(counts.data(), bad.data(), 1, 2, E));
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("balance loss: formula and finite differences", "[router]") {
  const int N = 7, E = 10;
  Vec s = random_vector(size_t(N) * E, 42);
  for (auto& v : s) v = std::fabs(v);
  Vec weight = random_vector(E, 43);
  for (auto& v : weight) v = std::fabs(v) * 10;
  const double coeff = 0.37;
  double want = 0;
  for (int i = 0; i < E; ++i) {
    double col = 0;
    for (int t = 0; t < N; ++t) col += s[size_t(t) * E + i];
    want += weight[i] * col;
  }
  double loss = std::numeric_limits<double>::quiet_NaN();
  cpu::balance_loss_forward(&loss, s.data(), weight.data(), coeff, N, E);
  CHECK(loss == Approx(coeff * want).epsilon(1e-14));
  Vec ds(s.size(), 0.0);
  cpu::balance_loss_backward(ds.data(), weight.data(), coeff, N, E);
  check_gradient(
      [&] {
        cpu::balance_loss_forward(&loss, s.data(), weight.data(), coeff, N, E);
        return loss;
      },
      s, ds, "ds");
  // float: the double sum is rounded once, and N = 0 gives coeff·0.
  const std::vector<float> sf = to_float(s), wf = to_float(weight);
  float lossf = std::numeric_limits<float>::quiet_NaN();
  cpu::balance_loss_forward(&lossf, sf.data(), wf.data(), coeff, N, E);
  CHECK(lossf == Approx(coeff * want).epsilon(1e-6));
  cpu::balance_loss_forward(&lossf, sf.data(), wf.data(), coeff, 0, E);
  CHECK(lossf == 0.0f);
}

TEST_CASE("z-loss: formula and finite differences", "[router]") {
  const int N = 5, E = 8;
  Vec z = random_vector(size_t(N) * E, 44, 3.0);
  const double coeff = 0.6;
  double want = 0;
  for (int t = 0; t < N; ++t) {
    double se = 0;
    for (int i = 0; i < E; ++i) se += std::exp(z[size_t(t) * E + i]);
    want += std::log(se) * std::log(se);
  }
  double loss = std::numeric_limits<double>::quiet_NaN();
  cpu::z_loss_forward(&loss, z.data(), coeff, N, E);
  CHECK(loss == Approx(coeff * want / N).epsilon(1e-13));
  Vec dz(z.size(), 0.0);
  cpu::z_loss_backward(dz.data(), z.data(), coeff, N, E);
  check_gradient(
      [&] {
        cpu::z_loss_forward(&loss, z.data(), coeff, N, E);
        return loss;
      },
      z, dz, "dz");
  cpu::z_loss_forward(&loss, z.data(), coeff, 0, E);
  CHECK(loss == 0.0);
}

TEST_CASE("balancing bookkeeping: counts_to_float, axpy, pool_counts_update", "[router]") {
  const int E = 5;
  const Ids counts = {0, 3, 17, 1, 262144};
  auto out = nan_vector<float>(E);
  cpu::counts_to_float(out.data(), counts.data(), E);
  CHECK(out == std::vector<float>{0.0f, 3.0f, 17.0f, 1.0f, 262144.0f});

  // axpy: y += a·x, the product in double rounded once (a = 0.1 is not a float).
  const std::vector<float> x = {1.0f, -2.5f, 3.0f, 0.0f, 7.25f};
  std::vector<float> y = {0.5f, 0.5f, -1.0f, 2.0f, 0.0f};
  const std::vector<float> y0 = y;
  cpu::axpy(y.data(), x.data(), 0.1, E);
  for (int i = 0; i < E; ++i) CHECK(y[i] == y0[i] + float(0.1 * double(x[i])));
  cpu::axpy(y.data(), x.data(), 0.0, 0);  // n = 0: nothing
  for (int i = 0; i < E; ++i) CHECK(y[i] == y0[i] + float(0.1 * double(x[i])));

  // pool_counts_update over one pool of 3 layers: ĝ = layer mean, running restarts at 0; ghat
  // untouched before the last layer.
  const int layers = 3;
  const Ids c1 = {1, 2, 3, 4, 5}, c2 = {0, 0, 7, 1, 1}, c3 = {2, 4, 0, 0, 0};
  std::vector<float> running(E, 0.0f), ghat(E, -1.0f);
  cpu::pool_counts_update(running.data(), ghat.data(), c1.data(), false, layers, E);
  cpu::pool_counts_update(running.data(), ghat.data(), c2.data(), false, layers, E);
  CHECK(running == std::vector<float>{1.0f, 2.0f, 10.0f, 5.0f, 6.0f});
  CHECK(ghat == std::vector<float>(E, -1.0f));
  cpu::pool_counts_update(running.data(), ghat.data(), c3.data(), true, layers, E);
  CHECK(running == std::vector<float>(E, 0.0f));
  for (int i = 0; i < E; ++i) {
    CHECK(ghat[i] == float(c1[i] + c2[i] + c3[i]) / 3.0f);
  }
  // The next micro-batch starts from zero.
  cpu::pool_counts_update(running.data(), ghat.data(), c2.data(), false, layers, E);
  CHECK(running == std::vector<float>{0.0f, 0.0f, 7.0f, 1.0f, 1.0f});
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("'=' outputs of the router ops are fully overwritten", "[router]") {
  const int N = 41, E = 12, k = 2;
  const std::vector<float> z = to_float(logits_away_from_zero(size_t(N) * E, 57));
  const std::vector<float> ds = to_float(random_vector(z.size(), 58));

  auto s = nan_vector<float>(z.size());
  cpu::softmax_forward(s.data(), z.data(), N, E);
  CHECK(all_finite(s));
  auto dz = nan_vector<float>(z.size());
  cpu::softmax_backward(dz.data(), ds.data(), s.data(), N, E);
  CHECK(all_finite(dz));

  s = nan_vector<float>(z.size());
  auto norm = nan_vector<float>(N);
  const float sigma = 1.0f;
  cpu::norm_router_forward(s.data(), norm.data(), z.data(), &sigma, 2.0, N, E);
  CHECK(all_finite(s));
  CHECK(all_finite(norm));
  dz = nan_vector<float>(z.size());
  float dsigma = 0;
  cpu::norm_router_backward(dz.data(), &dsigma, ds.data(), z.data(), norm.data(), &sigma, 2.0, N,
                            E);
  CHECK(all_finite(dz));

  for (bool renorm : {false, true}) {
    Ids ids(size_t(N) * k, -1);
    auto gates = nan_vector<float>(size_t(N) * k);
    cpu::topk_forward(ids.data(), gates.data(), s.data(), nullptr, N, E, k, renorm);
    CHECK(all_finite(gates));
    CHECK(std::all_of(ids.begin(), ids.end(), [&](int32_t e) { return e >= 0 && e < E; }));
  }

  s = nan_vector<float>(z.size());
  cpu::sigmoid_forward(s.data(), z.data(), N, E);
  CHECK(all_finite(s));
  dz = nan_vector<float>(z.size());
  cpu::sigmoid_backward(dz.data(), ds.data(), s.data(), N, E);
  CHECK(all_finite(dz));

  const Ids ids = random_ids(N, k, E, 59);
  Ids counts(E, -1);
  cpu::expert_counts(counts.data(), ids.data(), N, k, E);
  CHECK(std::all_of(counts.begin(), counts.end(), [](int32_t c) { return c >= 0; }));
}
