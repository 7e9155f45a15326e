// CUDA elementwise / row ops (kernels/cuda/elementwise.cuh) against the CPU oracle
// (kernels/cpu/layers.h, T = float). Without a device (or without nvcc) the tests skip.
//
// Each "=" output is poisoned with NaN before the call, so an element the kernel forgets fails.
// Tolerance: |gpu − cpu| <= 1e-5·max(|cpu|, scale) + 1e-6, where scale is |cpu| for outputs without
// cancellation and, for sums across many terms (row_dot, rmsnorm dw, embedding dE, rmsnorm dx), the
// same sum over absolute values (fp32 vs double accumulation differs by rounding relative to that).
// embedding_backward and rmsnorm_backward run twice and must give bitwise equal results.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tests/catch.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cpu/layers.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/elementwise.cuh"
#include "tests/fd.h"

#ifdef UNIPOOL_CATCH3
#define UNIPOOL_SKIP_WITHOUT_GPU()                     \
  if (unipool::cuda::device_count() == 0) {            \
    SKIP("no CUDA device present: GPU tests skipped"); \
  }
#else
#define UNIPOOL_SKIP_WITHOUT_GPU()                                       \
  if (unipool::cuda::device_count() == 0) {                              \
    WARN("no CUDA device present: GPU tests skipped");                   \
    std::printf("SKIPPED: no CUDA device present: GPU tests skipped\n"); \
    return;                                                              \
  }
#endif

namespace {

using unipool::cuda::DeviceBuffer;
using FVec = std::vector<float>;

constexpr int kRowCounts[] = {37, 301};  // not multiples of the warp/block/chunk sizes
constexpr int kWidths[] = {768, 100};

FVec random_floats(size_t n, uint32_t seed, double scale = 1.0) {
  const std::vector<double> v = unipool::test::random_vector(n, seed, scale);
  return FVec(v.begin(), v.end());
}

FVec nan_floats(size_t n) {
  return FVec(n, std::numeric_limits<float>::quiet_NaN());
}

FVec abs_of(const FVec& v) {
  FVec r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = std::fabs(v[i]);
  return r;
}

// Tokens in [0, V): about a third drawn from {0..9} (many repeats), the rest uniform; includes V-1.
std::vector<int32_t> random_tokens(int N, int V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> all(0, V - 1), few(0, 9);
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (int i = 0; i < N; ++i) t[size_t(i)] = i % 3 == 0 ? few(gen) : all(gen);
  if (N > 0) t[size_t(N / 2)] = V - 1;
  return t;
}

// |got − want| <= 1e-5·max(|want|, scale) + 1e-6 for every element (scale: optional, per element).
void expect_close(const FVec& got, const FVec& want, const char* what,
                  const FVec* scale = nullptr) {
  REQUIRE(got.size() == want.size());
  int failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double s = std::max(std::fabs(double(want[i])), scale ? double((*scale)[i]) : 0.0);
    const double err = std::fabs(double(got[i]) - double(want[i]));
    if (!(err <= 1e-5 * s + 1e-6)) {  // also catches NaN
      if (failures < 5) {
        UNSCOPED_INFO(what << "[" << i << "]: gpu " << got[i] << " cpu " << want[i]);
      }
      ++failures;
    }
  }
  CHECK(failures == 0);
}

