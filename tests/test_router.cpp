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
// UniPool-lock column ops.
TEST_CASE("scale_columns: x[t,i] *= scale[i], hand-checked, and scale 1 is the bitwise identity",
          "[router]") {
  const int N = 3, E = 4;
  std::vector<float> x = {1.0f,  -2.0f, 0.5f,  3.0f,  //
                          4.0f,  0.25f, -1.0f, 0.0f,  //
                          -0.0f, 7.0f,  2.0f,  -6.0f};
  const std::vector<float> scale = {2.0f, 0.5f, -1.0f, 0.0f};
  cpu::scale_columns(x.data(), scale.data(), N, E);
  const std::vector<float> want = {2.0f,  -1.0f,  -0.5f, 0.0f,  //
                                   8.0f,  0.125f, 1.0f,  0.0f,  //
                                   -0.0f, 3.5f,   -2.0f, -0.0f};
  CHECK(x == want);
  CHECK(unipool::test::bitwise_equal(x, want));  // the signs of the zeros too

  // One multiply, rounded once: a non-representable product matches float(x)·float(s).
  const int N2 = 9, E2 = 37;
  const std::vector<float> x0 = to_float(random_vector(size_t(N2) * E2, 71, 5.0));
  const std::vector<float> s2 = to_float(random_vector(size_t(E2), 72, 3.0));
  std::vector<float> x2 = x0;
  cpu::scale_columns(x2.data(), s2.data(), N2, E2);
  for (int t = 0; t < N2; ++t) {
    for (int i = 0; i < E2; ++i) {
      const size_t p = size_t(t) * E2 + i;
      CHECK(x2[p] == x0[p] * s2[i]);
    }
  }

  // scale 1: bitwise unchanged (float and double), NaN, inf and -0 included.
  std::vector<float> xf = x0;
  xf[0] = std::numeric_limits<float>::infinity();
  xf[1] = -0.0f;
  xf[2] = 1e-40f;  // subnormal
  const std::vector<float> xf0 = xf;
  cpu::scale_columns(xf.data(), std::vector<float>(size_t(E2), 1.0f).data(), N2, E2);
  CHECK(unipool::test::bitwise_equal(xf, xf0));
  Vec xd = random_vector(size_t(N2) * E2, 73, 100.0);
  const Vec xd0 = xd;
  cpu::scale_columns(xd.data(), Vec(size_t(E2), 1.0).data(), N2, E2);
  CHECK(unipool::test::bitwise_equal(xd, xd0));

  // N = 0: nothing (null data is not touched); bad shapes throw.
  cpu::scale_columns<float>(nullptr, scale.data(), 0, E);
  CHECK_THROWS_AS(cpu::scale_columns(x.data(), scale.data(), -1, E), unipool::Error);
  CHECK_THROWS_AS(cpu::scale_columns(x.data(), scale.data(), N, 0), unipool::Error);
}

