// CPU layer ops (kernels/cpu/layers.h): embedding, RMSNorm, SwiGLU, scale_rows, row_dot. Forward
// values against direct formulas, every backward against central differences in double, bitwise
// independence of the OpenMP thread count, and full overwrite of "=" outputs. GPU twin:
// tests/test_cuda_layers.cpp.
#include <algorithm>
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

// ------------------------------------------------------------------------------------------------
TEST_CASE("embedding forward copies rows, backward accumulates per token", "[layers]") {
  const int V = 6, d = 11, N = 9;
  const std::vector<int32_t> tokens = {0, 3, 3, 1, 5, 3, 0, 2, 3};  // row 4 unused, 3 repeated
  Vec E = random_vector(size_t(V) * d, 1);
  const Vec R = random_vector(size_t(N) * d, 2);

  Vec out(size_t(N) * d);
  cpu::embedding_forward(out.data(), tokens.data(), E.data(), N, d);
  for (int t = 0; t < N; ++t) {
    for (int i = 0; i < d; ++i) CHECK(out[size_t(t) * d + i] == E[size_t(tokens[t]) * d + i]);
  }

  Vec dE(E.size(), 0.0);
  cpu::embedding_backward(dE.data(), R.data(), tokens.data(), N, d);
  auto loss = [&] {
    cpu::embedding_forward(out.data(), tokens.data(), E.data(), N, d);
    return weighted_sum(out, R);
  };
  check_gradient(loss, E, dE, "dE");
  for (int i = 0; i < d; ++i) CHECK(dE[size_t(4) * d + i] == 0.0);

  // "+=": a second call adds the same amount again.
  Vec dE2 = dE;
  cpu::embedding_backward(dE2.data(), R.data(), tokens.data(), N, d);
  for (size_t i = 0; i < dE.size(); ++i) CHECK(dE2[i] == Approx(2 * dE[i]).margin(1e-15));
}

TEST_CASE("embedding_backward sums a row's tokens in token order", "[layers]") {
  // Token order is the contract: ((0 + 1e8) + 1) + (−1e8) = 0 in float, any other order differs.
  const int d = 1, N = 3;
  const std::vector<int32_t> tokens = {2, 2, 2};
  const std::vector<float> dout = {1e8f, 1.0f, -1e8f};
  std::vector<float> dE(3, 0.0f);
  cpu::embedding_backward(dE.data(), dout.data(), tokens.data(), N, d);
  CHECK(dE[2] == (((0.0f + 1e8f) + 1.0f) + -1e8f));
}

TEST_CASE("rmsnorm forward matches the formula and backward matches finite differences", "[layers]") {
  const int N = 4, d = 19;  // 19 = two 8-lanes + a tail
  const double eps = 1e-5;
  Vec x = random_vector(size_t(N) * d, 3, 2.0);
  Vec w = random_vector(d, 4, 0.5);
  for (auto& v : w) v += 1.0;
  const Vec R = random_vector(size_t(N) * d, 5);

  Vec out(x.size()), rstd(N);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, eps);
  for (int t = 0; t < N; ++t) {
    double ms = 0;
    for (int i = 0; i < d; ++i) ms += x[size_t(t) * d + i] * x[size_t(t) * d + i];
    const double rs = 1.0 / std::sqrt(ms / d + eps);
    CHECK(rstd[t] == Approx(rs).epsilon(1e-14));
    for (int i = 0; i < d; ++i) {
      CHECK(out[size_t(t) * d + i] == Approx(x[size_t(t) * d + i] * rs * w[i]).epsilon(1e-14));
    }
  }

  Vec dx(x.size(), 0.0), dw(d, 0.0);
  cpu::rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, d);
  auto loss = [&] {
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, eps);
    return weighted_sum(out, R);
  };
  check_gradient(loss, x, dx, "dx");
  check_gradient(loss, w, dw, "dw");

  // "+=" on both outputs.
  Vec dx2(x.size(), 1.0), dw2(d, -2.0);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, eps);
  cpu::rmsnorm_backward(dx2.data(), dw2.data(), R.data(), x.data(), w.data(), rstd.data(), N, d);
  for (size_t i = 0; i < dx.size(); ++i) CHECK(dx2[i] == Approx(dx[i] + 1.0).margin(1e-13));
  for (int i = 0; i < d; ++i) CHECK(dw2[i] == Approx(dw[i] - 2.0).margin(1e-13));
}