bool bitwise_equal(const FVec& a, const FVec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { CUDA_CHECK(cudaStreamCreate(&s)); }
  ~Stream() { cudaStreamDestroy(s); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

}  // namespace

TEST_CASE("cuda embedding forward/backward match the CPU op, backward bitwise reproducible",
          "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  Stream stream;
  const int V = 1000;
  for (int N : {1000, 37}) {
    for (int d : kWidths) {
      INFO("N " << N << " d " << d);
      const std::vector<int32_t> tokens = random_tokens(N, V, 11u + uint32_t(N + d));
      const FVec E = random_floats(size_t(V) * d, 1);
      DeviceBuffer<int32_t> d_tokens(tokens);
      DeviceBuffer<float> d_E(E);

      // forward: a copy, so exact.
      DeviceBuffer<float> d_out(nan_floats(size_t(N) * d));
      unipool::cuda::embedding_forward(d_out.data(), d_tokens.data(), d_E.data(), N, d, stream.s);
      FVec out_ref(size_t(N) * d);
      unipool::cpu::embedding_forward(out_ref.data(), tokens.data(), E.data(), N, d);
      const FVec out = d_out.to_host();
      CHECK(bitwise_equal(out, out_ref));

      // backward (+=): dE starts from random values.
      const FVec dE0 = random_floats(size_t(V) * d, 2, 0.5);
      const FVec dout = random_floats(size_t(N) * d, 3);
      DeviceBuffer<float> d_dout(dout);
      DeviceBuffer<float> d_dE(dE0);
      unipool::cuda::embedding_backward(d_dE.data(), d_dout.data(), d_tokens.data(), N, d,
                                        stream.s);
      const FVec dE_first = d_dE.to_host();
      d_dE.copy_from_host(dE0);
      unipool::cuda::embedding_backward(d_dE.data(), d_dout.data(), d_tokens.data(), N, d,
                                        stream.s);
      const FVec dE_second = d_dE.to_host();
      CHECK(bitwise_equal(dE_first, dE_second));

      FVec dE_ref = dE0;
      unipool::cpu::embedding_backward(dE_ref.data(), dout.data(), tokens.data(), N, d);
      FVec dE_scale = abs_of(dE0);
      const FVec dout_abs = abs_of(dout);
      unipool::cpu::embedding_backward(dE_scale.data(), dout_abs.data(), tokens.data(), N, d);
      expect_close(dE_first, dE_ref, "dE", &dE_scale);
    }
  }
}

TEST_CASE("cuda rmsnorm forward matches the CPU op (also in place)", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  Stream stream;
  const double eps = 1e-5;
  for (int N : kRowCounts) {
    for (int d : kWidths) {
      INFO("N " << N << " d " << d);
      const FVec x = random_floats(size_t(N) * d, 21u + uint32_t(N), 2.0);
      const FVec w = random_floats(size_t(d), 22, 1.5);
      FVec out_ref(x.size()), rstd_ref(static_cast<size_t>(N));
      unipool::cpu::rmsnorm_forward(out_ref.data(), rstd_ref.data(), x.data(), w.data(), N, d, eps);

      DeviceBuffer<float> d_x(x), d_w(w);
      DeviceBuffer<float> d_out(nan_floats(x.size())), d_rstd(nan_floats(size_t(N)));
      unipool::cuda::rmsnorm_forward(d_out.data(), d_rstd.data(), d_x.data(), d_w.data(), N, d, eps,
                                     stream.s);
      expect_close(d_out.to_host(), out_ref, "out");
      expect_close(d_rstd.to_host(), rstd_ref, "rstd");

      // out aliases x
      d_rstd.copy_from_host(nan_floats(size_t(N)));
      unipool::cuda::rmsnorm_forward(d_x.data(), d_rstd.data(), d_x.data(), d_w.data(), N, d, eps,
                                     stream.s);
      expect_close(d_x.to_host(), out_ref, "out (in place)");
      expect_close(d_rstd.to_host(), rstd_ref, "rstd (in place)");
    }
  }
}

TEST_CASE("cuda rmsnorm backward matches the CPU op and is bitwise reproducible", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  Stream stream;
  const double eps = 1e-5;
  for (int N : kRowCounts) {
    for (int d : kWidths) {
      INFO("N " << N << " d " << d);
      const FVec x = random_floats(size_t(N) * d, 31u + uint32_t(N), 2.0);
      const FVec w = random_floats(size_t(d), 32, 1.5);
      const FVec dout = random_floats(size_t(N) * d, 33);
      const FVec dx0 = random_floats(size_t(N) * d, 34, 0.5);
      const FVec dw0 = random_floats(size_t(d), 35, 0.5);
      FVec out(x.size()), rstd(static_cast<size_t>(N));
      unipool::cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, eps);

      FVec dx_ref = dx0, dw_ref = dw0;
      unipool::cpu::rmsnorm_backward(dx_ref.data(), dw_ref.data(), dout.data(), x.data(), w.data(),
                                     rstd.data(), N, d);
      // Scales: dx = dx0 + rstd·g·w − x·rstd³·S/d, each term in absolute value; dw over |terms|.
      FVec dx_scale(x.size());
      for (int t = 0; t < N; ++t) {
        const size_t r = size_t(t) * size_t(d);
        double sabs = 0;
        for (int i = 0; i < d; ++i) sabs += std::fabs(double(dout[r + i]) * w[i] * x[r + i]);
        const double rs = rstd[size_t(t)];
        for (int i = 0; i < d; ++i) {
          dx_scale[r + i] =
              float(std::fabs(dx0[r + i]) + rs * std::fabs(double(dout[r + i]) * w[i]) +
                    std::fabs(x[r + i]) * rs * rs * rs * sabs / d);
        }
      }
      FVec dw_scale = abs_of(dw0), dx_unused(x.size(), 0.f);
      const FVec dout_abs = abs_of(dout), x_abs = abs_of(x);
      unipool::cpu::rmsnorm_backward(dx_unused.data(), dw_scale.data(), dout_abs.data(),
                                     x_abs.data(), w.data(), rstd.data(), N, d);

      DeviceBuffer<float> d_x(x), d_w(w), d_dout(dout), d_rstd(rstd);
      DeviceBuffer<float> d_dx(dx0), d_dw(dw0);
      const int64_t nscratch = unipool::cuda::rmsnorm_backward_scratch_floats(N, d);
      CHECK(nscratch == int64_t((N + 127) / 128) * d);
      DeviceBuffer<float> d_scratch(nan_floats(size_t(nscratch)));  // contents must not matter
      FVec dx_run[2], dw_run[2];
      for (int run = 0; run < 2; ++run) {
        d_dx.copy_from_host(dx0);
        d_dw.copy_from_host(dw0);
        unipool::cuda::rmsnorm_backward(d_dx.data(), d_dw.data(), d_dout.data(), d_x.data(),
                                        d_w.data(), d_rstd.data(), N, d, d_scratch.data(),
                                        stream.s);
        dx_run[run] = d_dx.to_host();
        dw_run[run] = d_dw.to_host();
      }
      CHECK(bitwise_equal(dx_run[0], dx_run[1]));
      CHECK(bitwise_equal(dw_run[0], dw_run[1]));
      expect_close(dx_run[0], dx_ref, "dx", &dx_scale);
      expect_close(dw_run[0], dw_ref, "dw", &dw_scale);
    }
  }
}