TEST_CASE("select_columns forward and backward: hand-checked, backward writes +0 elsewhere",
          "[router]") {
  const int N = 2, E = 5, K = 3;
  const Ids cols = {3, 0, 4};
  const std::vector<float> in = {10.0f, 11.0f, 12.0f, 13.0f, 14.0f,  //
                                 20.0f, 21.0f, 22.0f, 23.0f, 24.0f};
  auto out = nan_vector<float>(size_t(N) * K);
  cpu::select_columns_forward(out.data(), in.data(), cols.data(), N, E, K);
  CHECK(out == std::vector<float>{13.0f, 10.0f, 14.0f, 23.0f, 20.0f, 24.0f});

  // dout with a -0 that must survive the copy; din poisoned with NaN and -0 beforehand.
  const std::vector<float> dout = {1.5f, -0.0f, -2.0f, 0.25f, 3.0f, -7.0f};
  std::vector<float> din(size_t(N) * E, -0.0f);
  for (size_t p = 0; p < din.size(); p += 2) din[p] = std::numeric_limits<float>::quiet_NaN();
  cpu::select_columns_backward(din.data(), dout.data(), cols.data(), N, E, K);
  const std::vector<float> want = {-0.0f, 0.0f, 0.0f, 1.5f,  -2.0f,  //
                                   3.0f,  0.0f, 0.0f, 0.25f, -7.0f};
  CHECK(unipool::test::bitwise_equal(din, want));
  for (int t = 0; t < N; ++t) {
    for (int i : {1, 2}) {  // not selected: +0, the sign bit clear
      CHECK_FALSE(std::signbit(din[size_t(t) * E + i]));
      CHECK(din[size_t(t) * E + i] == 0.0f);
    }
  }
  CHECK(std::signbit(din[0]));  // the selected -0 of dout stays -0

  // K = E with a permutation: the backward is the inverse permutation.
  const Ids perm = {2, 4, 1, 0, 3};
  std::vector<float> pout(size_t(N) * E), back(size_t(N) * E);
  cpu::select_columns_forward(pout.data(), in.data(), perm.data(), N, E, E);
  cpu::select_columns_backward(back.data(), pout.data(), perm.data(), N, E, E);
  CHECK(back == in);

  // N = 0: nothing; bad shapes and columns throw.
  cpu::select_columns_forward<float>(nullptr, nullptr, cols.data(), 0, E, K);
  cpu::select_columns_backward<float>(nullptr, nullptr, cols.data(), 0, E, K);
  for (int badK : {0, E + 1}) {
    CHECK_THROWS_AS(cpu::select_columns_forward(out.data(), in.data(), perm.data(), N, E, badK),
                    unipool::Error);
    CHECK_THROWS_AS(cpu::select_columns_backward(din.data(), dout.data(), perm.data(), N, E, badK),
                    unipool::Error);
  }
  CHECK_THROWS_AS(cpu::select_columns_forward(out.data(), in.data(), cols.data(), -1, E, K),
                  unipool::Error);
  CHECK_THROWS_AS(cpu::select_columns_backward(din.data(), dout.data(), cols.data(), -1, E, K),
                  unipool::Error);
  const Ids outside = {3, 5, 0}, negative = {-1, 0, 1}, twice = {1, 3, 1};
  CHECK_THROWS_AS(cpu::select_columns_forward(out.data(), in.data(), outside.data(), N, E, K),
                  unipool::Error);
  CHECK_THROWS_AS(cpu::select_columns_forward(out.data(), in.data(), negative.data(), N, E, K),
                  unipool::Error);
  CHECK_THROWS_AS(cpu::select_columns_backward(din.data(), dout.data(), outside.data(), N, E, K),
                  unipool::Error);
  CHECK_THROWS_AS(cpu::select_columns_backward(din.data(), dout.data(), twice.data(), N, E, K),
                  unipool::Error);
  // A repeated column is a valid forward (a copy twice).
  cpu::select_columns_forward(out.data(), in.data(), twice.data(), N, E, K);
  CHECK(out == std::vector<float>{11.0f, 13.0f, 11.0f, 21.0f, 23.0f, 21.0f});
}

TEST_CASE("select_columns_backward is the adjoint of select_columns_forward", "[router]") {
  for (int K : {1, 5, 13}) {
    const int N = 7, E = 13;
    INFO("K " << K);
    const Ids cols = random_ids(1, K, E, 81u + uint32_t(K));  // K distinct columns in [0, E)
    const Vec x = random_vector(size_t(N) * E, 82u + uint32_t(K));
    const Vec y = random_vector(size_t(N) * K, 83u + uint32_t(K));
    auto sx = nan_vector<double>(size_t(N) * K);
    cpu::select_columns_forward(sx.data(), x.data(), cols.data(), N, E, K);
    auto sty = nan_vector<double>(size_t(N) * E);
    cpu::select_columns_backward(sty.data(), y.data(), cols.data(), N, E, K);
    CHECK(all_finite(sx));
    CHECK(all_finite(sty));
    // <select(x), y> = <x, select_backward(y)>
    const double lhs = weighted_sum(sx, y), rhs = weighted_sum(x, sty);
    CHECK(lhs == Approx(rhs).epsilon(1e-14));
    // The explicit adjoint: Pᵀy has y[t,j] at (t, cols[j]) and +0 elsewhere.
    Vec want(size_t(N) * E, 0.0);
    for (int t = 0; t < N; ++t)
      for (int j = 0; j < K; ++j)
        want[size_t(t) * E + size_t(cols[size_t(j)])] = y[size_t(t) * K + j];
    CHECK(unipool::test::bitwise_equal(sty, want));
    // Thread-count independent.
    const auto runs = with_thread_counts([&] {
      Vec d(size_t(N) * E, -1.0);
      cpu::select_columns_backward(d.data(), y.data(), cols.data(), N, E, K);
      return d;
    });
    for (const auto& r : runs) CHECK(unipool::test::bitwise_equal(r, want));
  }
}

TEST_CASE("map_ids: ids[n] = table[ids[n]] against a hand-written table", "[router]") {
  // A table of K = 6 visible experts: local id j → pool id table[j].
  const Ids table = {17, 3, 42, 0, 9, 25};
  Ids ids = {0, 5, 2, 2, 1, 4, 3, 0};
  cpu::map_ids(ids.data(), table.data(), int64_t(ids.size()));
  CHECK(ids == Ids{17, 25, 42, 42, 3, 9, 0, 17});
  // Applying the identity table changes nothing; n = 0 is a no-op on any pointer.
  Ids same = {4, 1, 0};
  const Ids identity = {0, 1, 2, 3, 4};
  cpu::map_ids(same.data(), identity.data(), 3);
  CHECK(same == Ids{4, 1, 0});
  cpu::map_ids(nullptr, nullptr, 0);
  CHECK_THROWS_AS(cpu::map_ids(same.data(), identity.data(), -1), unipool::Error);
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
