// kernels/cpu/gemm: values against a naive double triple loop (all transposes, accumulate on/off,
// odd and empty sizes, padded leading dimensions), every output written, nothing outside C touched,
// and bitwise independence from the OpenMP thread count.
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <omp.h>

#include "tests/catch.h"

using unipool::cpu::gemm;

namespace {

// A problem with its operands stored as gemm sees them (row-major, with leading dimensions).
template <typename T>
struct Problem {
  bool transA, transB, accumulate;
  int M, N, K, lda, ldb, ldc;
  std::vector<T> A, B, C0;  // C0: the initial C (poisoned with NaN when !accumulate)

  Problem(bool ta, bool tb, bool acc, int m, int n, int k, int pad, unsigned seed)
      : transA(ta), transB(tb), accumulate(acc), M(m), N(n), K(k) {
    lda = std::max(1, ta ? M : K) + pad;  // leading dimensions are at least 1, as in BLAS
    ldb = std::max(1, tb ? K : N) + pad;
    ldc = std::max(1, N) + pad;
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    A.resize((size_t)(ta ? K : M) * lda + 1);
    B.resize((size_t)(tb ? N : K) * ldb + 1);
    C0.resize((size_t)M * ldc + 1);
    for (auto& x : A) x = T(dist(rng));
    for (auto& x : B) x = T(dist(rng));
    // Elements of C outside the [M,N] window must never change: fill them with a sentinel.
    for (size_t i = 0; i < C0.size(); ++i) {
      const bool inside = (int)(i / ldc) < M && (int)(i % ldc) < N;
      C0[i] = !inside ? T(12345) : acc ? T(dist(rng)) : std::numeric_limits<T>::quiet_NaN();
    }
  }
  double a(int i, int k) const { return transA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]; }
  double b(int k, int j) const { return transB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]; }

  std::vector<T> run() const {
    std::vector<T> C = C0;
    gemm<T>(transA, transB, M, N, K, A.data(), lda, B.data(), ldb, accumulate, C.data(), ldc);
    return C;
  }
};

// Compare C with the naive double product; tolerance from the standard dot-product error bound.
template <typename T>
void check_against_naive(const Problem<T>& p, const std::vector<T>& C) {
  const double eps = std::numeric_limits<T>::epsilon();
  int bad = 0;
  for (int i = 0; i < p.M; ++i)
    for (int j = 0; j < p.N; ++j) {
      double sum = 0.0, abs_sum = 0.0;
      for (int k = 0; k < p.K; ++k) {
        sum += p.a(i, k) * p.b(k, j);
        abs_sum += std::fabs(p.a(i, k) * p.b(k, j));
      }
      const size_t at = (size_t)i * p.ldc + j;
      double expected = sum;
      if (p.accumulate) {
        expected += (double)p.C0[at];
        abs_sum += std::fabs((double)p.C0[at]);
      }
      const double tol = 2.0 * (p.K + 2) * eps * abs_sum + 1e-30;
      const double got = (double)C[at];
      if (!(std::fabs(got - expected) <= tol) && bad++ < 5)
        FAIL_CHECK("C[" << i << "," << j << "] = " << got << ", expected " << expected << " (tol "
                        << tol << ")");
    }
  CHECK(bad == 0);
  // Outside the [M,N] window (row padding, the extra trailing element) C is untouched.
  for (size_t at = 0; at < C.size(); ++at) {
    const bool inside = (int)(at / p.ldc) < p.M && (int)(at % p.ldc) < p.N;
    if (!inside && C[at] != T(12345)) {
      FAIL_CHECK("C outside the output window changed at flat index " << at);
      break;
    }
  }
}

struct Shape {
  int M, N, K;
};

// Odd sizes, empty dimensions, more than one k block (K > 384), more than one row block (M > 144)
// and more than one column block (N > 768), tiny-M shapes where the work is split along N.
const Shape kShapes[] = {{1, 1, 1},       {7, 33, 100},  {257, 7, 33}, {33, 257, 1},
                         {100, 100, 257}, {1, 257, 100}, {257, 1, 7},  {13, 100, 600},
                         {3, 1100, 20},   {300, 70, 64}, {16, 64, 48}, {0, 5, 3},
                         {5, 0, 3},       {5, 3, 0},     {0, 0, 0}};