TEST_CASE("cuda swiglu forward/backward match the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  Stream stream;
  for (int N : kRowCounts) {
    for (int F : kWidths) {
      INFO("N " << N << " F " << F);
      const FVec h13 = random_floats(size_t(N) * 2 * F, 41u + uint32_t(N), 3.0);
      const FVec da = random_floats(size_t(N) * F, 42);
      FVec a_ref(size_t(N) * F), dh13_ref(h13.size());
      unipool::cpu::swiglu_forward(a_ref.data(), h13.data(), N, F);
      unipool::cpu::swiglu_backward(dh13_ref.data(), da.data(), h13.data(), N, F);

      DeviceBuffer<float> d_h13(h13), d_da(da);
      DeviceBuffer<float> d_a(nan_floats(a_ref.size())), d_dh13(nan_floats(h13.size()));
      unipool::cuda::swiglu_forward(d_a.data(), d_h13.data(), N, F, stream.s);
      unipool::cuda::swiglu_backward(d_dh13.data(), d_da.data(), d_h13.data(), N, F, stream.s);
      expect_close(d_a.to_host(), a_ref, "a");
      expect_close(d_dh13.to_host(), dh13_ref, "dh13");
    }
  }
}

TEST_CASE("cuda scale_rows and row_dot match the CPU ops", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  Stream stream;
  for (int rows : kRowCounts) {
    for (int cols : kWidths) {
      INFO("rows " << rows << " cols " << cols);
      const FVec a = random_floats(size_t(rows) * cols, 51u + uint32_t(rows));
      const FVec b = random_floats(size_t(rows) * cols, 52);
      const FVec s = random_floats(size_t(rows), 53, 2.0);
      FVec scaled_ref(a.size()), dot_ref(static_cast<size_t>(rows)),
          dot_scale(static_cast<size_t>(rows));
      unipool::cpu::scale_rows(scaled_ref.data(), a.data(), s.data(), rows, cols);
      unipool::cpu::row_dot(dot_ref.data(), a.data(), b.data(), rows, cols);
      const FVec a_abs = abs_of(a), b_abs = abs_of(b);
      unipool::cpu::row_dot(dot_scale.data(), a_abs.data(), b_abs.data(), rows, cols);

      DeviceBuffer<float> d_a(a), d_b(b), d_s(s);
      DeviceBuffer<float> d_scaled(nan_floats(a.size())), d_dot(nan_floats(size_t(rows)));
      unipool::cuda::scale_rows(d_scaled.data(), d_a.data(), d_s.data(), rows, cols, stream.s);
      unipool::cuda::row_dot(d_dot.data(), d_a.data(), d_b.data(), rows, cols, stream.s);
      expect_close(d_scaled.to_host(), scaled_ref, "scale_rows");
      expect_close(d_dot.to_host(), dot_ref, "row_dot", &dot_scale);

      // in place: out aliases in
      unipool::cuda::scale_rows(d_a.data(), d_a.data(), d_s.data(), rows, cols, stream.s);
      expect_close(d_a.to_host(), scaled_ref, "scale_rows (in place)");
    }
  }
}

TEST_CASE("cuda CUDA_CHECK throws unipool::Error naming the call", "[cuda]") {
  // Needs no device: a failing status is turned into an exception with file, line and message.
  try {
    CUDA_CHECK(cudaErrorInvalidValue);
    FAIL("CUDA_CHECK did not throw");
  } catch (const unipool::Error& e) {
    CHECK_THAT(std::string(e.what()), HasSubstring("test_cuda_elementwise.cpp"));
    CHECK_THAT(std::string(e.what()), HasSubstring(cudaGetErrorString(cudaErrorInvalidValue)));
  }
}

#else
TEST_CASE("cuda elementwise ops: not built (no nvcc at configure time)", "[cuda]") {
  WARN("the CUDA backend was not compiled (nvcc not found): GPU elementwise tests skipped");
}
#endif