TEST_CASE("swiglu forward matches silu(g)*v and backward matches finite differences", "[layers]") {
  const int N = 3, F = 11;
  Vec h13 = random_vector(size_t(N) * 2 * F, 6, 4.0);
  const Vec R = random_vector(size_t(N) * F, 7);
  Vec a(size_t(N) * F);
  cpu::swiglu_forward(a.data(), h13.data(), N, F);
  for (int t = 0; t < N; ++t) {
    for (int i = 0; i < F; ++i) {
      const double g = h13[size_t(t) * 2 * F + i], v = h13[size_t(t) * 2 * F + F + i];
      CHECK(a[size_t(t) * F + i] == Approx(g / (1 + std::exp(-g)) * v).epsilon(1e-14));
    }
  }
  Vec dh13(h13.size());
  cpu::swiglu_backward(dh13.data(), R.data(), h13.data(), N, F);
  check_gradient(
      [&] {
        cpu::swiglu_forward(a.data(), h13.data(), N, F);
        return weighted_sum(a, R);
      },
      h13, dh13, "dh13");

  // Extreme gates stay finite.
  std::vector<float> hf = {-200.f, 200.f, 0.f, 3.f, 5.f, 0.f};
  std::vector<float> af(3), daf = {1.f, 1.f, 1.f}, dhf(6);
  cpu::swiglu_forward(af.data(), hf.data(), 1, 3);
  cpu::swiglu_backward(dhf.data(), daf.data(), hf.data(), 1, 3);
  CHECK(all_finite(af));
  CHECK(all_finite(dhf));
  CHECK(af[1] == Approx(200.f * 5.f));
}

TEST_CASE("scale_rows and row_dot: values, aliasing and finite differences", "[layers]") {
  const int rows = 4, cols = 13;
  Vec in = random_vector(size_t(rows) * cols, 8);
  Vec scale = random_vector(rows, 9, 2.0);
  const Vec R = random_vector(size_t(rows) * cols, 10);
  Vec out(in.size());

  SECTION("scale_rows") {
    cpu::scale_rows(out.data(), in.data(), scale.data(), rows, cols);
    for (int r = 0; r < rows; ++r) {
      for (int i = 0; i < cols; ++i) {
        CHECK(out[size_t(r) * cols + i] == scale[r] * in[size_t(r) * cols + i]);
      }
    }
    Vec inplace = in;
    cpu::scale_rows(inplace.data(), inplace.data(), scale.data(), rows, cols);
    CHECK(inplace == out);

    // Backward: d in = scale_rows(R, scale), d scale = row_dot(R, in).
    Vec din(in.size()), dscale(rows);
    cpu::scale_rows(din.data(), R.data(), scale.data(), rows, cols);
    cpu::row_dot(dscale.data(), R.data(), in.data(), rows, cols);
    auto loss = [&] {
      cpu::scale_rows(out.data(), in.data(), scale.data(), rows, cols);
      return weighted_sum(out, R);
    };
    check_gradient(loss, in, din, "d in");
    check_gradient(loss, scale, dscale, "d scale");
  }

  SECTION("row_dot") {
    Vec b = random_vector(in.size(), 11);
    const Vec r = random_vector(rows, 12);
    Vec dots(rows);
    cpu::row_dot(dots.data(), in.data(), b.data(), rows, cols);
    for (int q = 0; q < rows; ++q) {
      double s = 0;
      for (int i = 0; i < cols; ++i) s += in[size_t(q) * cols + i] * b[size_t(q) * cols + i];
      CHECK(dots[q] == Approx(s).epsilon(1e-14));
    }
    // Backward: d a = scale_rows(b, dout), d b = scale_rows(a, dout).
    Vec da(in.size()), db(in.size());
    cpu::scale_rows(da.data(), b.data(), r.data(), rows, cols);
    cpu::scale_rows(db.data(), in.data(), r.data(), rows, cols);
    auto loss = [&] {
      cpu::row_dot(dots.data(), in.data(), b.data(), rows, cols);
      return weighted_sum(dots, r);
    };
    check_gradient(loss, in, da, "d a");
    check_gradient(loss, b, db, "d b");
  }
}


// ------------------------------------------------------------------------------------------------
// Each check runs for float and double: the sums run in double, and a float result could hide an
// order change in them.
template <typename T>
void check_embedding_threads() {
  const int N = 2048, d = 64, V = 100;
  std::vector<int32_t> tokens(N);
  for (int t = 0; t < N; ++t) tokens[t] = int32_t((t * 7919u + (t >> 3)) % V);  // many repeats
  const Vec dout64 = random_vector(size_t(N) * d, 16), init64 = random_vector(size_t(V) * d, 17);
  const std::vector<T> dout(dout64.begin(), dout64.end()), init(init64.begin(), init64.end());
  auto res = with_thread_counts([&] {
    std::vector<T> dE = init;
    cpu::embedding_backward(dE.data(), dout.data(), tokens.data(), N, d);
    return dE;
  });
  CHECK(bitwise_equal(res[0], res[1]));
  CHECK(bitwise_equal(res[0], res[2]));
}