template <typename T>
void check_all_cases() {
  unsigned seed = 1;
  for (const Shape& s : kShapes)
    for (int trans = 0; trans < 4; ++trans)
      for (int acc = 0; acc < 2; ++acc) {
        const bool ta = trans & 1, tb = trans & 2;
        const int pad = (trans + acc) % 2 ? 3 : 0;  // half the cases with padded leading dimensions
        INFO("M=" << s.M << " N=" << s.N << " K=" << s.K << " transA=" << ta << " transB=" << tb
                  << " accumulate=" << acc << " pad=" << pad);
        Problem<T> p(ta, tb, acc, s.M, s.N, s.K, pad, seed++);
        check_against_naive(p, p.run());
      }
}

// Run the same problem with 1, 2 and 3 threads, and again with the default; all bitwise equal.
template <typename T>
void check_thread_independence(const Shape& s) {
  const int saved_threads = omp_get_max_threads();
  unsigned seed = 100;
  for (int trans = 0; trans < 4; ++trans) {
    const bool ta = trans & 1, tb = trans & 2, acc = trans == 1 || trans == 2;
    INFO("M=" << s.M << " N=" << s.N << " K=" << s.K << " transA=" << ta << " transB=" << tb
              << " accumulate=" << acc);
    Problem<T> p(ta, tb, acc, s.M, s.N, s.K, 1, seed++);
    omp_set_num_threads(1);
    const std::vector<T> one = p.run();
    for (int threads : {2, 3}) {
      omp_set_num_threads(threads);
      const std::vector<T> many = p.run();
      CHECK(std::memcmp(one.data(), many.data(), one.size() * sizeof(T)) == 0);
    }
    omp_set_num_threads(saved_threads);
    const std::vector<T> again = p.run();  // and from run to run
    CHECK(std::memcmp(one.data(), again.data(), one.size() * sizeof(T)) == 0);
  }
  omp_set_num_threads(saved_threads);
}

}  // namespace

TEST_CASE("gemm<float> matches a naive product", "[gemm]") {
  check_all_cases<float>();
}

TEST_CASE("gemm<double> matches a naive product", "[gemm]") {
  check_all_cases<double>();
}

TEST_CASE("gemm results do not depend on the thread count", "[gemm]") {
  for (const Shape& s : {Shape{300, 200, 150}, Shape{1000, 70, 64}, Shape{16, 1100, 500}}) {
    check_thread_independence<float>(s);
    check_thread_independence<double>(s);
  }
}

TEST_CASE("gemm called from inside a parallel region", "[gemm]") {
  // The engine may run independent products (one per expert) on different threads at once: each
  // uses its own packing buffers and gets the same bits as when run alone.
  std::vector<Problem<float>> problems;
  // Some big enough to want threads of their own, some too small for that (they must still not
  // share out their loops among the threads of the enclosing region).
  for (int e = 0; e < 12; ++e) {
    const bool big = e % 2 == 0;
    problems.emplace_back(e & 1, e & 2, e & 4, big ? 40 + 30 * e : 1 + e, big ? 96 : 24,
                          big ? 300 : 9, 2, 500 + e);
  }
  std::vector<std::vector<float>> alone, together(problems.size());
  for (const auto& p : problems) alone.push_back(p.run());
#pragma omp parallel for schedule(dynamic)
  for (int e = 0; e < (int)problems.size(); ++e) together[e] = problems[e].run();
  for (size_t e = 0; e < problems.size(); ++e)
    CHECK(std::memcmp(alone[e].data(), together[e].data(), alone[e].size() * sizeof(float)) == 0);
}

TEST_CASE("gemm K == 0 writes zeros, accumulate leaves C alone", "[gemm]") {
  std::vector<float> C(3 * 5, std::numeric_limits<float>::quiet_NaN());
  gemm<float>(false, true, 3, 4, 0, nullptr, 1, nullptr, 1, false, C.data(), 5);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) {
      if (j < 4)
        CHECK(C[i * 5 + j] == 0.0f);
      else
        CHECK(std::isnan(C[i * 5 + j]));
    }
  std::vector<double> D(6, 2.5);
  gemm<double>(true, false, 2, 3, 0, nullptr, 1, nullptr, 1, true, D.data(), 3);
  for (double x : D) CHECK(x == 2.5);
}