template <typename T>
void check_rmsnorm_threads() {
  const int N = 777, d = 200;  // partial row chunk and partial column block
  const Vec x64 = random_vector(size_t(N) * d, 18, 3.0), w64 = random_vector(d, 19);
  const Vec dout64 = random_vector(size_t(N) * d, 20);
  const std::vector<T> x(x64.begin(), x64.end()), w(w64.begin(), w64.end());
  const std::vector<T> dout(dout64.begin(), dout64.end());
  std::vector<T> out(x.size()), rstd(N);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, 1e-5);
  auto res = with_thread_counts([&] {
    std::vector<T> dx(x.size(), T(0.5)), dw(d, T(0.25));
    cpu::rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, d);
    dx.insert(dx.end(), dw.begin(), dw.end());
    return dx;
  });
  CHECK(bitwise_equal(res[0], res[1]));
  CHECK(bitwise_equal(res[0], res[2]));
}

TEST_CASE("layer ops are bitwise independent of the thread count", "[layers]") {
  SECTION("embedding_backward with repeated tokens") {
    check_embedding_threads<float>();
    check_embedding_threads<double>();
  }
  SECTION("rmsnorm_backward") {
    check_rmsnorm_threads<float>();
    check_rmsnorm_threads<double>();
  }
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("'=' outputs of the layer ops are fully overwritten", "[layers]") {
  const int N = 37, d = 29, F = 21, V = 45;
  const std::vector<float> x = to_float(random_vector(size_t(N) * d, 22));
  const std::vector<float> w = to_float(random_vector(d, 23));
  std::vector<int32_t> tokens(N);
  for (int t = 0; t < N; ++t) tokens[t] = (t * 5) % V;
  const std::vector<float> E = to_float(random_vector(size_t(V) * d, 24));

  auto out = nan_vector<float>(size_t(N) * d);
  cpu::embedding_forward(out.data(), tokens.data(), E.data(), N, d);
  CHECK(all_finite(out));

  out = nan_vector<float>(size_t(N) * d);
  auto rstd = nan_vector<float>(N);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, 1e-5);
  CHECK(all_finite(out));
  CHECK(all_finite(rstd));

  const std::vector<float> h13 = to_float(random_vector(size_t(N) * 2 * F, 25));
  const std::vector<float> da = to_float(random_vector(size_t(N) * F, 26));
  auto a = nan_vector<float>(size_t(N) * F);
  cpu::swiglu_forward(a.data(), h13.data(), N, F);
  CHECK(all_finite(a));
  auto dh13 = nan_vector<float>(size_t(N) * 2 * F);
  cpu::swiglu_backward(dh13.data(), da.data(), h13.data(), N, F);
  CHECK(all_finite(dh13));

  out = nan_vector<float>(size_t(N) * d);
  cpu::scale_rows(out.data(), x.data(), rstd.data(), N, d);
  CHECK(all_finite(out));
  auto dots = nan_vector<float>(N);
  cpu::row_dot(dots.data(), x.data(), x.data(), N, d);
  CHECK(all_finite(dots));
}

// ------------------------------------------------------------------------------------------------
// The CPU backend's buffers (kernels/cpu/memory.h): zero_fill clears every value of a poisoned
// buffer, below and above the parallel threshold and across chunk edges, for any thread count;
// HostArray leaves values alone when sized (which is why CpuBackend::alloc zeroes).
TEST_CASE("zero_fill clears poisoned buffers of any size and thread count", "[layers]") {
  const size_t chunk = (size_t(1) << 20) / sizeof(float);
  const size_t big = cpu::kParallelZeroBytes / sizeof(float);
  for (size_t n : {size_t(0), size_t(1), size_t(1000), big - 1, big, big + 1, 3 * chunk + 17}) {
    const auto sums = with_thread_counts([&] {
      cpu::HostArray<float> a(n + 2);
      std::fill(a.begin(), a.end(), std::numeric_limits<float>::quiet_NaN());
      cpu::zero_fill(a.data() + 1, n);  // the guards a[0] and a[n + 1] stay NaN
      size_t zeros = 0;
      for (size_t i = 1; i <= n; ++i) zeros += a[i] == 0.0f && !std::signbit(a[i]);
      CHECK(std::isnan(a[0]));
      CHECK(std::isnan(a[n + 1]));
      return zeros;
    });
    for (size_t zeros : sums) CHECK(zeros == n);
  }
  cpu::HostArray<double> d(3 * chunk + 5, 2.5);  // the (n, value) constructor still fills
  CHECK(d.front() == 2.5);
  CHECK(d.back() == 2.5);
  cpu::zero_fill(d.data(), d.size());
  CHECK(std::all_of(d.begin(), d.end(), [](double v) { return v == 0.0; }));
}
